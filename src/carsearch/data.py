"""Images in, manifest out: the procedural demo set, folder sources, the manifest and rejects,
near-duplicate detection and deterministic splits."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError

from .captions import VIEWS
from .io import write_bytes

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MIN_SIDE = 16  # smaller images cannot be captioned or embedded meaningfully

COLOR_RGB = {
    "red": (200, 30, 35), "blue": (30, 70, 190), "green": (30, 140, 60), "yellow": (235, 200, 30),
    "white": (235, 235, 235), "black": (25, 25, 28), "silver": (175, 180, 188), "grey": (110, 112, 118),
    "orange": (235, 120, 25), "purple": (110, 40, 150), "brown": (110, 70, 40),
}


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Rejected:
    path: str
    reason: str


def check_image(data: bytes, name: str) -> tuple[int, int, str]:
    """Decode fully; return (width, height, format) or raise ValueError with a one-line reason."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
            im.load()  # catches truncation
            w, h = im.size
    except UnidentifiedImageError:
        raise ValueError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"corrupt or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if min(w, h) < MIN_SIDE:
        raise ValueError(f"image too small ({w}x{h}, need >= {MIN_SIDE}px a side)")
    return w, h, fmt


def store_image(data: bytes, images_dir: Path, root: Path, source: str, labels: dict | None, name: str) -> dict:
    """Validate, write `images_dir/<id>.<ext>` atomically, and return the manifest row."""
    w, h, fmt = check_image(data, name)
    ext = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}.get(fmt)
    if ext is None:  # normalise exotic formats (bmp, gif, tiff...) to PNG so every consumer reads them
        with Image.open(io.BytesIO(data)) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
        data, ext = buf.getvalue(), ".png"
    iid = content_id(data)
    out = images_dir / f"{iid}{ext}"
    if not out.exists():
        write_bytes(out, data)
    return {
        "id": iid, "path": out.relative_to(root).as_posix(), "width": w, "height": h, "bytes": len(data),
        "source": source, "origin": name, "labels": labels or None,
    }


def ingest_items(items: Iterable[tuple[str, bytes | None, dict | None, str | None]], images_dir: Path, root: Path, source: str):
    """items: (name, data or None, labels, error or None). Returns (manifest rows, rejects).

    Exact duplicates (same content hash) are kept once; the others are rejected naming the kept one."""
    rows, rejects, seen = [], [], {}
    for name, data, labels, err in items:
        if err is not None or data is None:
            rejects.append(Rejected(name, err or "unreadable"))
            continue
        try:
            row = store_image(data, images_dir, root, source, labels, name)
        except ValueError as e:
            rejects.append(Rejected(name, str(e)))
            continue
        if row["id"] in seen:
            rejects.append(Rejected(name, f"exact duplicate of {seen[row['id']]}"))
            continue
        seen[row["id"]] = name
        rows.append(row)
    return rows, rejects


# ----------------------------------------------------------------------- folder source
def read_labels_csv(path: Path) -> dict[str, dict]:
    """labels.csv: a `file` (or `path`/`filename`) column relative to the folder, other columns are labels."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        key = next((k for k in ("file", "path", "filename", "image") if k in (reader.fieldnames or [])), None)
        if key is None:
            raise ValueError(f"{path}: needs a 'file' column naming each image (has {reader.fieldnames})")
        for row in reader:
            name = row.pop(key)
            out[Path(name).as_posix()] = {k: v.strip() for k, v in row.items() if k and v and v.strip()}
    return out


def iter_folder(folder: Path, subfolder_key: str | None = "color", labels_csv: str = "labels.csv") -> Iterator[tuple[str, bytes | None, dict | None, str | None]]:
    """Every file under `folder` (sorted): image files with labels from labels.csv and/or the
    sub-folder name (`red/img.jpg` -> {subfolder_key: "red"}); other files are yielded as rejects."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.folder.path: folder not found: {folder}")
    csv_path = folder / labels_csv
    table = read_labels_csv(csv_path) if csv_path.is_file() else {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p == csv_path or p.name.startswith("."):
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() not in IMAGE_EXTS and p.name.lower() in {"readme.md", "readme", "readme.txt"}:
            continue
        try:
            data = p.read_bytes()
        except OSError as e:
            yield str(p), None, None, f"unreadable ({e.strerror})"
            continue
        yield str(p), data, _labels_for(rel, subfolder_key, table), None


def _labels_for(rel: str, subfolder_key: str | None, table: dict[str, dict]) -> dict | None:
    labels: dict = {}
    parts = rel.split("/")
    if subfolder_key and len(parts) > 1:
        labels[subfolder_key] = parts[-2].replace("_", " ").lower()
    labels.update(table.get(rel, {}))
    return labels or None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise ValueError(f"data.s3.uri: expected s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.rstrip("/") + "/" if prefix else ""


def iter_s3(uri: str, subfolder_key: str | None = "color", labels_csv: str = "labels.csv", client=None):
    """Every object under an S3 prefix (sorted by key), labelled like a folder source.
    Credentials and endpoint come from the standard boto3 chain (`AWS_ENDPOINT_URL` too)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    s3 = client or boto3.client("s3")
    try:
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except (ClientError, BotoCoreError) as e:
        raise ValueError(f"data.s3.uri {uri}: cannot list objects ({str(e).splitlines()[0]})") from None
    table = {}
    csv_key = prefix + labels_csv
    if csv_key in keys:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".csv") as f:
            f.write(s3.get_object(Bucket=bucket, Key=csv_key)["Body"].read())
            f.flush()
            table = read_labels_csv(Path(f.name))
    for key in sorted(keys):
        rel = key[len(prefix):]
        if key == csv_key or rel.rsplit("/", 1)[-1].startswith("."):
            continue
        name = f"s3://{bucket}/{key}"
        try:
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as e:
            yield name, None, None, f"unreadable ({str(e).splitlines()[0]})"
            continue
        yield name, data, _labels_for(rel, subfolder_key, table), None


# ------------------------------------------------------------------ procedural demo set
DEMO_MODELS = {  # model_id: (body_type, make, model, proportions)
    "demo-sedan-a": ("sedan", "Demo", "Sedan A", dict(length=1.0, height=0.32, cabin=(0.25, 0.75), roof=0.2)),
    "demo-sedan-b": ("sedan", "Demo", "Sedan B", dict(length=0.95, height=0.30, cabin=(0.3, 0.72), roof=0.18)),
    "demo-suv": ("suv", "Demo", "SUV", dict(length=0.95, height=0.45, cabin=(0.2, 0.92), roof=0.22)),
    "demo-pickup": ("pickup", "Demo", "Pickup", dict(length=1.05, height=0.38, cabin=(0.15, 0.5), roof=0.22)),
    "demo-hatch": ("hatchback", "Demo", "Hatch", dict(length=0.8, height=0.33, cabin=(0.2, 0.95), roof=0.2)),
    "demo-van": ("van", "Demo", "Van", dict(length=1.0, height=0.6, cabin=(0.05, 0.98), roof=0.1)),
}


def _shade(rgb, f):
    return tuple(max(0, min(255, int(c * f))) for c in rgb)


def draw_demo_car(model_id: str, color: str, view: str, size: int, rng: random.Random) -> Image.Image:
    body_type, _, _, pr = DEMO_MODELS[model_id]
    S = size * 4  # supersample
    sky = _shade((150, 185, 220), rng.uniform(0.6, 1.1))
    img = Image.new("RGB", (S, S), sky)
    d = ImageDraw.Draw(img)
    horizon = int(S * rng.uniform(0.35, 0.5))
    d.rectangle([0, horizon, S, S], fill=_shade((95, 95, 100), rng.uniform(0.7, 1.2)))
    for k in range(-2, 3):  # lane markings converging to a vanishing point
        x0 = S / 2 + k * S * 0.45
        d.line([(S / 2 + k * S * 0.05, horizon), (x0, S)], fill=(230, 230, 220), width=max(2, S // 120))
    paint = _shade(COLOR_RGB[color], rng.uniform(0.85, 1.1))
    dark, glass = (20, 20, 22), (60, 80, 100)
    cx, base = S * rng.uniform(0.42, 0.58), S * rng.uniform(0.78, 0.88)
    scale = S * rng.uniform(0.6, 0.8)
    L, H = pr["length"] * scale, pr["height"] * scale
    r = H * 0.35

    def side(x0, x1, flip=False):
        length = x1 - x0
        c0, c1 = pr["cabin"]
        if flip:
            c0, c1 = 1 - c1, 1 - c0
        d.rounded_rectangle([x0, base - H - r * 0.3, x1, base - r * 0.3], radius=int(H * 0.2), fill=paint)
        rt = base - H - r * 0.3
        roof_h = H * (0.9 if body_type in ("van", "suv") else 0.75)
        cab = [(x0 + c0 * length, rt), (x0 + (c0 + pr["roof"]) * length, rt - roof_h), (x0 + (c1 - pr["roof"] * 0.6) * length, rt - roof_h), (x0 + c1 * length, rt)]
        d.polygon(cab, fill=paint)
        inset = [(cab[0][0] + length * 0.04, rt), (cab[1][0] + length * 0.02, rt - roof_h * 0.8), (cab[2][0] - length * 0.02, rt - roof_h * 0.8), (cab[3][0] - length * 0.04, rt)]
        d.polygon(inset, fill=glass)
        for wx in (x0 + 0.2 * length, x0 + 0.8 * length):
            d.ellipse([wx - r, base - 2 * r, wx + r, base], fill=dark)
            d.ellipse([wx - r * 0.5, base - 1.5 * r, wx + r * 0.5, base - 0.5 * r], fill=(150, 150, 155))

    def face(x0, x1, rear: bool):
        w = x1 - x0
        top = base - H - r * 0.3
        d.rounded_rectangle([x0, top, x1, base - r * 0.2], radius=int(H * 0.15), fill=paint)
        roof_h = H * (0.9 if body_type in ("van", "suv") else 0.7)
        d.polygon([(x0 + w * 0.12, top), (x0 + w * 0.22, top - roof_h), (x1 - w * 0.22, top - roof_h), (x1 - w * 0.12, top)], fill=paint)
        d.polygon([(x0 + w * 0.17, top), (x0 + w * 0.25, top - roof_h * 0.85), (x1 - w * 0.25, top - roof_h * 0.85), (x1 - w * 0.17, top)], fill=glass)
        lamp = (200, 20, 20) if rear else (250, 245, 200)
        ly = top + H * 0.25
        d.ellipse([x0 + w * 0.05, ly, x0 + w * 0.22, ly + H * 0.22], fill=lamp)
        d.ellipse([x1 - w * 0.22, ly, x1 - w * 0.05, ly + H * 0.22], fill=lamp)
        if not rear:
            d.rectangle([x0 + w * 0.3, ly, x1 - w * 0.3, ly + H * 0.25], fill=(30, 30, 35))
        else:
            d.rectangle([x0 + w * 0.35, ly + H * 0.35, x1 - w * 0.35, ly + H * 0.5], fill=(230, 230, 210))
        for wx in (x0 + w * 0.02, x1 - w * 0.2):
            d.rectangle([wx, base - r * 0.8, wx + w * 0.18, base], fill=dark)

    if view == "side":
        flip = rng.random() < 0.5
        side(cx - L / 2, cx + L / 2, flip)
    elif view in ("front", "rear"):
        w = L * 0.62
        face(cx - w / 2, cx + w / 2, rear=view == "rear")
    else:  # three-quarter: a foreshortened side plus the front face
        x0 = cx - L * 0.45
        side(x0, x0 + L * 0.6)
        face(x0 + L * 0.55, x0 + L * 0.95, rear=False)
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    import numpy as np

    arr = np.asarray(img, dtype=np.float32)
    arr += np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 8), arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def demo_items(n_images: int, size: int, seed: int, colors: list[str] | None = None, views: list[str] | None = None):
    """A balanced, deterministic set of (name, jpeg bytes, labels, None) cycling models x colours x views."""
    colors = list(colors or ("red", "blue", "green", "yellow", "white", "black", "silver", "orange"))
    views = list(views or VIEWS)
    for bad in [c for c in colors if c not in COLOR_RGB] + [v for v in views if v not in VIEWS]:
        raise ValueError(f"demo set: unknown colour/view {bad!r}")
    combos = [(m, c, v) for m in DEMO_MODELS for c in colors for v in views]
    for i in range(n_images):
        m, c, v = combos[i % len(combos)]
        rng = random.Random(f"{seed}-{i}")
        img = draw_demo_car(m, c, v, size, rng)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(80, 95))
        body_type, make, model, _ = DEMO_MODELS[m]
        labels = {"model_id": m, "make": make, "model": model, "body_type": body_type, "color": c, "view": v, "scene": "day"}
        yield f"demo/{i:05d}.jpg", buf.getvalue(), labels, None


# ------------------------------------------------------------------------------ splits
def split_of(key: str, seed: int, fractions: dict[str, float]) -> str:
    """Deterministic split by hashing (seed, key); `fractions` ordered train/val/test summing to 1."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12
    acc = 0.0
    for name, frac in fractions.items():
        acc += frac
        if u < acc:
            return name
    return list(fractions)[-1]


def perceptual_groups(paths: dict[str, Path], max_distance: int) -> dict[str, str]:
    """Map each id to the id of its group's first member, grouping images whose pHash differ by
    <= max_distance bits (max_distance < 0 disables)."""
    import imagehash

    if max_distance < 0:
        return {i: i for i in paths}
    hashes = {}
    for iid, p in paths.items():
        with Image.open(p) as im:
            hashes[iid] = imagehash.phash(im)
    reps: list[tuple[str, object]] = []
    out = {}
    for iid, h in hashes.items():
        for rid, rh in reps:
            if h - rh <= max_distance:
                out[iid] = rid
                break
        else:
            reps.append((iid, h))
            out[iid] = iid
    return out


def contact_sheet(items: list[tuple[Path, dict]], out_png: Path, n: int = 48, cols: int = 8, thumb: int = 128) -> None:
    """A PNG grid of sample images with a short label line under each."""
    from .io import atomic_path

    items = items[:n]
    rows = max(1, math.ceil(len(items) / cols))
    cell_h = thumb + 14
    sheet = Image.new("RGB", (cols * thumb, rows * cell_h), "white")
    d = ImageDraw.Draw(sheet)
    for k, (path, labels) in enumerate(items):
        with Image.open(path) as im:
            t = im.convert("RGB")
            t.thumbnail((thumb, thumb))
        x, y = (k % cols) * thumb, (k // cols) * cell_h
        sheet.paste(t, (x, y))
        lab = labels or {}
        text = " ".join(str(lab.get(key, "")) for key in ("color", "body_type", "view"))[:24]
        d.text((x + 2, y + thumb + 1), text, fill=(0, 0, 0))
    with atomic_path(out_png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
