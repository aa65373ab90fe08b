"""benchmarks/bench_tracks.py on a small rendered corridor: every camera's mp4 decodes through the
video path frame for frame with its MOT file, the linked tracks cover every ground-truth box (the
tracker is measured, not a detector), and identities are counted across cameras."""

from __future__ import annotations

import importlib.util

from carsearch.detection.mot import read_mot
from carsearch_world import build_fleet, render_corridor, write_coco, write_mot, write_videos
from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_tracks", REPO / "benchmarks" / "bench_tracks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_corridor_videos_track_against_their_mot_files(tmp_path):
    bench = _bench()
    types = dict.fromkeys(("sedan", "suv", "van", "bus"), 1.0)
    fleet = build_fleet(1, 30, types, {"white": 0.5, "red": 0.5}, {}, 2, "us")
    items = render_corridor(fleet, tmp_path / "f", seed=3, sessions=1, cameras=2, spacing_m=30, frames_per_camera=6,
                            interval_s=1.0, moving=12, parked=2, size=(200, 150), workers=1)  # fmt: skip
    mot, coco = write_mot(items, tmp_path / "mot"), write_coco(items, tmp_path / "coco")
    videos = write_videos(items, tmp_path / "video", 1.0)
    total_ids = 0
    for v, m in zip(videos, mot):
        gt = read_mot(m)
        got = bench.track_video(v, gt)
        assert got["gt"] == sum(len(b) for b in gt.values()) > 0
        assert (got["matches"], got["fp"], got["fn"]) == (got["gt"], 0, 0)  # every box in exactly one track
        assert 0 <= got["idsw"] <= got["gt"] and got["tracks"] >= got["objects"] - got["idsw"]
        assert got["mota"] == 1 - got["idsw"] / got["gt"]
        total_ids += got["objects"]
    cc = bench.cross_camera(coco[0].parent)
    assert cc["identities"] <= total_ids and 0 < cc["multi_camera"] <= cc["identities"]
    assert cc["moving_share"] >= cc["share"] * 0.99
