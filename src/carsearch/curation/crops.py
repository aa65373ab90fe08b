"""Vehicle crops, cut once. curate_pairs cuts each vehicle pair's crop into `<pairs_dir>/crops/`
(`crop_pairs`); build_index and `index add` link a crop already there instead of cutting it again
(`made`, passed as `corpus.RowSettings.made_crops`). Both cut with `sources.boxes.save_crops`, and
a crop's id (`sources.boxes.vehicle_id`: frame, box, margin) names the same pixels in both."""

from __future__ import annotations

from pathlib import Path

from carsearch.sources.boxes import save_crops

CROPS = "crops"  # a vehicle pair's image: its crop of the frame (`path`; the frame stays in `frame_path`)


def made(pairs_dir: Path) -> Path:
    """Where curate_pairs keeps the crops it cut."""
    return Path(pairs_dir) / CROPS


def crop_pairs(rows: list[dict], root: Path, out_dir: Path, rel_dir: str) -> None:
    """Vehicle pairs (a `box` in a frame) get their crop (curate.boxes.margin of context) under
    `out_dir` as `path` (`rel_dir`: that folder relative to `root`); the frame goes to `frame_path`."""
    by_frame: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("box") is not None:
            by_frame.setdefault(r["path"], []).append(r)
    for frame, vs in by_frame.items():
        boxes = [dict(zip(("x1", "y1", "x2", "y2"), v["box"])) for v in vs]
        save_crops(Path(root) / frame, boxes, float(vs[0]["margin"]), out_dir, [v["id"] for v in vs])
        for v in vs:
            v["frame_path"], v["path"] = frame, f"{rel_dir}/{v['id']}.jpg"
