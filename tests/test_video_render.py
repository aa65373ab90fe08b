"""A real mp4 (PyAV, libx264) of RENDERED TORCS cars driving along a road: one traffic scene rendered
once per video frame with each car moved a little along its heading, the renderer's exact boxes in
labels.csv for each sampled frame, indexed by the real build_index stage; the cars are linked into
tracks, so a search returns each car once, with first/last seen from its first/last sampled frame."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest

from carsearch_world import default_torcs_dir, find_torcs_cars
from test_index_corpus import _build, repo  # noqa: F401  (pytest fixture + helper)

PICK = ("baja-bug", "acura-nsx-sz", "155-DTM")  # few triangles: quick to load and render
SIZE = (256, 192)
FPS, SECONDS, SAMPLE_FPS = 8, 3, 4.0
SPEED = 2.0  # m/s: slow enough that a car's boxes in consecutive sampled frames overlap well
SEED = 3  # a clear day, three cars in view
CREATED = "2026-03-01T08:00:00Z"
START = datetime(2026, 3, 1, 8, 0, 0, tzinfo=timezone.utc).timestamp()


def _real_cars():
    return [d for d in find_torcs_cars(default_torcs_dir()) if d.name in PICK]


def _iou(a: dict, b: dict) -> float:
    ix = max(0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return inter / (area - inter)


@pytest.mark.skipif(len(_real_cars()) < len(PICK), reason="torcs-data not fetched (run scripts/fetch_torcs.sh)")
def test_rendered_cars_in_a_video_are_linked_into_one_track_each(repo, tmp_path):  # noqa: F811
    import av
    import numpy as np
    import yaml
    from PIL import Image

    from carsearch.index.search import CarSearch
    from carsearch_world import load_car
    from carsearch_world.traffic import render_traffic_frame, render_traffic_spec
    from carsearch_world.traffic_scene import rot

    cars = [load_car(d) for d in _real_cars()]
    first = render_traffic_frame(
        cars, SEED, size=SIZE, camera="pole", models=[0, 1, 2], car_colors=["red", "blue", "yellow"]
    )
    spec = first.spec
    assert len(spec.cars) == 3, spec.cars

    def at(t: float):
        """The scene `t` seconds on: every car moved SPEED * t metres along its heading."""
        moved = []
        for p in spec.cars:
            dx, dy = rot(SPEED * t, 0.0, p.heading)
            moved.append(dataclasses.replace(p, x=p.x + float(dx), y=p.y + float(dy)))
        return render_traffic_spec(cars, dataclasses.replace(spec, cars=moved), SIZE)

    folder = tmp_path / "clips"
    (folder / "cam-3").mkdir(parents=True)
    frames = [at(f / FPS) for f in range(FPS * SECONDS)]
    with av.open(str(folder / "cam-3" / "road.mp4"), "w") as c:
        c.metadata["creation_time"] = CREATED
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for fr in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(np.asarray(fr.image), format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)

    # the renderer's exact boxes of each sampled frame (offset i / SAMPLE_FPS = video frame i * FPS / SAMPLE_FPS)
    offsets = [i / SAMPLE_FPS for i in range(int(SECONDS * SAMPLE_FPS))]
    sampled = {t: frames[round(t * FPS)] for t in offsets}
    lines = ["file,t,x1,y1,x2,y2,class,color"]
    seen: dict[int, list[tuple[float, dict]]] = {}  # slot -> (offset, box) of each sampled frame it is in
    for t, fr in sampled.items():
        for b in fr.boxes:
            lines.append(f"cam-3/road.mp4,{t},{b['x1']},{b['y1']},{b['x2']},{b['y2']},car,{b['labels']['color']}")
            seen.setdefault(b["car"], []).append((t, b))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    for slot, got in seen.items():  # the truth holds together: consecutive samples of a car overlap
        assert all(_iou(a, b) > 0.3 for (_, a), (_, b) in zip(got, got[1:])), (slot, got)
        assert [t for t, _ in got] == offsets[offsets.index(got[0][0]) : offsets.index(got[-1][0]) + 1], slot
    n = len(seen)
    assert n >= 2, seen

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["video"] = {"fps": SAMPLE_FPS, "max_frames": None}
    params["data"]["capture"] = {"pattern": "{camera}/{*}.mp4", "timezone": "UTC", "track_gap_s": 60}
    params["curate"]["boxes"]["min_side"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(repo, corpus="folder", corpus_path=str(folder), subfolder_key=None)
    print(f"tracks: {m['tracks']}")
    assert m["tracks"] == n and m["rows"] == n, m

    search = CarSearch(repo / "data/index")
    rows = search.table.to_arrow().to_pylist()
    assert len(rows) == n and {r["camera"] for r in rows} == {"cam-3"} and len({r["track_id"] for r in rows}) == n
    slot_of = {(t, (b["x1"], b["y1"], b["x2"], b["y2"])): slot for slot, got in seen.items() for t, b in got}
    tracked = set()
    for r in rows:
        members = json.loads(r["track_json"])
        slots = {slot_of[(round(x["offset"], 3), tuple(int(v) for v in x["box"]))] for x in members}
        assert len(slots) == 1, (r["track_id"], members)  # a track is one car, never two
        slot = slots.pop()
        tracked.add(slot)
        assert len(members) == len(seen[slot])  # and every sampled box of that car
        assert r["first_seen"] == pytest.approx(START + seen[slot][0][0], abs=1e-3)
        assert r["last_seen"] == pytest.approx(START + seen[slot][-1][0], abs=1e-3)
        assert r["color"] == spec.cars[slot].color
        crop = repo / r["path"]
        assert crop.is_file() and Image.open(crop).size[0] > 0
    assert tracked == set(seen)

    hits = search.text("a car", k=10)
    assert len(hits) == n and len({h.track_id for h in hits}) == n  # each car once, not once per frame
