"""Where and when each frame was taken, and video files in a folder corpus.

`stamp_capture`: each row's camera and capture time (carsearch.sources.capture). Video: each is sampled at `data.video.fps` into frames that go through
the same reader, boxes and crops as photos (each frame timed from the video's start + its offset),
and the vehicles of consecutive frames are linked into tracks (carsearch.detection.video): the index
keeps one row per track (its best crop, first/last seen, the member boxes), so a search returns a
vehicle once, not once per frame."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from carsearch.core import originals
from carsearch.core.schema import Cameras, Capture
from carsearch.core.when import FRAME_TAG, split_frame_name  # noqa: F401  (re-exported; lives in core)
from carsearch.detection import motion
from carsearch.detection import video as video_mod
from carsearch.sources import capture as capture_mod

EXIF_BYTES = 256 * 1024


def is_video(name: str) -> bool:
    return Path(str(name)).suffix.lower() in video_mod.VIDEO_SUFFIXES


def expand_videos(items: Iterable[tuple], fps: float, max_frames: int | None) -> Iterator[tuple]:
    """Items (name, bytes, labels, error) with each video file replaced by its sampled frames (JPEG,
    named `<path>#t=<offset>s`); an unreadable video is one reject, as an unreadable photo is."""
    for name, data, labels, err in items:
        if err is not None or not is_video(name):
            yield name, data, labels, err
            continue
        try:
            for _, offset, _, im in video_mod.iter_frames(name, fps, max_frames=max_frames):
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=92)
                yield f"{name}#t={offset:.3f}s", buf.getvalue(), labels, None
        except (video_mod.VideoError, ValueError) as e:
            yield name, None, None, f"unreadable video ({str(e).splitlines()[0]})"


def video_start(path: str) -> float | None:
    """The video's start time from its metadata (None if it has none, or cannot be read)."""
    try:
        return video_mod.probe(path)["start_time"]
    except (video_mod.VideoError, OSError, ValueError):
        return None


def stamp_capture(rows: list[dict], base: str, capture: Capture, root: Path) -> None:
    """Give each row its `camera` and capture `time`: labels.csv columns, then `data.capture.pattern`
    on the path relative to `base` (a folder or s3:// prefix), then the original file's EXIF; a
    sampled video frame is timed from its video's start (the same sources, else the video's
    metadata) plus its offset."""
    pattern = capture_mod.parse_pattern(capture.pattern) if capture.pattern else None
    tz = capture.timezone
    starts: dict[str, float | None] = {}
    for r in rows:
        origin, offset = split_frame_name(str(r.get("origin") or ""))
        rel = origin[len(base) :].lstrip("/") if base and origin.startswith(base) else Path(origin).name
        if offset is not None:
            got = capture_mod.capture_info(rel, None, r.get("labels"), pattern, tz)
            if got["time"] is None:
                got["time"] = starts[origin] if origin in starts else starts.setdefault(origin, video_start(origin))
            r["camera"], r["time"] = got["camera"], None if got["time"] is None else got["time"] + offset
            continue
        src = Path(origin) if origin and not origin.startswith("s3://") and Path(origin).is_file() else None
        # EXIF sits in the file's first segments: never the whole photo again
        head = originals.read(src if src is not None else r["path"], Path(root), limit=EXIF_BYTES)
        with warnings.catch_warnings():  # a huge photo's header only: ingest's reader guards the pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            got = capture_mod.capture_info(rel, head, r.get("labels"), pattern, tz)
        r["camera"], r["time"] = got["camera"], got["time"]


def _annotated(r: dict) -> tuple | None:
    """The key of a still's annotated track: its box's `track_id` label (a COCO annotation's
    `track_id`, CVAT's `attributes.track_id`, a labels.csv column) with the annotation source and
    camera; None for a still without one, or without a camera and capture time."""
    tid = (r.get("labels") or {}).get("track_id")
    if r.get("box") is None or tid in (None, "") or r.get("camera") is None or r.get("time") is None:
        return None
    return str(r.get("box_source") or ""), str(r["camera"]), str(tid)


def _still_tracks(groups: dict[tuple, list[dict]], gap_s: float) -> list[list[dict]]:
    """Each annotated track's stills in time order, split where the same id is not seen for more
    than `gap_s` seconds (a track id a tool reuses in another clip, or the vehicle's next pass)."""
    out = []
    for _, members in sorted(groups.items()):
        members.sort(key=lambda r: (float(r["time"]), r["id"]))
        run = [members[0]]
        for r in members[1:]:
            if float(r["time"]) - float(run[-1]["time"]) > gap_s:
                out.append(run)
                run = []
            run.append(r)
        out.append(run)
    return out


def _track_row(best: dict, members: list[dict], key: str, camera, size) -> dict:
    """The row a track keeps: its best box's, dated by when it was first seen, with the members and motion."""
    times = [m["time"] for m in members if m["time"] is not None]
    return {
        **best,
        "time": min(times) if times else best.get("time"),
        "track_id": key,
        "first_seen": min(times) if times else None,
        "last_seen": max(times) if times else None,
        "track_json": json.dumps(members),
        **motion.track_motion(members, camera, size),
    }


def collapse_tracks(
    rows: list[dict], cameras: Cameras | None = None, still_gap_s: float | None = None
) -> tuple[list[dict], int]:
    """Vehicle rows linked into tracks: one row per track (the best box's row, with `track_id`,
    `first_seen`, `last_seen`, `track_json`: the member boxes, and its motion: `direction`, `speed`,
    `speed_unit`, `heading` by carsearch.detection.motion with the camera's settings in `cameras`).
    Sampled video frames are linked by the tracker; with `still_gap_s`, a camera's timed stills whose
    boxes carry an annotated `track_id` are one track per id (split at gaps over `still_gap_s`).
    Other photos and whole-frame rows pass through. Returns (rows, number of tracks)."""
    settings = (cameras or Cameras()).cameras
    by_video: dict[str, list[dict]] = {}
    annotated: dict[tuple, list[dict]] = {}
    out = []
    for r in rows:
        video, offset = split_frame_name(r.get("origin") or "")
        key = _annotated(r) if offset is None and still_gap_s is not None else None
        if key is not None:
            annotated.setdefault(key, []).append(r)
        elif offset is None or r.get("box") is None:
            out.append(r)
        else:
            by_video.setdefault(video, []).append({**r, "_offset": offset})
    n_tracks = 0
    for members in _still_tracks(annotated, still_gap_s or 0.0) if annotated else []:
        t0 = float(members[0]["time"])
        best = max(members, key=lambda r: (_area(r["box"]), r["id"]))
        boxes = [
            {"frame_id": r["frame_id"], "box": r["box"], "time": r["time"], "offset": float(r["time"]) - t0}
            for r in members
        ]
        key = f"{members[0]['frame_id']}-{members[0]['labels']['track_id']}"
        out.append(_track_row(best, boxes, key, settings.get(str(best.get("camera"))), motion.frame_size(members)))
        n_tracks += 1
    for video, vrows in sorted(by_video.items()):
        offsets = sorted({r["_offset"] for r in vrows})
        at = {o: i for i, o in enumerate(offsets)}
        frames: list[list[dict]] = [[] for _ in offsets]
        for r in vrows:
            x1, y1, x2, y2 = r["box"]
            frames[at[r["_offset"]]].append(
                {
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "class": r.get("box_class"),
                    "score": r.get("box_score") or 1.0,
                    "row": r,
                }
            )
        size = motion.frame_size(vrows)  # boxes cut by the frame's edge do not decide the motion
        for t in video_mod.link_tracks(frames, offsets):
            best = dict(t["best"]["row"])
            best.pop("_offset", None)
            members = [
                {
                    "frame_id": b["row"]["frame_id"],
                    "box": b["row"]["box"],
                    "time": b["row"].get("time"),
                    "offset": b["time"],
                }
                for b in t["boxes"]
            ]
            key = f"{best['frame_id']}-{t['track']}"
            out.append(_track_row(best, members, key, settings.get(str(best.get("camera"))), size))
            n_tracks += 1
    return out, n_tracks


def _area(box) -> float:
    return max(0.0, float(box[2]) - float(box[0])) * max(0.0, float(box[3]) - float(box[1]))
