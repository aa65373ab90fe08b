"""Video files in a folder corpus: probe, sample frames at a set rate, link per-frame vehicle boxes into tracks.

`probe(path)`: duration, native fps, size, frame count, start time (the container's `creation_time`
tag, ISO 8601, as unix seconds; None when absent). `iter_frames(path, fps)` yields `(index, offset_s,
time_or_None, PIL RGB image)`: for each instant k/fps after the first frame, the first decoded frame whose
pts*time_base is at or after it, each frame at most once (a file slower than `fps` gives every frame),
only kept frames converted; `time = start + offset` when a start is known. A damaged or unreadable
file raises `VideoError`, one line naming the file and av's reason.

`link_tracks` turns per-frame boxes (the `boxes` contract) into one record per vehicle, so a search
returns a car once, not once per frame. Association is ByteTrack's (Zhang et al. 2022), written here on
`sv.Detections`/`sv.box_iou_batch` because supervision removed `sv.ByteTrack` in 0.30 (now the
separate `trackers` package):
  1. boxes scoring >= `track_activation_threshold` are matched (Hungarian) to every live track, tracked
     or lost for up to `lost_seconds`, by IoU with the track's constant-velocity prediction;
  2. low-scoring boxes are matched to the still unmatched tracks seen in the previous frame
     (IoU >= max(iou_threshold, 0.5), ByteTrack's stricter second pass);
  3. an unmatched high box starts a track at once (minimum_consecutive_frames=1, so a car entering
     mid-clip keeps its first box); an unmatched low box is its own single-box track. No box is dropped.
Optional appearance embeddings (e.g. CLIP crops) then merge track B into an earlier track A when B
starts at most `merge_gap_seconds` after A ends, their mean embeddings have cosine >= `merge_cosine`,
and B's first box is within reach of A's last (`merge_speed` box diagonals per second, plus one): this
re-joins a car split by an occlusion longer than the lost buffer; tracks overlapping in time never merge.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
from PIL import Image

from carsearch.core.errors import CarsearchError

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov"}


class VideoError(CarsearchError, ValueError):
    """A video file that cannot be opened or decoded: one line naming the file and av's reason."""


def av_reason(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_video(path: Path):
    """A PyAV container of a video file with a video stream (VideoError, one line naming it, else)."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: unreadable video ({av_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def container_start(container) -> float | None:
    tags = {**container.streams.video[0].metadata, **container.metadata}
    raw = tags.get("creation_time")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # ffmpeg writes UTC; a naive stamp is taken as UTC
    t = when.timestamp()
    return t if t > 0 else None  # a zero stamp is a camera's "unset", not 1970


def _meta(container) -> dict:
    s = container.streams.video[0]
    rate = s.average_rate or s.guessed_rate or s.base_rate
    if s.duration is not None and s.time_base is not None:
        duration = float(s.duration * s.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    return {
        "duration": duration,
        "fps": float(rate) if rate else None,
        "width": s.codec_context.width,
        "height": s.codec_context.height,
        "frames": s.frames or None,
        "start_time": container_start(container),
    }


def probe(path: str | os.PathLike) -> dict:
    """{"duration": s, "fps": native fps, "width", "height", "frames": n or None, "start_time": unix s or None}."""
    path = Path(path)
    container = open_video(path)
    try:
        return _meta(container)
    finally:
        container.close()


def iter_frames(
    path: str | os.PathLike, fps: float, start: float | None = None, max_frames: int | None = None
) -> Iterator[tuple[int, float, float | None, Image.Image]]:
    """Yield (index, offset_seconds, time_or_None, RGB image) sampled at `fps`; `start` (unix seconds)
    defaults to the file's `creation_time`."""
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    path = Path(path)
    if max_frames is not None and max_frames <= 0:
        return
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start is None:
            start = container_start(container)
        native = float(stream.average_rate or stream.guessed_rate or 0) or None
        first = None
        due = 0  # the next sampling instant is due / fps seconds after the first frame
        n = 0
        try:
            for decoded, frame in enumerate(container.decode(stream)):
                t = frame.time
                if t is None:
                    t = decoded / native if native else float(decoded)
                first = t if first is None else first
                offset = t - first
                if offset + 1e-6 < due / fps:
                    continue
                yield n, round(offset, 6), (None if start is None else start + offset), frame.to_image()
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
                due = math.floor(offset * fps + 1e-6) + 1
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"{path}: damaged video after {n} sampled frames ({av_reason(e)})") from None
    finally:
        container.close()


def frame_id(video_id: str, index: int) -> str:
    """The id of a sampled frame: the video's id and the sample index."""
    return f"{video_id}-f{index:06d}"


def _predict(track: dict, i: int) -> np.ndarray:
    return track["box"] + track["vel"] * (i - track["last"])


def _supervision():
    """supervision (and scipy) load when footage is tracked, not when a stage imports the corpus code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenCV", category=UserWarning)
        import supervision

    return supervision


def _match(tracks: list[dict], boxes: np.ndarray, i: int, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian matching of tracks to boxes by IoU with each track's prediction; pairs under min_iou dropped."""
    from scipy.optimize import linear_sum_assignment

    if not tracks or not len(boxes):
        return []
    sv = _supervision()
    iou = sv.box_iou_batch(np.stack([_predict(t, i) for t in tracks]), boxes)
    rows, cols = linear_sum_assignment(np.where(iou >= min_iou, 1.0 - iou, 1e6))
    return [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


def _bytetrack(frames: list[list[dict]], iou_threshold: float, activation: float, buffer: int) -> list[list[int]]:
    """A track id per input box (ByteTrack's two-pass association; see the module docstring)."""
    sv = _supervision()
    tracks: list[dict] = []
    ids: list[list[int]] = []
    next_id = 0
    for i, boxes in enumerate(frames):
        det = sv.Detections(
            xyxy=np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes], float).reshape(-1, 4),
            confidence=np.array([float(b.get("score", 1.0)) for b in boxes], float),
            class_id=np.zeros(len(boxes), int),  # class-agnostic: a detector flipping car/truck keeps the track
        )
        det.tracker_id = np.full(len(det), -1, int)
        live = [t for t in tracks if i - t["last"] <= buffer]
        high = np.flatnonzero(det.confidence >= activation)
        low = np.flatnonzero(det.confidence < activation)
        pairs = [(live[r], high[c]) for r, c in _match(live, det.xyxy[high], i, iou_threshold)]
        taken = {id(t) for t, _ in pairs}
        recent = [t for t in live if id(t) not in taken and t["last"] == i - 1]
        pairs += [(recent[r], low[c]) for r, c in _match(recent, det.xyxy[low], i, max(iou_threshold, 0.5))]
        for t, k in pairs:
            step = i - t["last"]
            vel = (det.xyxy[k] - t["box"]) / step
            t["vel"] = vel if t["n"] == 1 else 0.5 * t["vel"] + 0.5 * vel
            t["box"], t["last"], t["n"] = det.xyxy[k], i, t["n"] + 1
            det.tracker_id[k] = t["id"]
        for k in np.flatnonzero(det.tracker_id < 0):
            det.tracker_id[k] = next_id
            if det.confidence[k] >= activation:  # a low box never seeds a track: it stays a single-box track
                tracks.append({"id": next_id, "box": det.xyxy[k], "vel": np.zeros(4), "last": i, "n": 1})
            next_id += 1
        tracks = [t for t in tracks if i - t["last"] <= buffer]
        ids.append(det.tracker_id.tolist())
    return ids


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _centre_diag(b: dict) -> tuple[np.ndarray, float]:
    c = np.array([(b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2])
    return c, math.hypot(b["x2"] - b["x1"], b["y2"] - b["y1"])


def _merge(groups: list[dict], frames, appearance, frame_rate, gap_s, cosine, speed) -> list[dict]:
    """Appearance merge (module docstring): greedy, earliest-starting tracks first, best cosine wins."""
    for g in groups:
        g["emb"] = _unit(np.mean([_unit(np.asarray(appearance[i][j], float)) for i, j in g["members"]], axis=0))
    out: list[dict] = []
    for g in sorted(groups, key=lambda g: g["members"][0]):
        first = g["members"][0][0]
        c_b, _ = _centre_diag(frames[first][g["members"][0][1]])
        best, best_cos = None, cosine
        for a in out:
            last = a["members"][-1][0]
            gap = (first - last) / frame_rate
            if not 0 < gap <= gap_s:
                continue
            c_a, diag = _centre_diag(frames[last][a["members"][-1][1]])
            cos = float(a["emb"] @ g["emb"])
            if cos >= best_cos and np.linalg.norm(c_b - c_a) <= diag * (1 + speed * gap):
                best, best_cos = a, cos
        if best is None:
            out.append(g)
        else:
            n_a, n_b = len(best["members"]), len(g["members"])
            best["emb"] = _unit((best["emb"] * n_a + g["emb"] * n_b) / (n_a + n_b))
            best["members"] += g["members"]
    return out


def link_tracks(
    frames: list[list[dict]],
    frame_times: list[float | None] | None = None,
    appearance: list[list[np.ndarray]] | None = None,
    iou_threshold: float = 0.3,
    frame_rate: float | None = None,
    lost_seconds: float = 1.0,
    track_activation_threshold: float = 0.25,
    merge_gap_seconds: float = 2.0,
    merge_cosine: float = 0.85,
    merge_speed: float = 6.0,
) -> list[dict]:
    """One record per track: {"track": "t<k>", "boxes": member boxes (+ "time"), "first_seen", "last_seen",
    "best": the box with the largest score*area, "class": majority class, "n"}.

    `frames[i]` are the boxes of sampled frame i; `frame_times[i]` its time (unix or offset seconds),
    else the sample index stands for it. `frame_rate` is the sampling rate (default: from the spacing of
    `frame_times`, else 4 fps); `lost_seconds` of it is the lost-track buffer (sv's lost_track_buffer).
    `iou_threshold` is the least IoU for a match (sv's minimum_matching_threshold is 1 - it).
    Tracks are numbered by first appearance."""
    if frame_times is not None and len(frame_times) != len(frames):
        raise ValueError(f"frame_times has {len(frame_times)} entries for {len(frames)} frames")
    if appearance is not None and [len(a) for a in appearance] != [len(f) for f in frames]:
        raise ValueError("appearance needs one embedding per box, frame by frame")
    times = list(frame_times) if frame_times is not None else list(range(len(frames)))
    if frame_rate is None:
        known = [(i, t) for i, t in enumerate(times) if t is not None]
        steps = [(t2 - t1) / (i2 - i1) for (i1, t1), (i2, t2) in zip(known, known[1:]) if t2 > t1]
        frame_rate = 1.0 / float(np.median(steps)) if frame_times is not None and steps else 4.0
    buffer = max(1, round(lost_seconds * frame_rate))
    ids = _bytetrack(frames, iou_threshold, track_activation_threshold, buffer)
    by_id: dict[int, list[tuple[int, int]]] = {}
    for i, row in enumerate(ids):
        for j, tid in enumerate(row):
            by_id.setdefault(tid, []).append((i, j))
    groups = [{"members": m} for m in by_id.values()]
    if appearance is not None:
        groups = _merge(groups, frames, appearance, frame_rate, merge_gap_seconds, merge_cosine, merge_speed)
    out = []
    for k, g in enumerate(sorted(groups, key=lambda g: g["members"][0]), start=1):
        members = [{"frame": i, **frames[i][j], "time": times[i]} for i, j in sorted(g["members"])]
        classes = [b.get("class") for b in members]
        weight = {c: sum(float(b.get("score", 0.0)) for b in members if b.get("class") == c) for c in classes}
        cls = max(dict.fromkeys(classes), key=lambda c: (classes.count(c), weight[c]))  # ties: the surer class
        best = max(members, key=lambda b: float(b.get("score", 0.0)) * (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]))
        seen = {"first_seen": members[0]["time"], "last_seen": members[-1]["time"]}
        out.append({"track": f"t{k}", "boxes": members, **seen, "best": best, "class": cls, "n": len(members)})
    return out
