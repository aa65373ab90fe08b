"""Images in, manifest out: the procedural demo set, folder sources, the manifest and rejects,
near-duplicate detection and deterministic splits."""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image, ImageDraw, ImageFilter

from . import imaging
from . import labels as labels_mod
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


def check_image(data: bytes, name: str, max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS) -> tuple[int, int, str]:
    """Decode fully; return (width, height, format) of the upright image or raise ValueError with a
    one-line reason (empty, not an image, corrupt/truncated, too small, over `max_pixels`)."""
    info = imaging.check(data, max_pixels, MIN_SIDE)
    return info.width, info.height, info.format


def store_image(data: bytes, images_dir: Path, root: Path, source: str, labels: dict | None, name: str,
                max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS, max_edge: int | None = imaging.DEFAULT_MAX_EDGE) -> dict:
    """Validate, write `images_dir/<id>.<ext>` atomically, and return the manifest row.

    Stored as-is when the bytes are an upright, single-frame RGB/L JPEG, PNG or WebP within
    `max_edge`; otherwise re-encoded upright, 8-bit RGB and downscaled to `max_edge` (JPEG with the
    source's quantisation tables when the source was a JPEG, else PNG), so every consumer reads it
    the same way. `reencoded` in the row says why."""
    im, info = imaging.load(data, max_pixels, MIN_SIDE)
    with im:
        why = info.reencode_reason(max_edge)
        w, h, ext = info.width, info.height, imaging.STORED_FORMATS.get(info.format)
        if why:
            picture = imaging.normalise(im, max_edge)
            data, ext = imaging.encode(picture, source=im)
            w, h = picture.size
    iid = content_id(data)
    out = images_dir / f"{iid}{ext}"
    if not out.exists():
        write_bytes(out, data)
    row = {
        "id": iid, "path": out.relative_to(root).as_posix(), "width": w, "height": h, "bytes": len(data),
        "source": source, "origin": name, "labels": labels or None,
    }
    if why:
        row["reencoded"] = why
    return row


def ingest_items(items: Iterable[tuple[str, bytes | None, dict | None, str | None]], images_dir: Path, root: Path, source: str,
                 max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS, max_edge: int | None = imaging.DEFAULT_MAX_EDGE):
    """items: (name, data or None, labels, error or None). Returns (manifest rows, rejects).

    Exact duplicates (same content hash) are kept once; the others are rejected naming the kept one."""
    rows, rejects, seen = [], [], {}
    for name, data, labels, err in items:
        if err is not None or data is None:
            rejects.append(Rejected(name, err or "unreadable"))
            continue
        try:
            row = store_image(data, images_dir, root, source, labels, name, max_pixels, max_edge)
        except ValueError as e:
            rejects.append(Rejected(name, str(e)))
            continue
        if row["id"] in seen:
            rejects.append(Rejected(name, f"exact duplicate of {seen[row['id']]}"))
            continue
        seen[row["id"]] = name
        rows.append(row)
    return rows, rejects


# (reason pattern, short kind, what to do): groups the rejects for the ingest summary
REJECT_KINDS = [
    (r"empty file", "empty file", "re-copy the file from its source"),
    (r"not an image", "not an image", "remove it, or convert it to JPEG/PNG"),
    (r"unsupported format", "unsupported format", "convert it to JPEG or PNG"),
    (r"unsupported colour mode", "unsupported colour mode", "convert it to RGB JPEG or PNG"),
    (r"corrupt or truncated", "corrupt or truncated image", "re-export or re-copy the file"),
    (r"image too small", "image too small", f"remove it (images need >= {MIN_SIDE} px a side)"),
    (r"image too large", "image too large", "downscale it, or raise data.max_pixels"),
    (r"exact duplicate", "exact duplicate", "nothing to do (one copy is kept); delete the copies to silence this"),
    (r"unreadable", "unreadable", "fix the permissions (chmod a+r) or the storage"),
    (r"dangling symlink", "dangling symlink", "delete the link or restore its target (dvc repro also stops on it; or list it in .dvcignore)"),
    (r"symlink loop", "symlink loop", "delete the link (dvc repro also stops on it; or list it in .dvcignore)"),
    (r"symlinked folder", "symlinked folder already read", "nothing to do (its files are read once); delete the link to silence this"),
    (r"hidden", "hidden file or folder", "nothing to do; rename it without the leading dot to ingest it"),
    (r"not a regular file", "not a regular file", "remove it"),
    (r"\S+ row \d+ names a file that does not exist", "label row for a missing file", "fix the file name in the row or delete the row"),
    (r"\S+ rows [\d, ]+ all name", "duplicate label rows", "keep one row per image"),
    (r"\S+ row \d+: ", "unknown label value", "use a value of the vocabulary (docs/ARCHITECTURE.md, Labels)"),
    (r"\S+ row \d+ has no file name", "label row without a file name", "fill in or delete the row"),
    (r"\S+ is not UTF-8", "labels file not UTF-8", "save it as UTF-8 (Excel: CSV UTF-8)"),
    (r"car model skipped", "car model skipped", "see the reason; the other car models are used"),
]


def reject_kind(reason: str) -> tuple[str, str]:
    """(kind, fix) of a reject reason, for summaries."""
    for pattern, kind, fix in REJECT_KINDS:
        if re.match(pattern, reason):
            return kind, fix
    return reason.split(" (")[0], "see the reason"


# ----------------------------------------------------------------------- folder source
def read_labels_csv(path: Path) -> dict[str, dict]:
    """labels.csv as {rel path: labels} (problems ignored; `labels.read_labels_csv` reports them)."""
    return labels_mod.read_labels_csv(Path(path).read_bytes(), str(path)).rows


def walk_folder(folder: Path) -> list[tuple[Path, str | None]]:
    """Every entry under `folder` as (path, None) for a readable regular file or (path, reason):
    dangling or looping symlinks, symlinked folders already read (never followed into a loop),
    hidden files and folders, unreadable folders, fifos and sockets. Sorted by path."""
    out: list[tuple[Path, str | None]] = []
    seen = {os.path.realpath(folder): "."}

    def visit(d: Path) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            out.append((d, f"unreadable folder ({e.strerror})"))
            return
        for e in entries:
            p = Path(e.path)
            if e.is_symlink():
                try:
                    os.stat(p)
                except OSError as err:
                    target = os.readlink(p)
                    out.append((p, f"symlink loop ({e.name} -> {target})" if err.errno == errno.ELOOP
                                else f"dangling symlink (-> {target}, which does not exist)"))
                    continue
            if e.name.startswith("."):
                out.append((p, "hidden folder (skipped with its contents)" if e.is_dir() else "hidden file (skipped)"))
            elif e.is_dir():
                real = os.path.realpath(p)
                if real in seen:
                    out.append((p, f"symlinked folder already read as {seen[real]} (not followed)"))
                    continue
                seen[real] = p.relative_to(folder).as_posix()
                visit(p)
            elif e.is_file():
                out.append((p, None))
            else:
                out.append((p, "not a regular file (fifo, socket or device)"))

    visit(folder)
    return sorted(out, key=lambda t: t[0].as_posix())


def iter_folder(folder: Path, subfolder_key: str | None = "color", labels_csv: str = "labels.csv") -> Iterator[tuple[str, bytes | None, dict | None, str | None]]:
    """Every file under `folder` (sorted): image files with labels from labels.csv and/or the
    sub-folder names (`red/img.jpg` -> {subfolder_key: "red"}); everything else, and every
    labels.csv problem, is yielded as a reject (name, None, None, reason)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.folder.path: folder not found: {folder}")
    csv_path = folder / labels_csv
    table = labels_mod.LabelTable()
    if csv_path.is_file():
        table = labels_mod.read_labels_csv(csv_path.read_bytes(), str(csv_path))
    entries = walk_folder(folder)
    for name, reason in table.problems:
        yield name, None, None, reason
    existing = {p.relative_to(folder).as_posix() for p, _ in entries}
    for name, reason in table.missing(existing, str(folder), labels_csv):
        yield name, None, None, reason
    for p, err in entries:
        if p == csv_path:
            continue
        if err is not None:
            yield str(p), None, None, err
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() not in IMAGE_EXTS and p.name.lower() in {"readme.md", "readme", "readme.txt"}:
            continue
        try:
            data = p.read_bytes()
        except OSError as e:
            yield str(p), None, None, f"unreadable ({e.strerror})"
            continue
        yield str(p), data, labels_mod.labels_for(rel, subfolder_key, table), None


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
    table = labels_mod.LabelTable()
    csv_key = prefix + labels_csv
    if csv_key in keys:
        table = labels_mod.read_labels_csv(s3.get_object(Bucket=bucket, Key=csv_key)["Body"].read(), f"s3://{bucket}/{csv_key}")
    for name, reason in table.problems:
        yield name, None, None, reason
    yield from ((n, None, None, r) for n, r in table.missing({k[len(prefix):] for k in keys}, f"s3://{bucket}/{prefix}".rstrip("/"), labels_csv))
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
        yield name, data, labels_mod.labels_for(rel, subfolder_key, table), None


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
    <= max_distance bits (max_distance < 0 disables).

    The pHash is imagehash.phash's (32x32 LANCZOS greyscale, 2-D DCT-II, 8x8 low frequencies >
    their median) but the DCT is computed here with a fixed cosine table (render.xmath, no libm)
    and sums in a fixed order, instead of scipy.fftpack: pocketfft's twiddles come from libm
    sin/cos (glibc picks FMA variants by CPU) and a last-bit change flips a hash bit whenever a
    coefficient sits at the median (flat images have many near-zero ones), so the grouping could
    differ between machines. Same bits as imagehash.phash except at such ties."""
    import imagehash
    import numpy as np

    from .render import xmath

    if max_distance < 0:
        return {i: i for i in paths}
    n, k = 32, 8
    m = (np.arange(k)[:, None] * (2 * np.arange(n)[None, :] + 1)) % (4 * n)  # angle pi*m/(2n), exact ints
    C = 2.0 * xmath.cos(m * (xmath.PI / (2 * n)))  # (k, n), scipy's unnormalised DCT-II

    def phash(im) -> "imagehash.ImageHash":
        g = np.asarray(im.convert("L").resize((n, n), Image.LANCZOS), np.float64)
        cols = np.zeros((k, n))
        for j in range(n):  # DCT along axis 0, summed in row order (no BLAS)
            cols = cols + C[:, j : j + 1] * g[j][None, :]
        d = np.zeros((k, k))
        for j in range(n):  # then along axis 1
            d = d + cols[:, j : j + 1] * C[:, j][None, :]
        return imagehash.ImageHash(d > np.median(d))

    hashes = {}
    for iid, p in paths.items():
        hashes[iid] = phash(imaging.open_rgb(p))
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
        t = imaging.open_rgb(path, max_edge=thumb)
        x, y = (k % cols) * thumb, (k // cols) * cell_h
        sheet.paste(t, (x, y))
        lab = labels or {}
        text = " ".join(str(lab.get(key, "")) for key in ("color", "body_type", "view"))[:24]
        d.text((x + 2, y + thumb + 1), text, fill=(0, 0, 0))
    with atomic_path(out_png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
