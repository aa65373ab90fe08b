"""Frame rows: the first half of the one row builder. Source items in, manifest rows out: each image
checked and stored (or referenced) by `sources.files.ingest_items`, given its boxes (a renderer's
exact ones, or a folder's annotation files) and its camera and capture time. Ingest writes these
rows as its manifest; build_index and `index add` turn them into index rows
(`carsearch.curation.corpus`: the detector, the vehicle crops, video tracks), so the three read a
source the same way."""

from __future__ import annotations

from pathlib import Path

from carsearch.core.schema import Video
from carsearch.detection import footage
from carsearch.sources import boxes as boxes_mod
from carsearch.sources import files as data


def folder_items(folder: Path, subfolder_key: str | None, labels_csv: str, video: Video):
    """(items, annotations) of a folder as every reader takes it: the vehicle boxes beside the
    frames (COCO, YOLO, labels.csv: `sources.boxes`), every other file (the annotation files
    skipped), a video's sampled frames in place of the video."""
    ann = data.folder_boxes(folder, labels_csv)
    items = data.iter_folder(folder, subfolder_key, labels_csv, skip=ann.files)
    return footage.expand_videos(items, video.fps, video.max_frames), ann


def frame_rows(
    items,
    images_dir: Path,
    root: Path,
    source: str,
    limits: tuple[int | None, int | None],
    *,
    rendered: tuple[dict, dict] | None = None,
    boxes: tuple[boxes_mod.Annotations, Path] | None = None,
    capture: tuple[str, dict] | None = None,
    by_reference: bool = False,
    seen: dict[str, str] | None = None,
) -> tuple[list[dict], list[data.Rejected]]:
    """(manifest rows, rejects) of source items (name, bytes, labels, error). `limits`:
    (`data.max_pixels`, `data.max_edge`); `rendered`: a renderer's (boxes, (camera, time)) by
    origin; `boxes`: a folder's annotations and the folder; `capture`: (the folder or s3:// prefix
    names are relative to, `data.capture`); `by_reference` and `seen`: `sources.files.ingest_items`.
    Row paths are relative to `root`."""
    rows, rejects = data.ingest_items(items, images_dir, root, source, *limits, by_reference=by_reference, seen=seen)
    if rendered is not None:
        _stamp_rendered(rows, *rendered)
    if boxes is not None:  # boxes in each frame's stored pixels; checked and cropped where pairs and rows are made
        boxes_mod.attach(rows, *boxes)
    if capture is not None:
        footage.stamp_capture(rows, *capture, root)
    return rows, rejects


def _stamp_rendered(rows: list[dict], boxes: dict, capture: dict) -> None:
    """A renderer's exact boxes (stored as rendered: the same pixels) and camera and time, by origin."""
    for r in rows:
        if r["origin"] in boxes:
            r["boxes"] = [{**b, "frame": r["id"]} for b in boxes[r["origin"]]]
        if r["origin"] in capture:  # the street camera network: which camera, when
            r["camera"], r["time"] = capture[r["origin"]]
