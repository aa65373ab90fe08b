"""Judged hits out to annotation tools (issue 34, the round trip): COCO and Label Studio import JSON.

Each judged hit (data/feedback/judgments.jsonl, latest verdict per query and hit) is found in the
index by its id (`lookup`, given by the caller: this layer does not read the index) for its frame,
box, class and labels. A frame is exported once, with every judged box in it (a box judged for
several queries once, with all of its judgments). Where the frame is: the hit's original (`origin`)
when it is a local file, else its stored frame (`frame_path`), else the picture it was judged on;
boxes are in that file's pixels (scaled from the stored frame's). A hit the index no longer knows is
exported as the picture it was judged on, without box or labels (a note says so); a hit whose picture
is gone is a problem line, not exported. Whole-image hits (no box) carry their labels on the image.

- COCO: `images` (file_name relative to `folder`, width, height; whole-image labels in the image's
  `attributes`), `categories` (box classes), `annotations` (bbox x, y, w, h in pixels; labels in
  `attributes`, as carsearch's COCO reader reads them; the judgments in `carsearch`), and
  `info.carsearch.folder`, where the import writes back by default.
- Label Studio (its documented import JSON): one task per frame, `data.image` (`image_root` + the
  path relative to `folder`: Label Studio's local-files URL by default), `data.judged` (the
  judgments, for the annotator), `predictions[0].result`: a `rectanglelabels` region per box in
  percent of `original_width` / `original_height`, its labels as per-region `choices` (color,
  body_type, view) and `textarea` (make, model, plate) with the region's id; whole-image labels as
  task-level `image_<key>` results. `label_config()` is the project's labeling config for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from carsearch.core import imaging
from carsearch.core.paths import resolve
from carsearch.core.vocab import BODY_TYPES, CAPTION_CLASSES, COLORS, VIEWS, known
from carsearch.feedback import split, store

CHOICES = {"color": COLORS, "body_type": BODY_TYPES, "view": VIEWS}  # per-region Choices
TEXTS = ("make", "model", "plate")  # per-region TextArea
LABEL_KEYS = (*CHOICES, *TEXTS)  # what the round trip carries


@dataclass
class Region:
    box: tuple[float, float, float, float] | None  # x1 y1 x2 y2 in the file's pixels; None: the whole image
    cls: str
    labels: dict
    judgments: list[dict] = field(default_factory=list)


@dataclass
class Frame:
    file: Path
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    rel: str = ""


@dataclass
class Judged:
    frames: list[Frame]
    folder: Path | None
    problems: list[str] = field(default_factory=list)  # one line each: not exported, and why
    notes: list[str] = field(default_factory=list)  # exported, with less than asked


def _local(loc, root: Path) -> Path | None:
    if not loc or str(loc).startswith("s3://"):
        return None
    p = resolve(str(loc), root)
    return p if p.is_file() else None


def _size(p: Path) -> tuple[int, int]:
    with imaging.open_image(p) as im:
        return im.size


def _place(row: dict | None, hit, root: Path) -> tuple[Path | None, tuple | None, str]:
    """(the file to show, the box in its pixels or None, where it came from) of one judged hit."""
    if row is None:
        return _local(hit.path, root), None, "picture"
    frame = _local(row.get("frame_path"), root)
    box = row.get("box")
    for cand in (_local(row.get("origin"), root), frame):
        if cand is None:
            continue
        if box is None or cand == frame or frame is None:
            return cand, (tuple(float(v) for v in box) if box is not None else None), "frame"
        (w, h), (fw, fh) = _size(cand), _size(frame)  # the original may be bigger than the stored frame
        sx, sy = w / fw, h / fh
        return cand, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), "frame"
    return _local(row.get("path"), root), None, "picture"


def judged_frames(judgments_path: Path, lookup: Callable[[str], dict | None] | None, root: Path) -> Judged:
    """Every judged hit, grouped by the frame it is in (see the module's doc)."""
    loaded = store.read(judgments_path)
    out = Judged([], None, [f"{p} (not exported)" for p in loaded.problems])
    frames: dict[Path, Frame] = {}
    regions: dict[tuple, Region] = {}
    for qid, by_hit in split.latest(loaded.judgments).items():
        for j in by_hit.values():
            row = lookup(j.hit.id) if lookup is not None else None
            what = f"{judgments_path.name}: hit {j.hit.id} judged for query {qid}"
            try:
                file, box, how = _place(row, j.hit, root)
                if file is None:
                    out.problems.append(
                        f"{what}: its picture ({j.hit.path}) is not a local file any more; not exported"
                    )
                    continue
                fr = frames.get(file) or Frame(file, *_size(file))
            except (OSError, ValueError) as e:  # a picture PIL cannot read, a zero-size frame
                out.problems.append(f"{what}: its picture cannot be read ({str(e).splitlines()[0]}); not exported")
                continue
            frames[file] = fr
            if row is None:
                out.notes.append(
                    f"{what}: not in the index; exported as the picture it was judged on, no box or labels"
                )
            labels = {k: str(v) for k, v in known(row or {}).items() if k in LABEL_KEYS}
            key = (file, tuple(round(v, 1) for v in box) if box else None)
            if key not in regions:
                regions[key] = Region(box, str((row or {}).get("box_class") or "car") if box else "", labels)
                fr.regions.append(regions[key])
            q = j.query
            regions[key].judgments.append(
                {
                    "query_id": qid,
                    "query": q.text or q.image_id or q.image_sha,
                    "kind": q.kind,
                    "verdict": j.verdict,
                    "rank": j.hit.rank,
                    "hit_id": j.hit.id,
                    "from": how,
                }  # fmt: skip
            )
    out.frames = sorted(frames.values(), key=lambda f: str(f.file))
    if out.frames:
        out.folder = Path(os.path.commonpath([str(f.file.parent) for f in out.frames]))
        for f in out.frames:
            f.rel = f.file.relative_to(out.folder).as_posix()
    return out


def _folder_name(folder: Path | None, root: Path) -> str | None:
    if folder is None:
        return None
    return folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)


def _judged_text(regions: list[Region]) -> str:
    return "; ".join(
        f"{'✓' if j['verdict'] else '✗'} {j['query']!r} (rank {j['rank']}, hit {j['hit_id']})"
        for r in regions
        for j in r.judgments
    )


def to_coco(judged: Judged, root: Path) -> dict:
    """The COCO document of the judged frames (see the module's doc)."""
    classes = sorted({r.cls for f in judged.frames for r in f.regions if r.box})
    cat = {c: i for i, c in enumerate(classes, 1)}
    images, anns = [], []
    for i, f in enumerate(judged.frames, 1):
        whole = [r for r in f.regions if r.box is None]
        img = {"id": i, "file_name": f.rel, "width": f.width, "height": f.height}
        if whole:
            img["attributes"] = {k: v for r in whole for k, v in r.labels.items()}
            img["carsearch"] = {"judgments": [j for r in whole for j in r.judgments]}
        images.append(img)
        for r in f.regions:
            if r.box is None:
                continue
            x1, y1, x2, y2 = r.box
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat[r.cls],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "attributes": dict(r.labels),
                    "carsearch": {"judgments": r.judgments},
                }  # fmt: skip
            )
    return {
        "info": {
            "description": "carsearch judged hits",
            "carsearch": {"folder": _folder_name(judged.folder, root)},
        },
        "licenses": [],
        "images": images,
        "categories": [{"id": i, "name": c, "supercategory": "vehicle"} for c, i in cat.items()],
        "annotations": anns,
    }


def _region_results(n: int, f: Frame, r: Region) -> list[dict]:
    x1, y1, x2, y2 = r.box
    geo = {
        "x": 100 * x1 / f.width,
        "y": 100 * y1 / f.height,
        "width": 100 * (x2 - x1) / f.width,
        "height": 100 * (y2 - y1) / f.height,
        "rotation": 0,
    }
    common = {"id": f"r{n}", "to_name": "image", "original_width": f.width, "original_height": f.height}
    out = [{**common, "type": "rectanglelabels", "from_name": "vehicle", "image_rotation": 0,
            "value": {**geo, "rectanglelabels": [r.cls]}}]  # fmt: skip
    for k, v in r.labels.items():
        kind, value = ("choices", {"choices": [v]}) if k in CHOICES else ("textarea", {"text": [v]})
        out.append({**common, "type": kind, "from_name": k, "value": {**geo, **value}})
    return out


def to_labelstudio(judged: Judged, root: Path, image_root: str) -> list[dict]:
    """Label Studio tasks with the judged boxes as predictions (see the module's doc)."""
    tasks = []
    for f in judged.frames:
        results, n = [], 0
        for r in f.regions:
            if r.box is None:
                results += [
                    {
                        "id": f"t{k}",
                        "type": "choices" if k in CHOICES else "textarea",
                        "from_name": f"image_{k}",
                        "to_name": "image",
                        "value": {"choices": [v]} if k in CHOICES else {"text": [v]},
                    }  # fmt: skip
                    for k, v in r.labels.items()
                ]
                continue
            n += 1
            results += _region_results(n, f, r)
        data = {
            "image": image_root + quote(f.rel),
            "judged": _judged_text(f.regions),
            "carsearch_file": f.rel,
            "carsearch_folder": _folder_name(judged.folder, root),
        }
        tasks.append({"data": data, "predictions": [{"model_version": "carsearch index", "result": results}]})
    return tasks


def label_config(tasks: list[dict]) -> str:
    """A Label Studio labeling config for `to_labelstudio`'s tasks: the judgments, the image, box
    classes, per-region choices and text, and the whole image's labels."""
    classes = list(CAPTION_CLASSES) + sorted(  # the captioner's classes, then any others exported
        {c for t in tasks for p in t["predictions"] for r in p["result"] for c in r["value"].get("rectanglelabels", [])}
        - set(CAPTION_CLASSES)
    )
    lines = ['<View>', '  <Text name="judged" value="$judged"/>', '  <Image name="image" value="$image"/>',
             '  <RectangleLabels name="vehicle" toName="image">']  # fmt: skip
    lines += [f"    <Label value={quoteattr(c)}/>" for c in classes] + ["  </RectangleLabels>"]
    for prefix, per_region in (("", "true"), ("image_", "false")):
        for k, values in CHOICES.items():
            lines.append(f'  <Choices name="{prefix}{k}" toName="image" perRegion="{per_region}" choice="single">')
            lines += [f"    <Choice value={quoteattr(v)}/>" for v in values] + ["  </Choices>"]
        lines += [
            f'  <TextArea name="{prefix}{k}" toName="image" perRegion="{per_region}" maxSubmissions="1" '
            f'placeholder="{k}"/>'
            for k in TEXTS
        ]
    return "\n".join(lines + ["</View>"]) + "\n"
