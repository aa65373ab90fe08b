"""Ground truth beside rendered frames, per session camera: MOTChallenge-style track files
(`write_mot`), COCO with every box's labels as attributes (`write_coco`) and an H.264 mp4 of the
frames (`write_videos`, colour-converted by `yuv420p` in integer NumPy, so the bytes are the same on
every run). Items are `render_corridor`'s / `render_highway`'s: (jpeg, frame labels, boxes, epoch s)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_mot(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path) -> list[Path]:
    """MOTChallenge-style ground truth, one file per session and camera:
    `frame,id,x,y,w,h,1,class,visibility` (frame 1-based, id = the identity's number)."""
    rows: dict[str, list[str]] = {}
    for _, lab, boxes, _ in items:
        key = f"session{lab['session']}_{lab['camera']}"
        for b in boxes:
            ident = int(b["labels"]["identity"].lstrip("v"))
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            rows.setdefault(key, []).append(
                f"{lab['frame_index'] + 1},{ident},{b['x1']},{b['y1']},{w},{h},1,{b['class']},{b['visible']:.3f}"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, lines in sorted(rows.items()):
        p = out_dir / f"{key}.txt"
        p.write_text("\n".join(sorted(lines, key=lambda s: tuple(int(v) for v in s.split(",")[:2]))) + "\n")
        paths.append(p)
    return paths


COCO_CATEGORIES = ("car", "pickup", "van", "truck", "bus", "motorcycle")  # the boxes' classes (`BOX_CLASS`)


def write_coco(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path) -> list[Path]:
    """COCO with attributes, one file per session and camera (beside `write_mot`'s): `images` (the
    frame's file name, size, camera, time, frame index), `categories` (`COCO_CATEGORIES`) and
    `annotations` (`bbox` [x, y, w, h] in pixels, `track_id` = the identity's number as in the MOT
    file, `attributes`: every label of the box, identity, plate, direction, speed, colour, body type,
    plus its `visibility`)."""
    cats = {name: k for k, name in enumerate(COCO_CATEGORIES, 1)}
    docs: dict[str, dict] = {}
    for p, lab, boxes, _ in sorted(items, key=lambda it: (it[1]["session"], it[1]["camera"], it[1]["frame_index"])):
        key = f"session{lab['session']}_{lab['camera']}"
        doc = docs.setdefault(key, {"images": [], "annotations": [], "categories": []})
        image_id = lab["frame_index"] + 1
        with Image.open(p) as im:
            w, h = im.size
        doc["images"].append(
            {"id": image_id, "file_name": p.name, "width": w, "height": h, "frame_index": lab["frame_index"],
             "camera": lab["camera"], "time": lab["time"]}
        )  # fmt: skip
        for b in boxes:
            x, y, bw, bh = b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]
            doc["annotations"].append(
                {"id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": cats[b["class"]],
                 "bbox": [x, y, bw, bh], "area": round(bw * bh, 2), "iscrowd": 0,
                 "track_id": int(b["labels"]["identity"].lstrip("v")),
                 "attributes": dict(b["labels"], visibility=round(float(b["visible"]), 3))}
            )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, doc in sorted(docs.items()):
        doc["categories"] = [{"id": k, "name": name, "supercategory": "vehicle"} for name, k in cats.items()]
        path = out_dir / f"{key}.json"
        path.write_text(json.dumps(doc) + "\n")
        paths.append(path)
    return paths


def yuv420p(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame (even width and height) as planar YUV 4:2:0 (BT.601, limited range) in integer
    NumPy, laid out as PyAV's `yuv420p` ndarray (Y rows, then U, then V). libswscale's conversion
    takes different SIMD paths depending on how the input buffer happens to be aligned, so the
    same frame could encode to different bytes from run to run; this conversion cannot."""
    h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"a yuv420p frame needs an even size, got {w}x{h}")
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # chroma from the 2x2 block means (rounded), as 4:2:0 samples it
    r2, g2, b2 = ((c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 2) >> 2 for c in (r, g, b))
    u = ((-38 * r2 - 74 * g2 + 112 * b2 + 128) >> 8) + 128
    v = ((112 * r2 - 94 * g2 - 18 * b2 + 128) >> 8) + 128
    planes = [y.reshape(-1), u.reshape(-1), v.reshape(-1)]
    return np.concatenate(planes).clip(0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def write_videos(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path, interval_s: float) -> list[Path]:
    """Each session's camera as an H.264 mp4 (PyAV) of its frames in order, one frame every
    `interval_s`, stamped with the first frame's time (`creation_time`), so the video path of a
    folder corpus reads it back with camera time."""
    groups: dict[str, list] = {}
    for p, lab, _, epoch in items:
        groups.setdefault(f"session{lab['session']}_{lab['camera']}", []).append((lab["frame_index"], p, epoch))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = Fraction(1 / interval_s).limit_denominator(1000)
    paths = []
    for key, frames in sorted(groups.items()):
        frames.sort()
        path = out_dir / f"{key}.mp4"
        with av.open(str(path), "w") as container:
            container.metadata["creation_time"] = datetime.fromtimestamp(frames[0][2], timezone.utc).isoformat()
            stream = container.add_stream("libx264", rate=rate)
            first = Image.open(frames[0][1])
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
            for _, p, _ in frames:
                frame = av.VideoFrame.from_ndarray(yuv420p(np.asarray(Image.open(p).convert("RGB"))), format="yuv420p")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        paths.append(path)
    return paths
