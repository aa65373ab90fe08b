"""Vehicle boxes: the one `boxes` contract every box source writes, the annotation files a user keeps
beside the frames (COCO JSON, YOLO txt, box columns in labels.csv), box checks, and crops.

A box (docs/ARCHITECTURE.md, Boxes): `{"frame": frame id, "x1", "y1", "x2", "y2": pixels of the
stored (upright) frame, "class": "car"|"truck"|…, "score": float | None (None: drawn by a person),
"source": "coco:<file>"|"yolo"|"labels.csv"|"llm"|"detector:<model>"|"render", "labels": {…}}`.
A frame with boxes becomes one index row per box (its crop); a frame without stays one row.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from carsearch.core import imaging
from carsearch.core.io import link_or_copy, write_bytes
from carsearch.core.vocab import UNKNOWN
from carsearch.sources import coco
from carsearch.sources.labels import check_value

YOLO_NAMES = ("classes.txt", "obj.names")  # class names of YOLO txt files, one per line (id = line number)
COORDS = ("x1", "y1", "x2", "y2")


@dataclass
class Annotations:
    """Boxes of a folder's frames: `boxes[rel path]` (a listed frame with no vehicle has []),
    `problems` (path, reason) for the rejects report, `files` the annotation files themselves."""

    boxes: dict[str, list[dict]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)


def _labels(attrs: dict | None) -> tuple[dict, list[str]]:
    """(the box's labels, why each other attribute is not used) of a COCO annotation's `attributes`:
    vocabulary values normalised, `plate` checked as a number plate (an all-digit plate may be a
    number), other strings kept; a value that is not one of its key's is not used."""
    out, bad = {}, []
    for k, v in (attrs or {}).items():
        if k == "plate" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and v.strip():
            norm, why = check_value(k, v)
            if why:
                bad.append(why)
            elif norm is not None:
                out[k] = norm
    return out, bad


def read_coco(path: Path, rel: str) -> tuple[dict[str, list[dict]], list[tuple[str, str]]]:
    """A COCO JSON file (images, annotations, categories; CVAT/Label Studio exports): boxes by
    `file_name`; an annotation's `attributes` (e.g. color, view, plate) and its `track_id` (COCO
    video, TAO; CVAT puts it in `attributes`) become the box's labels (a
    value that is not one of its key's is a problem line, the box kept). Boxes are scaled when the
    file's image size differs from the stored frame's (see `scaled`). Read entry by entry
    (`carsearch.sources.coco`): a malformed entry is a problem, the rest are kept; raises
    coco.NotCoco when the file as a whole is not COCO."""
    index, problems = coco.read(path, rel)
    cats = {c["id"]: c["name"] for c in index.loadCats(index.getCatIds())}
    out: dict[str, list[dict]] = {}
    for img in index.loadImgs(index.getImgIds()):
        name = str(img["file_name"]).replace("\\", "/").lstrip("./")
        out.setdefault(name, [])
        for a in index.loadAnns(index.getAnnIds(imgIds=[img["id"]], iscrowd=None)):
            x, y, w, h = a["bbox"]
            labels, bad = _labels(a.get("attributes"))
            tid = a.get("track_id", (a.get("attributes") or {}).get("track_id"))  # COCO video / TAO; CVAT
            if tid is not None and not isinstance(tid, (bool, dict, list)) and str(tid).strip():
                labels["track_id"] = str(tid).strip()
            problems += [(rel, f"{rel} annotations[{a['id']}] ({name}): {w_}; label not used, box kept") for w_ in bad]
            out[name].append(
                {
                    "x1": x,
                    "y1": y,
                    "x2": x + w,
                    "y2": y + h,
                    "class": _class_name(cats, a.get("category_id")),
                    "score": a["score"],
                    "source": f"coco:{rel}",
                    "labels": labels,
                    "_size": (img.get("width"), img.get("height")),
                }
            )
    return out, problems


def _class_name(cats: dict, category_id) -> str:
    """A COCO box's class: its category's name; `unknown` with no category_id (not the string "None")."""
    if category_id is None:
        return UNKNOWN
    return cats.get(category_id, str(category_id))


def read_yolo(text: str, rel: str, names: list[str]) -> tuple[list[dict], list[tuple[str, str]]]:
    """YOLO txt: one `class cx cy w h` line per box, normalised to the frame (converted to pixels
    by `scaled` once the frame's size is known)."""
    boxes, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) < 5:
                raise ValueError
        except ValueError:
            problems.append((rel, f"{rel} line {n}: {line.strip()!r} is not 'class cx cy w h'"))
            continue
        cls = names[c] if 0 <= c < len(names) else str(c)
        boxes.append(
            {
                "x1": cx - w / 2,
                "y1": cy - h / 2,
                "x2": cx + w / 2,
                "y2": cy + h / 2,
                "class": cls,
                "score": None,
                "source": "yolo",
                "labels": {},
                "_size": (1.0, 1.0),  # normalised coordinates
            }
        )
    return boxes, problems


def folder_annotations(folder: Path, rels: list[str], csv_boxes: dict[str, list[dict]] | None = None) -> Annotations:
    """Every box source of a folder: COCO JSON files (every `*.json`: one that does not parse or is
    not COCO is one problem line, a malformed entry of one that is drops that entry only),
    YOLO txt beside each image (`a/b.txt`, or `labels/` in place of an `images/` folder) with names
    from classes.txt / obj.names, and labels.csv box columns (`csv_boxes`, from labels.read_labels_csv)."""
    folder, ann = Path(folder), Annotations()
    relset = set(rels)
    for rel in rels:
        if rel.lower().endswith(".json"):
            ann.files.add(rel)
            try:
                got, problems = read_coco(folder / rel, rel)
            except coco.NotCoco as e:
                ann.problems.append((rel, str(e)))
                continue
            except OSError as e:
                ann.problems.append((rel, f"{rel}: unreadable ({e.strerror})"))
                continue
            ann.problems += problems
            for name, bs in got.items():
                ann.boxes.setdefault(name, []).extend(bs)
    names: list[str] = []
    for n in YOLO_NAMES:
        if n in relset:
            names = [x.strip() for x in (folder / n).read_text(encoding="utf-8").splitlines() if x.strip()]
            ann.files.add(n)
    txts = {r for r in rels if r.lower().endswith(".txt") and r not in YOLO_NAMES}
    for rel in rels:
        stem = rel.rsplit(".", 1)[0]
        for cand in (f"{stem}.txt", f"{stem}.txt".replace("images/", "labels/", 1)):
            if cand in txts and cand != rel:
                ann.files.add(cand)
                bs, problems = read_yolo((folder / cand).read_text(encoding="utf-8", errors="replace"), cand, names)
                ann.problems += problems
                ann.boxes.setdefault(rel, []).extend(bs)
                break
    for rel, bs in (csv_boxes or {}).items():
        ann.boxes.setdefault(rel, []).extend({**b, "source": "labels.csv", "_size": None} for b in bs)
    return ann


def scaled(box: dict, width: int, height: int) -> dict:
    """The box in the stored frame's pixels: YOLO's normalised coordinates times the frame size;
    COCO's scaled when the file gave another image size (a frame downscaled at ingest)."""
    size = box.get("_size")
    sx = sy = 1.0
    if size and size[0] and size[1]:
        sx, sy = width / float(size[0]), height / float(size[1])
    out = {k: v for k, v in box.items() if k != "_size"}
    out.update(x1=box["x1"] * sx, y1=box["y1"] * sy, x2=box["x2"] * sx, y2=box["y2"] * sy)
    return out


def attach(frames: list[dict], ann: Annotations, folder: Path) -> None:
    """Give each frame (a manifest row read from `folder`; a video's sampled frame `<video>#t=<s>s`)
    its annotated boxes, in its stored pixels."""
    folder = str(Path(folder)).rstrip("/") + "/"
    for f in frames:
        origin = str(f.get("origin") or "")
        if not origin.startswith(folder):
            continue
        rel = origin[len(folder) :]
        if rel in ann.boxes:
            f["boxes"] = [scaled(b, f["width"], f["height"]) for b in ann.boxes[rel]]


def check_box(box: dict, width: int, height: int, min_side: int) -> tuple[dict | None, str | None]:
    """(the box clipped to the frame, None) or (None, why it cannot be used)."""
    x1, y1, x2, y2 = (float(box[k]) for k in COORDS)
    if not (x2 > x1 and y2 > y1):
        return None, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has no area (x2 <= x1 or y2 <= y1)"
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the {width}x{height} frame"
    if min(cx2 - cx1, cy2 - cy1) < min_side:
        return None, f"box {cx2 - cx1:.0f}x{cy2 - cy1:.0f} px is smaller than curate.boxes.min_side {min_side} px"
    return {**box, "x1": round(cx1, 1), "y1": round(cy1, 1), "x2": round(cx2, 1), "y2": round(cy2, 1)}, None


def vehicle_id(frame_id: str, box: dict, margin: float) -> str:
    key = f"{frame_id}|{box['x1']:.1f},{box['y1']:.1f},{box['x2']:.1f},{box['y2']:.1f}|{margin:g}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def save_crops(
    frame_path: Path, boxes: list[dict], margin: float, out_dir: Path, ids: list[str], made: Path | None = None
) -> list[Path]:
    """Each box's crop of one frame as `out_dir/<id>.jpg` (JPEG q95; an existing file is kept: ids
    are content-addressed by frame, box and margin). The one place a crop is cut: one already cut
    into `made` (curate_pairs' crops, for build_index) is linked, not cut again. Returns the paths."""
    out = [Path(out_dir) / f"{i}.jpg" for i in ids]
    todo = [(box, dst) for box, dst in zip(boxes, out) if not dst.exists() and not _linked(made, dst)]
    if not todo:
        return out
    with imaging.open_image(frame_path) as im:
        frame = im.convert("RGB")
    for box, dst in todo:
        buf = io.BytesIO()
        crop(frame, box, margin).save(buf, "JPEG", quality=95)
        write_bytes(dst, buf.getvalue())
    return out


def _linked(made: Path | None, dst: Path) -> bool:
    """Whether `dst` is now a link to (a copy of) the same crop in `made`."""
    src = Path(made) / dst.name if made is not None else None
    if src is None or not src.is_file():
        return False
    link_or_copy(src, dst)
    return True


def crop(im: Image.Image, box: dict, margin: float) -> Image.Image:
    """The box plus `margin` (a fraction of its width/height on each side) of context, inside the frame."""
    w, h = box["x2"] - box["x1"], box["y2"] - box["y1"]
    return im.crop(
        (
            max(0, int(box["x1"] - margin * w)),
            max(0, int(box["y1"] - margin * h)),
            min(im.width, int(round(box["x2"] + margin * w))),
            min(im.height, int(round(box["y2"] + margin * h))),
        )
    )
