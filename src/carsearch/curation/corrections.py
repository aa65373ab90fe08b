"""Corrected boxes and labels back from annotation tools (issue 34, the round trip), written where
carsearch already reads them: box rows of `labels.csv` (or a COCO file) in the frames' folder.

Read: a Label Studio JSON export (a list of tasks; each task's latest annotation that was not
cancelled: `rectanglelabels` regions in percent of `original_width`/`original_height`, a rotated
one taken as its axis-aligned envelope; per-region `choices`/`textarea`/`labels` with the region's
id as its labels; task-level `image_<key>` (or a label key) as the whole image's labels), or a COCO
file (carsearch.sources.coco: entry by entry, pycocotools; `attributes` as labels, an image's own
`attributes` as the whole image's labels). The frame is found under `folder` by the task's
`data.carsearch_file` (an export of carsearch's), the path in `data.image` (after `?d=` for Label
Studio's local files), or a unique file name. Labels are checked as labels.csv checks them.

Every record ends in the output or in a problem line naming it and why (a task with no annotation,
a box with no area, a file not under the folder, a label value not of its key: the label dropped,
the box kept). One bad record never drops its neighbours.

Write: `labels.csv` keeps every row it had for other files and replaces those of the corrected
files with their corrected boxes (box columns x1 y1 x2 y2 in the file's pixels, `class`, a column
per label) and whole-image labels; or `carsearch_corrections.json` (COCO) likewise.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from carsearch.core import imaging
from carsearch.core.io import write_json, write_text
from carsearch.curation.annotations import LABEL_KEYS
from carsearch.sources import coco
from carsearch.sources.boxes import read_coco
from carsearch.sources.labels import BOX_COLUMNS, FILE_COLUMNS, check_value

COCO_OUT = "carsearch_corrections.json"
PART_TYPES = ("choices", "textarea", "labels", "taxonomy")


@dataclass
class Corrections:
    files: dict[str, dict] = field(default_factory=dict)  # rel -> {"boxes": [...], "labels": {...}}
    problems: list[str] = field(default_factory=list)
    folder: str | None = None  # the folder the file says it was exported from

    def entry(self, rel: str) -> dict:
        return self.files.setdefault(rel, {"boxes": [], "labels": {}})


def _norm(name: str) -> str:
    """A file name as labels.csv and COCO give it, relative to the folder (`./a.jpg` is `a.jpg`)."""
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _labels(raw: dict, where: str, out: Corrections) -> dict:
    labels = {}
    for k, v in raw.items():
        if k not in LABEL_KEYS or v in (None, ""):
            continue
        norm, why = check_value(k, str(v))
        if why:
            out.problems.append(f"{where}: {why}; label not used, box kept")
        elif norm is not None:
            labels[k] = norm
    return labels


class Finder:
    """A file named by an annotation tool, under `folder`: the path as given, else a unique file name."""

    def __init__(self, folder: Path):
        self.folder, self._names = Path(folder), None

    def __call__(self, name: str) -> str | None:
        name = _norm(name).lstrip("/")
        if name and (self.folder / name).is_file():
            return name
        if self._names is None:
            self._names = {}
            for p in self.folder.rglob("*"):
                if p.is_file():
                    self._names.setdefault(p.name, []).append(p.relative_to(self.folder).as_posix())
        hits = self._names.get(Path(name).name, [])
        return hits[0] if len(hits) == 1 else None


def _ls_name(data: dict) -> str:
    if data.get("carsearch_file"):
        return str(data["carsearch_file"])
    url = str(data.get("image") or "")
    if "?d=" in url:
        return unquote(url.split("?d=", 1)[1])
    return unquote(urlparse(url).path)


def _annotation(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or "")) if done else None


def _envelope(v: dict, w: float, h: float) -> tuple[float, float, float, float]:
    x, y, bw, bh = (float(v[k]) for k in ("x", "y", "width", "height"))
    x, y, bw, bh = x * w / 100, y * h / 100, bw * w / 100, bh * h / 100
    t = math.radians(float(v.get("rotation") or 0))  # Label Studio rotates about the top-left corner
    xs = [x + dx * math.cos(t) - dy * math.sin(t) for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y + dx * math.sin(t) + dy * math.cos(t) for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return min(xs), min(ys), max(xs), max(ys)


def _part_value(v: dict):
    for k in ("choices", "text", "labels", "taxonomy"):
        if v.get(k):
            x = v[k][0]
            return x[-1] if isinstance(x, list) else x
    return None


def read_labelstudio(tasks, name: str, folder: Path | None, out: Corrections) -> None:
    """A Label Studio JSON export's corrections into `out` (module doc)."""
    if not isinstance(tasks, list):
        raise ValueError(f"{name}: a Label Studio export is a list of tasks (got a {type(tasks).__name__})")
    folders = {
        t["data"].get("carsearch_folder") for t in tasks if isinstance(t, dict) and isinstance(t.get("data"), dict)
    }
    out.folder = next(iter(folders - {None}), None) if len(folders - {None}) == 1 else None
    find = Finder(folder) if folder is not None else None
    for i, task in enumerate(tasks):
        where = f"{name} task {task.get('id', i) if isinstance(task, dict) else i}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            out.problems.append(f"{where}: not a task (no 'data' object); not imported")
            continue
        ann = _annotation(task)
        if ann is None:
            out.problems.append(
                f"{where}: no annotation that was not cancelled (predictions are not corrections); not imported"
            )
            continue
        image = _ls_name(task["data"])
        rel = find(image) if find is not None else None
        if rel is None:
            out.problems.append(f"{where}: its image {image!r} is not a file under {folder}; not imported")
            continue
        _read_task(ann.get("result") or [], rel, folder, f"{where} ({rel})", out)


def _read_task(results: list, rel: str, folder: Path, where: str, out: Corrections) -> None:
    regions, parts, whole = {}, {}, {}
    entry = out.entry(rel)
    entry["boxes"] = []  # this task's annotation is the file's correction
    for n, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            out.problems.append(f"{where} result[{n}]: not a result object; not imported")
            continue
        kind, v, key = r.get("type"), r["value"], str(r.get("from_name") or "")
        if kind == "rectanglelabels":
            try:
                w, h = r.get("original_width"), r.get("original_height")
                if not (w and h):
                    with imaging.open_image(folder / rel) as im:
                        w, h = im.size
                box = _envelope(v, float(w), float(h))
            except (KeyError, TypeError, ValueError, OSError) as e:
                out.problems.append(f"{where} region {r.get('id', n)}: not a box ({e}); not imported")
                continue
            if not (box[2] > box[0] and box[3] > box[1]):
                out.problems.append(f"{where} region {r.get('id', n)}: box has no area; not imported")
                continue
            cls = (v.get("rectanglelabels") or ["car"])[0]
            regions[r.get("id", f"#{n}")] = {"box": box, "class": str(cls), "raw": {}}
        elif kind in PART_TYPES and _part_value(v) is not None:
            target = parts.setdefault(r.get("id"), {}) if r.get("id") is not None else whole
            target[key.removeprefix("image_")] = _part_value(v)
    for rid, raw in parts.items():
        if rid in regions:
            regions[rid]["raw"].update(raw)
        else:
            whole.update(raw)
    entry["labels"] = _labels(whole, where, out)
    for rid, reg in regions.items():
        x1, y1, x2, y2 = reg["box"]
        labels = _labels(reg["raw"], f"{where} region {rid}", out)
        entry["boxes"].append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class": reg["class"], "labels": labels})


def read_coco_file(path: Path, name: str, folder: Path | None, out: Corrections) -> None:
    """A COCO file's corrections into `out` (boxes scaled to the files' own sizes)."""
    doc = coco.load(path, name)
    out.folder = (
        ((doc.get("info") or {}).get("carsearch") or {}).get("folder") if isinstance(doc.get("info"), dict) else None
    )
    if folder is None:
        return
    find = Finder(folder)
    boxes, problems = read_coco(path, name)
    out.problems += [why for _, why in problems]
    image_labels = {
        str(im.get("file_name")): im.get("attributes")
        for im in doc["images"]
        if isinstance(im, dict) and isinstance(im.get("attributes"), dict)
    }
    for file_name, bs in boxes.items():
        rel = find(file_name)
        if rel is None:
            out.problems.append(
                f"{name} image {file_name!r}: not a file under {folder}; its {len(bs)} box(es) not imported"
            )
            continue
        try:
            with imaging.open_image(folder / rel) as im:
                w, h = im.size
        except (OSError, ValueError) as e:
            out.problems.append(f"{name} image {file_name!r}: {rel} cannot be read ({e}); not imported")
            continue
        entry = out.entry(rel)
        entry["boxes"] = []
        entry["labels"] = _labels(image_labels.get(file_name) or {}, f"{name} image {file_name!r}", out)
        for b in bs:
            sw, sh = b.get("_size") or (None, None)
            sx, sy = (w / float(sw), h / float(sh)) if sw and sh else (1.0, 1.0)
            entry["boxes"].append(
                {
                    "x1": b["x1"] * sx,
                    "y1": b["y1"] * sy,
                    "x2": b["x2"] * sx,
                    "y2": b["y2"] * sy,
                    "class": b["class"],
                    "labels": {k: v for k, v in b["labels"].items() if k in LABEL_KEYS},
                }  # fmt: skip
            )


def read(path: Path, folder: Path | None) -> Corrections:
    """The corrections of a Label Studio export or a COCO file (told apart by their shape)."""
    path, out = Path(path), Corrections()
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: a JSON file that does not parse ({str(e).splitlines()[0]})") from None
    if isinstance(doc, list):
        read_labelstudio(doc, path.name, folder, out)
    elif isinstance(doc, dict) and "images" in doc:
        read_coco_file(path, path.name, folder, out)
    else:
        raise ValueError(f"{path}: neither a Label Studio export (a list of tasks) nor COCO (images, annotations)")
    return out


# ------------------------------------------------------------------ writing
def _fmt(v: float) -> str:
    return f"{round(v, 1):g}"


def merge_labels_csv(path: Path, corr: Corrections) -> tuple[int, int]:
    """Write the corrections into labels.csv at `path` (module doc); returns (rows written, rows replaced)."""
    header, rows, key = [], [], "file"
    if path.is_file():
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:  # Excel's ANSI CSV, as sources.labels reads it
            text = raw.decode("cp1252", errors="replace")
        reader = csv.reader(io.StringIO(text), csv.Sniffer().sniff(text[:8192], ",;\t|") if text.strip() else csv.excel)
        header = next(reader, [])
        rows = [r for r in reader if any(x.strip() for x in r)]
        norm = [" ".join(h.split()).lower().replace(" ", "_").replace("-", "_") for h in header]
        key = next((header[norm.index(k)] for k in FILE_COLUMNS if k in norm), None)
        if key is None:
            raise ValueError(f"{path}: needs a 'file' column naming each image (has {header}); not changed")
        box_cols = next((c for c in BOX_COLUMNS if set(c) <= set(norm)), None)
        coords = [header[norm.index(c)] for c in box_cols] if box_cols else list(BOX_COLUMNS[0])
    else:
        coords = list(BOX_COLUMNS[0])
    labels = sorted(
        {k for e in corr.files.values() for k in e["labels"]}
        | {k for e in corr.files.values() for b in e["boxes"] for k in b["labels"]}
    )
    want = [key, *coords, "class", *labels]
    lower = {h.lower() for h in header}
    header = header + [c for c in want if c.lower() not in lower]
    col = {h.lower(): i for i, h in enumerate(header)}
    fi = col[key.lower()]
    kept = [r + [""] * (len(header) - len(r)) for r in rows if _norm(r[fi] if fi < len(r) else "") not in corr.files]
    new = []
    for rel, e in sorted(corr.files.items()):
        if e["labels"]:
            new.append(_row(header, col, key, rel, None, e["labels"], coords))
        for b in e["boxes"]:
            new.append(_row(header, col, key, rel, b, b["labels"], coords))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(kept + new)
    write_text(path, buf.getvalue())
    return len(new), len(rows) - len(kept)


def _row(header, col, key, rel, box, labels, coords) -> list[str]:
    r = [""] * len(header)
    r[col[key.lower()]] = rel
    if box is not None:
        for c, k in zip(coords, ("x1", "y1", "x2", "y2")):
            r[col[c.lower()]] = _fmt(box[k])
        r[col["class"]] = box["class"]
    for k, v in labels.items():
        r[col[k.lower()]] = v
    return r


def merge_coco(path: Path, corr: Corrections, folder: Path) -> tuple[int, int]:
    """Write the corrections into a COCO file at `path` (module doc); returns (boxes written, images replaced)."""
    old = json.loads(path.read_text()) if path.is_file() else {"images": [], "annotations": [], "categories": []}
    cats = {c["name"]: c["id"] for c in old.get("categories", [])}
    keep_ids = {im["id"] for im in old["images"] if im["file_name"] not in corr.files}
    images = [im for im in old["images"] if im["id"] in keep_ids]
    anns = [a for a in old["annotations"] if a["image_id"] in keep_ids]
    next_img = max([im["id"] for im in images] + [0]) + 1
    next_ann = max([a["id"] for a in anns] + [0]) + 1
    for rel, e in sorted(corr.files.items()):
        with imaging.open_image(folder / rel) as im:
            w, h = im.size
        img = {"id": next_img, "file_name": rel, "width": w, "height": h}
        if e["labels"]:
            img["attributes"] = e["labels"]
        images.append(img)
        for b in e["boxes"]:
            cid = cats.setdefault(b["class"], max(list(cats.values()) + [0]) + 1)
            bw, bh = b["x2"] - b["x1"], b["y2"] - b["y1"]
            anns.append({"id": next_ann, "image_id": next_img, "category_id": cid, "bbox": [round(b["x1"], 1), round(b["y1"], 1), round(bw, 1), round(bh, 1)],
                         "area": round(bw * bh, 1), "iscrowd": 0, "attributes": b["labels"]})  # fmt: skip
            next_ann += 1
        next_img += 1
    doc = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in cats.items()]}
    write_json(path, doc)
    return sum(len(e["boxes"]) for e in corr.files.values()), len(old["images"]) - len(keep_ids)
