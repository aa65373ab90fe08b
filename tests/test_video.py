"""Video corpus files on real encoded clips (PyAV, no mocks): probe, frame sampling at a set fps with
capture times from `creation_time`, damaged files as one-line errors, and per-frame boxes linked into
one track per synthetic "car" (coloured rectangles moving at different speeds)."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import av
import numpy as np
import pytest

from carsearch.core.errors import CarsearchError
from carsearch.detection.video import VIDEO_SUFFIXES, VideoError, frame_id, iter_frames, link_tracks, probe

W, H, N, FPS = 160, 96, 64, 16
START = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc).timestamp()
BG = (40, 60, 40)
# Each car: colour, lane top y, size, x at native frame `enter`, speed in px per native frame, frames present.
CARS = [
    {"rgb": (230, 30, 30), "y": 8, "w": 30, "h": 18, "x0": 40, "v": 3.0, "frames": range(0, 39)},  # leaves right
    {"rgb": (30, 30, 230), "y": 38, "w": 26, "h": 16, "x0": 4, "v": 1.0, "frames": range(0, N)},
    {"rgb": (240, 230, 40), "y": 66, "w": 34, "h": 20, "x0": 150, "v": -2.0, "frames": range(0, N)},
    {"rgb": (230, 30, 30), "y": 8, "w": 30, "h": 18, "x0": -20, "v": 3.0, "frames": range(44, N)},  # a new car enters
]


def truth(car: dict, f: int) -> tuple[int, int, int, int] | None:
    """The car's visible box (clipped to the frame) at native frame f, or None when it is not in view."""
    if f not in car["frames"]:
        return None
    x = round(car["x0"] + car["v"] * (f - car["frames"].start))
    x1, x2 = max(0, x), min(W, x + car["w"])
    return (x1, car["y"], x2, car["y"] + car["h"]) if x2 - x1 >= 4 else None


def write_clip(path, codec: str = "libx264", creation_time: str | None = "2026-03-01T08:00:00Z") -> None:
    with av.open(str(path), "w") as c:
        if creation_time:
            c.metadata["creation_time"] = creation_time
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in range(N):
            a = np.empty((H, W, 3), np.uint8)
            a[:] = BG
            for car in CARS:
                b = truth(car, f)
                if b:
                    a[b[1] : b[3], b[0] : b[2]] = car["rgb"]
            for pk in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    p = tmp_path_factory.mktemp("video") / "street.mp4"
    write_clip(p)
    return p


def gt_boxes(offsets: list[float], video_id: str = "street") -> list[list[dict]]:
    """Ground-truth boxes for each sampled frame, from the synthetic positions."""
    frames = []
    for i, off in enumerate(offsets):
        row = []
        for k, car in enumerate(CARS):
            b = truth(car, round(off * FPS))
            if b:
                row.append(
                    {
                        "frame": frame_id(video_id, i),
                        "x1": b[0],
                        "y1": b[1],
                        "x2": b[2],
                        "y2": b[3],
                        "class": "car",
                        "score": 0.9,
                        "source": f"gt{k}",
                    }
                )
        frames.append(row)
    return frames


def test_probe_reads_duration_fps_size_and_start(clip):
    m = probe(clip)
    assert m["fps"] == FPS and (m["width"], m["height"]) == (W, H) and m["frames"] == N
    assert m["duration"] == pytest.approx(N / FPS, abs=0.07)
    assert m["start_time"] == START
    assert ".mp4" in VIDEO_SUFFIXES and frame_id("cam1", 7) == "cam1-f000007"


def test_iter_frames_samples_at_fps_with_capture_times(clip):
    got = list(iter_frames(clip, fps=4))
    assert [i for i, *_ in got] == list(range(16))
    assert [off for _, off, _, _ in got] == [k / 4 for k in range(16)]
    assert [t for _, off, t, _ in got] == [START + off for _, off, _, _ in got]
    for _, off, _, im in got:
        assert im.mode == "RGB" and im.size == (W, H)
        a = np.asarray(im).astype(int)
        for car in CARS:  # the frame is the one at the offset: each car's centre pixel has its colour
            b = truth(car, round(off * FPS))
            if b and b[2] - b[0] >= 8:
                assert np.abs(a[(b[1] + b[3]) // 2, (b[0] + b[2]) // 2] - car["rgb"]).max() < 40, (off, car["rgb"])


def test_iter_frames_first_frame_at_or_after_each_instant(clip):
    offs = [off for _, off, _, _ in iter_frames(clip, fps=3)]
    assert offs == [-(-k * FPS // 3) / FPS for k in range(len(offs))]  # ceil(k*16/3) native frames
    assert len(offs) == 12
    fast = [off for _, off, _, _ in iter_frames(clip, fps=50)]  # faster than the file: each frame once
    assert fast == [f / FPS for f in range(N)]
    few = list(iter_frames(clip, fps=4, start=1000.0, max_frames=3))
    assert [(i, off, t) for i, off, t, _ in few] == [(0, 0.0, 1000.0), (1, 0.25, 1000.25), (2, 0.5, 1000.5)]
    assert list(iter_frames(clip, fps=4, max_frames=0)) == []
    with pytest.raises(ValueError, match=r"^fps must be > 0, got 0$"):
        next(iter_frames(clip, fps=0))


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "mpeg4")])
def test_other_containers(tmp_path, suffix, codec):
    p = tmp_path / f"clip{suffix}"
    write_clip(p, codec)
    assert suffix in VIDEO_SUFFIXES
    m = probe(p)
    assert m["fps"] == FPS and (m["width"], m["height"]) == (W, H)
    assert m["duration"] == pytest.approx(N / FPS, abs=0.07)
    got = list(iter_frames(p, fps=4))
    assert [off for _, off, _, _ in got] == pytest.approx([k / 4 for k in range(16)], abs=1e-3)
    if suffix == ".avi":  # AVI keeps no creation_time: no start, no capture times
        assert m["start_time"] is None and all(t is None for _, _, t, _ in got)
    else:
        assert m["start_time"] == START and got[1][2] == pytest.approx(START + 0.25, abs=1e-3)


def test_no_creation_time_and_bad_creation_time(tmp_path):
    for stamp in (None, "not a date"):
        p = tmp_path / f"{stamp is None}.mp4"
        write_clip(p, creation_time=stamp)
        assert probe(p)["start_time"] is None
        _, off, t, _ = next(iter_frames(p, fps=4))
        assert (off, t) == (0.0, None)


def test_damaged_files_raise_one_line_video_error(tmp_path, clip):
    data = clip.read_bytes()
    cases = {"truncated.mp4": data[: len(data) // 2], "random.mp4": os.urandom(4096), "empty.mp4": b""}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    for name in [*cases, "missing.mp4"]:
        p = tmp_path / name
        for call in (lambda: probe(p), lambda: list(iter_frames(p, fps=4))):
            with pytest.raises(VideoError) as e:
                call()
            msg = str(e.value)
            assert isinstance(e.value, CarsearchError) and "\n" not in msg and str(p) in msg, msg


def test_link_tracks_one_track_per_car_with_first_and_last_seen(clip):
    got = list(iter_frames(clip, fps=4))
    offsets, times = [off for _, off, _, _ in got], [t for _, _, t, _ in got]
    frames = gt_boxes(offsets)
    tracks = link_tracks(frames, times)
    assert len(tracks) == len(CARS)  # the red car that leaves and the one that enters are two tracks
    assert sum(t["n"] for t in tracks) == sum(map(len, frames))
    by_source = {}
    for t in tracks:
        sources = {b["source"] for b in t["boxes"]}
        assert len(sources) == 1, sources  # one car per track
        by_source[sources.pop()] = t
    for k, car in enumerate(CARS):
        seen = [START + off for off in offsets if truth(car, round(off * FPS))]
        t = by_source[f"gt{k}"]
        assert (t["first_seen"], t["last_seen"]) == (seen[0], seen[-1])
        assert t["n"] == len(seen) and t["class"] == "car"
        assert all(b["time"] == START + offsets[int(b["frame"][-6:])] for b in t["boxes"])
        assert t["best"]["x2"] - t["best"]["x1"] == max(b["x2"] - b["x1"] for b in t["boxes"])
    assert [t["track"] for t in tracks] == [f"t{k}" for k in range(1, len(CARS) + 1)]
    # without times, sample indices stand in for them
    plain = link_tracks(frames)
    assert sorted((t["first_seen"], t["last_seen"]) for t in plain) == [(0, 9), (0, 15), (0, 15), (11, 15)]


def detect(im) -> list[dict]:
    """A toy colour detector on the decoded frame: one box per car colour blob."""
    a = np.asarray(im).astype(int)
    out = []
    for rgb in {c["rgb"] for c in CARS}:
        ys, xs = np.nonzero(np.abs(a - rgb).max(axis=2) < 50)
        if len(xs) > 20:
            out.append(
                {
                    "x1": int(xs.min()),
                    "y1": int(ys.min()),
                    "x2": int(xs.max()) + 1,
                    "y2": int(ys.max()) + 1,
                    "class": "car",
                    "score": 0.8,
                    "source": "toy",
                    "rgb": rgb,
                }
            )
    return out


def test_link_tracks_robust_on_detected_boxes_no_box_lost(clip):
    """Boxes from decoded pixels (a toy colour detector), then made harder: jitter, a dropped detection,
    a low-score frame of a tracked car, spurious low-score boxes (each its own track: a weak box never
    seeds one), a truck/car flip, a car entering mid-clip. Every box lands in exactly one track."""
    rng = np.random.default_rng(0)
    frames = []
    for i, _, _, im in iter_frames(clip, fps=4):
        row = []
        for b in detect(im):
            if b["rgb"] == (30, 30, 230) and i == 6:
                continue  # the blue car is missed once (within the lost buffer)
            j = rng.integers(-2, 3, 4)
            b.update(x1=b["x1"] + j[0], y1=b["y1"] + j[1], x2=b["x2"] + j[2], y2=b["y2"] + j[3])
            if b["rgb"] == (240, 230, 40) and i == 8:
                b["score"] = 0.15  # a weak detection of a tracked car: ByteTrack's second pass keeps it
            if b["rgb"] == (30, 30, 230) and i == 3:
                b["class"] = "truck"
            row.append({"frame": frame_id("street", i), **b})
        if i in (5, 6, 12):  # spurious weak boxes, two of them in the same place on consecutive frames
            x, y = (120, 40) if i < 12 else (60, 84)
            noise = {"x1": x, "y1": y, "x2": x + 10, "y2": y + 10, "class": "car", "score": 0.1, "rgb": None}
            row.append({"frame": frame_id("street", i), **noise, "source": "noise"})
        frames.append(row)
    tracks = link_tracks(frames)
    members = [(b["frame"], b["x1"], b["y1"]) for t in tracks for b in t["boxes"]]
    assert sorted(members) == sorted((b["frame"], b["x1"], b["y1"]) for row in frames for b in row)
    colours = sorted((t["boxes"][0]["rgb"] is None, t["n"]) for t in tracks)
    assert colours == [(False, 5), (False, 10), (False, 15), (False, 16), (True, 1), (True, 1), (True, 1)]
    for t in tracks:
        assert len({b["rgb"] for b in t["boxes"]}) == 1
        assert t["class"] == "car"


def test_appearance_rejoins_a_car_broken_by_a_long_occlusion(clip):
    offsets = [off for _, off, _, _ in iter_frames(clip, fps=4)]
    frames = gt_boxes(offsets)
    blue = [[b for b in row if b["source"] != "gt1" or not 5 <= i <= 10] for i, row in enumerate(frames)]
    assert len(link_tracks(blue)) == len(CARS) + 1  # gap 1.75 s > the 1 s lost buffer: the blue car splits
    palette = {f"gt{k}": np.eye(4)[[0, 1, 2, 0][k]] for k in range(len(CARS))}  # both red cars look alike
    emb = [[palette[b["source"]] + 0.05 * (i % 3) for b in row] for i, row in enumerate(blue)]
    tracks = link_tracks(blue, appearance=emb)
    assert len(tracks) == len(CARS)  # rejoined; the two red cars stay apart (one leaves right, one enters left)
    assert sorted(t["n"] for t in tracks) == [5, 10, 10, 16]
    blue_after = [t for t in tracks if t["boxes"][0]["source"] == "gt1"][0]
    assert (blue_after["first_seen"], blue_after["last_seen"]) == (0, 15)
    other = [
        [palette[b["source"]] if b["source"] != "gt1" or i < 5 else np.eye(4)[3] for b in row]
        for i, row in enumerate(blue)
    ]
    assert len(link_tracks(blue, appearance=other)) == len(CARS) + 1  # looks different after: not rejoined
    with pytest.raises(ValueError, match=r"^appearance needs one embedding per box, frame by frame$"):
        link_tracks(blue, appearance=emb[:-1])
