"""What `build_index` indexes: the corpus, not the training set.

`ingested` (default): every image ingest kept, captioned or not, with its caption, attributes and
split where curate_pairs made a pair of it, and the source's labels where it has them. `folder` /
`s3`: the user's own photos, read with the same reader and reject rules as ingest and indexed by
reference: a row points at the original (`carsearch.core.originals`); only an image that needs
normalising (EXIF rotation, 16-bit, CMYK...) and a video's frames are stored (content-addressed)
under the index's `images/` folder. No caption is needed to search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from carsearch.core import imaging, originals
from carsearch.core.columns import ROW
from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.schema import Boxes, Data, Detect, Index, Paths
from carsearch.core.vocab import known
from carsearch.curation.frames import folder_items, frame_rows
from carsearch.curation.rows import row_table
from carsearch.detection import detect as detect_mod
from carsearch.detection import footage, motion
from carsearch.sources import boxes as boxes_mod
from carsearch.sources import files as data

CORPORA = ("ingested", "folder", "s3")
RUN = 8192  # corpus files read per run: rows become Arrow columns a run at a time


@dataclass(frozen=True)
class RowSettings:
    """The config sections that turn frames into index rows: image limits (`data`), vehicle crops
    (`curate.boxes`), the detector (`detect`) and its seed (`train.seed`); and where vehicle crops
    already are (`made_crops`: `carsearch.curation.crops.made`)."""

    data: Data
    boxes: Boxes
    detect: Detect
    seed: int
    made_crops: Path | None = None  # curate_pairs' crops (`<pairs_dir>/crops`): linked, not cut again


def pairs_by_id(pairs_dir: Path, splits: Iterable[str]) -> dict[str, dict]:
    out = {}
    for split in splits:
        f = Path(pairs_dir) / f"{split}.jsonl"
        for r in read_jsonl(f) if f.is_file() else []:
            out[r["id"]] = {**r, "split": split}
    return out


def ingested_rows(
    manifest: Path, pairs: dict[str, dict], root: Path, crops_dir: Path, settings: RowSettings
) -> tuple[list[dict], list[dict], dict]:
    """Every manifest row, enriched with its curated pair (caption, attributes, split) if any; a
    frame with boxes (ingest's annotations, or the detector's) as one row per vehicle crop (per
    track, for video), in its frame's split. Returns (rows, rejected boxes, `vehicles` notes)."""
    frames, rejects, notes = vehicles(list(read_jsonl(manifest)), root, crops_dir, settings)
    frame_split = {p["frame_id"]: p["split"] for p in pairs.values() if p.get("frame_id")}
    rows = []
    for m in frames:
        p = pairs.get(m["id"]) or {"split": frame_split.get(m.get("frame_id") or "", "")}
        labels = known(m.get("labels")) or known(p.get("labels")) or known(p.get("attributes"))
        rows.append(_row(m, p, labels, m.get("origin") or m["path"]))
    return rows, rejects, notes


VEHICLE_FIELDS = ROW.vehicle  # what a row copies from its vehicle / image dict (carsearch.core.columns)


def _row(image: dict, pair: dict, labels: dict, origin: str) -> dict:
    """An index row: the image (id, path) with its curated pair, if any (caption, attributes, split),
    and, for a vehicle of a frame, the frame and box (`frame_id` is the image's own id otherwise)."""
    return {
        "id": image["id"],
        "path": image["path"],
        "caption": pair.get("caption", ""),
        "attributes": pair.get("attributes") or {},
        "labels": labels,
        "split": pair.get("split", ""),
        "origin": origin,
        "frame_id": image.get("frame_id") or image["id"],
        **{k: image.get(k) for k in VEHICLE_FIELDS},
    }


def file_runs(items: Iterable[tuple], n: int) -> Iterator[Iterator[tuple]]:
    """The items in runs of about `n`, each run lazy (one image's bytes in memory at a time) and
    to be read to its end before the next; a video's frames (`<video>#t=…`) stay in one run, so
    its tracks link."""
    it = iter(items)
    head = next(it, None)

    def run():
        nonlocal head
        k, last = 0, None
        while head is not None:
            base = head[0].split("#t=")[0]
            if k >= n and base != last:
                return
            item, head = head, next(it, None)
            k, last = k + 1, base
            yield item

    while head is not None:
        yield run()


def vehicle_rows(
    frames: list[dict], root: Path, crops_dir: Path, margin: float, min_side: int, made: Path | None = None
):
    """One row per usable box of each frame (its crop, stored JPEG under `crops_dir`; the frame's
    labels overlaid by the box's; linked from `made`, curate_pairs' crops, where that crop is
    there), the frame itself where it has no usable box. Returns (rows,
    rejects): every box that cannot be used, with the frame's file and the reason."""
    out, rejects = [], []
    for f in frames:
        kept = []
        for k, b in enumerate(f.get("boxes") or [], 1):
            box, why = boxes_mod.check_box(b, f["width"], f["height"], min_side)
            if why:
                rejects.append(
                    {"path": f.get("origin") or f["path"], "reason": f"{b.get('source', 'box')} box {k}: {why}"}
                )
            else:
                kept.append(box)
        if not kept:
            out.append({k: v for k, v in f.items() if k != "boxes"})
            continue
        ids = [boxes_mod.vehicle_id(f["id"], box, margin) for box in kept]
        paths = boxes_mod.save_crops(originals.opened(f["path"], root), kept, margin, crops_dir, ids, made)
        for box, vid, dst in zip(kept, ids, paths):
            with imaging.open_image(dst) as piece:
                size = piece.size
            out.append(
                {
                    **{k: v for k, v in f.items() if k != "boxes"},
                    "id": vid,
                    "path": dst.relative_to(root).as_posix() if dst.is_relative_to(root) else str(dst),
                    "width": size[0],
                    "height": size[1],
                    "labels": {**(f.get("labels") or {}), **(box.get("labels") or {})} or None,
                    "frame_id": f["id"],
                    "frame_path": f["path"],
                    "frame_width": f["width"],  # motion: a box touching the frame's edge is cut by it
                    "frame_height": f["height"],
                    "box": [box["x1"], box["y1"], box["x2"], box["y2"]],
                    "box_class": box.get("class"),
                    "box_score": box.get("score"),
                    "box_source": box.get("source"),
                }
            )
    return out, rejects


def detect_boxes(frames: list[dict], root: Path, spec: Detect, seed: int) -> int:
    """Boxes from the `detect` detector for every frame that has none from an annotation file
    (`boxes` absent; a listed frame with no vehicle keeps its []). Returns how many frames it ran on."""
    todo = [f for f in frames if f.get("boxes") is None]
    if not todo or not (spec.model or spec.tiny):
        return 0
    model, processor = detect_mod.load_detector(spec.as_dict(), seed=seed)
    bs = spec.batch_size
    for i in range(0, len(todo), bs):
        chunk = todo[i : i + bs]
        images = []
        for f in chunk:
            with imaging.open_image(originals.opened(f["path"], root)) as im:
                images.append(im.convert("RGB"))
        found = detect_mod.detect(
            model, processor, images, spec.threshold, batch_size=bs, frame_ids=[f["id"] for f in chunk]
        )
        for f, bs_found in zip(chunk, found):
            f["boxes"] = bs_found
    return len(todo)


def vehicles(
    frames: list[dict], root: Path, crops_dir: Path, settings: RowSettings
) -> tuple[list[dict], list[dict], dict]:
    """Frames -> index rows: boxes from annotations or the detector, a crop per usable box, video
    vehicles linked into one row per track. Returns (rows, rejects, {"detected_frames",
    "frames_without_vehicle": [origins], "tracks"})."""
    detected = detect_boxes(frames, root, settings.detect, settings.seed)
    empty = [f.get("origin") or f["path"] for f in frames if f.get("boxes") == []]
    rows, rejects = frames, []
    if any(f.get("boxes") for f in frames):
        b = settings.boxes
        rows, rejects = vehicle_rows(frames, root, crops_dir, b.margin, b.min_side, settings.made_crops)
    rows, tracks = footage.collapse_tracks(rows, motion.cameras(root), settings.data.capture.track_gap_s)
    return rows, rejects, {"detected_frames": detected, "frames_without_vehicle": empty, "tracks": tracks}


def source_items(kind: str, path: str, cfg):
    """(name, bytes, labels, error) items of a folder or S3 corpus, as ingest reads them (`cfg`: a
    section with `subfolder_key` and `labels_csv`: `index`, an `eval.sets` item)."""
    if kind == "folder":
        return data.iter_folder(Path(path), cfg.subfolder_key, cfg.labels_csv)
    if kind == "s3":
        return data.iter_s3(path, cfg.subfolder_key, cfg.labels_csv)
    raise ValueError(f"index.corpus: unknown corpus {kind!r} (expected one of {', '.join(CORPORA)})")


def stored_rows(
    items,
    images_dir: Path,
    root: Path,
    source: str,
    limits: tuple[int | None, int | None],
    pairs: dict[str, dict] | None = None,
    boxes: tuple[boxes_mod.Annotations, Path] | None = None,
    settings: RowSettings | None = None,
    capture: tuple[str, dict] | None = None,
    by_reference: bool = False,
    seen: dict[str, str] | None = None,
):
    """Check corpus images (same checks as ingest), store those that need it (all of them unless
    `by_reference`), and return (rows, rejects, `vehicles` notes). `limits`: (`data.max_pixels`,
    `data.max_edge`). With `boxes` (the folder's
    annotations and the folder) and/or a detector, one row per vehicle. `seen`: the ids of earlier
    runs (a duplicate of one is rejected)."""
    rows, rejects = frame_rows(
        items, images_dir, root, source, limits, boxes=boxes, capture=capture, by_reference=by_reference, seen=seen
    )
    rejects = [{"path": x.path, "reason": x.reason} for x in rejects]
    notes: dict = {}
    if settings is not None:  # `index add` (no settings): photos as they are
        rows, bad, notes = vehicles(rows, root, images_dir, settings)
        rejects += bad
    out = []
    for r in rows:
        p = (pairs or {}).get(r["id"], {})
        out.append(_row(r, p, known(r.get("labels")) or known(p.get("labels")), r.get("origin") or ""))
    return out, rejects, notes


def gather(
    cfg: Index, paths: Paths, splits: Iterable[str], settings: RowSettings, root: Path, images_dir: Path, progress=None
) -> tuple[pa.Table, list[dict], dict]:
    """(rows sorted by id, as `row_table` columns; rejects; `vehicles` notes) of the corpus `cfg`
    names (`splits`: curate.splits, whose pairs give captions). A folder or S3 corpus is read `RUN`
    files at a time: no list of every row's dict."""
    kind = cfg.corpus
    pairs = pairs_by_id(resolve(paths.pairs_dir, root), splits)
    if kind == "ingested":
        manifest = resolve(paths.manifest, root)
        if not manifest.is_file():
            raise FileNotFoundError(f"index.corpus=ingested: {manifest} not found; run the ingest stage first")
        rows, rejects, notes = ingested_rows(manifest, pairs, root, images_dir, settings)
        return row_table(rows).sort_by("id"), rejects, notes
    where = cfg.corpus_path
    if not where:
        raise ValueError(
            f"index.corpus_path: not set; index.corpus={kind} needs the {'folder' if kind == 'folder' else 's3:// prefix'} to index"
        )
    parts, rejects = [], []
    notes: dict = {"detected_frames": 0, "frames_without_vehicle": [], "tracks": 0}
    for rows, bad, got in corpus_runs(kind, where, cfg, settings, root, images_dir, pairs, progress):
        parts.append(row_table(rows))
        rejects += bad
        for k in notes:
            notes[k] += got.get(k) or type(notes[k])()
    table = pa.concat_tables(parts) if parts else row_table([])  # no file at all: no run
    return table.sort_by("id"), rejects, notes


def corpus_runs(
    kind: str,
    where,
    cfg: Index,
    settings: RowSettings,
    root: Path,
    images_dir: Path,
    pairs=None,
    progress=None,
    seen=None,
):
    """The index rows of a folder or S3 corpus as a build makes them, `RUN` files at a time:
    (rows, rejects, `vehicles` notes) per run. One row builder for build_index and `index add`:
    the folder's box annotations (else the detector), video frames and tracks, camera and capture
    time (`data.capture`, relative to the folder), crops under `images_dir`, captions from `pairs`.
    A folder's unreadable annotation files come first, as a run with no rows."""
    folder, ann = None if kind == "s3" else resolve(where, root), None
    if kind == "folder":
        items, ann = folder_items(folder, cfg.subfolder_key, cfg.labels_csv, settings.data.video)
    else:
        items = source_items(kind, str(where), cfg)
    if ann is not None and ann.problems:
        yield [], [{"path": p, "reason": r} for p, r in ann.problems], {}
    seen = {} if seen is None else seen
    capture = (str(folder) if folder is not None else str(where), settings.data.capture)
    for run in file_runs(progress(items) if progress else items, RUN):
        yield stored_rows(
            run,
            images_dir,
            root,
            kind,
            (settings.data.max_pixels, settings.data.max_edge),
            pairs,
            boxes=(ann, folder) if ann is not None else None,
            settings=settings,
            capture=capture,
            by_reference=True,
            seen=seen,
        )
