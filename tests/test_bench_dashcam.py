"""benchmarks/bench_dashcam.py's per-vehicle ranks, on a hand-made result list: raw rank, rank with
only other colours counted against it, rank within its frame."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dashcam", REPO / "benchmarks" / "bench_dashcam.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vehicle_ranks_count_other_colours_and_frames():
    bench = _bench()
    cars = bench.vehicles(json.loads(bench.COCO.read_text()))
    assert len(cars) == 9 and {c["color"] for c in cars} == {"black", "white"}
    white = [c for c in cars if c["color"] == "white"]
    black = [c for c in cars if c["color"] == "black"]
    # a white car first, then a black one and the box-less frame, then the other white cars
    order = [white[0], black[0], {"file": "test2.jpg", "box": None}, *white[1:], *black[1:]]
    hits = [{"file": c["file"], "box": c["box"]} for c in order]
    got = {(r["file"], r["box"]): r for r in bench.ranks(hits, cars, "white")}
    assert len(got) == 5 and all(r["query"] == "a white car" for r in got.values())
    first, second = got[(white[0]["file"], white[0]["box"])], got[(white[1]["file"], white[1]["box"])]
    assert (first["rank"], first["rank_vs_other_colours"], first["rank_in_frame"]) == (1, 1, 1)
    # behind a black car and the whole frame: both count; the white car ahead of it does not
    same_frame = white[1]["file"] in (white[0]["file"], black[0]["file"])
    assert (second["rank"], second["rank_vs_other_colours"]) == (4, 3) and second["rank_in_frame"] == 1 + same_frame
