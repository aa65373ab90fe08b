"""End to end on the default source, the street world: `dvc repro` on a small config through the
whole DAG -> single vehicles of every body type, corridor frames with a box per vehicle, pairs and
index rows per vehicle with their camera and time, and a search for a new body type."""

from __future__ import annotations

import json

import pytest

from conftest import copy_repo, run
from conftest import set_yaml as _set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("street") / "repo")
    assert "- data: street" in (repo / "conf/config.yaml").read_text()  # the default
    _set(repo / "conf/config.yaml", {"epochs": 2})
    _set(
        repo / "conf/data/_base.yaml",
        {
            "street.n_images": 60,
            "street.size": 96,
            "street.fleet.n_identities": 60,
            "street.corridor.sessions": 1,
            "street.corridor.frames_per_camera": 3,
            "street.corridor.size": [256, 192],
            "street.highway.frames": 2,
        },
    )
    run(["python", "scripts/compose_params.py"], repo)
    out = run(["dvc", "repro"], repo).stdout
    assert "vehicles in" in out, out[-3000:]
    return repo


def test_the_street_world_flows_through_the_dag(repo):
    manifest = [json.loads(x) for x in (repo / "data/raw/manifest.jsonl").read_text().splitlines()]
    singles = [m for m in manifest if m["origin"].startswith("cars/")]
    frames = [m for m in manifest if m["origin"].startswith("street/")]
    assert len(singles) == 60 and len(frames) == 12 + 2  # 4 cameras x 3 frames, and the highway's 2
    assert {m["labels"]["body_type"] for m in singles} >= {"bus", "motorcycle", "box truck", "pickup", "wagon"}
    assert all(f["camera"].startswith(("cam-", "hwy-")) and f["time"] for f in frames)
    assert sum(f["camera"] == "hwy-1" for f in frames) == 2
    assert (repo / "data/raw/mot").is_dir()
    pairs = [
        json.loads(x)
        for s in ("train", "val", "test")
        for x in (repo / f"data/pairs/{s}.jsonl").read_text().splitlines()
    ]
    assert any(p.get("box") is not None for p in pairs)
    idx = json.loads((repo / "metrics/index.json").read_text())
    assert idx["vehicles"] > 0
    ev = json.loads((repo / "metrics/eval.json").read_text())
    assert "finetuned" in ev


def test_search_finds_a_body_type_of_the_new_fleet(repo):
    from carsearch.index.search import CarSearch

    s = CarSearch(repo / "data/index")
    rows = s.table.to_arrow().to_pylist()
    assert any(r["camera"] and r["camera"].startswith("cam-") and r["time"] for r in rows if r["box"] is not None)
    hits = s.text("a white bus", k=5, where="body_type = 'bus'")
    buses = {r["id"] for r in rows if r["body_type"] == "bus"}
    assert hits and {h.id for h in hits} <= buses


def test_the_corridor_stills_are_indexed_as_tracks_with_motion(repo):
    """The corridor's stills carry the world's track ids: the index keeps one row per vehicle and
    camera pass, with first/last seen and an image direction, and `direction=` finds them."""
    from carsearch.index.search import CarSearch

    s = CarSearch(repo / "data/index")
    rows = [r for r in s.table.to_arrow().to_pylist() if (r["camera"] or "").startswith("cam-") and r["box"]]
    tracks = [r for r in rows if r["track_id"]]
    assert tracks and len(tracks) == len(rows)
    keys = {(r["camera"], json.loads(r["labels_json"])["identity"]) for r in tracks}
    assert len(keys) == len(tracks)  # one row per vehicle and camera
    moving = [r for r in tracks if len(json.loads(r["track_json"])) >= 2 and r["direction"]]
    assert moving and all(r["first_seen"] < r["last_seen"] for r in moving)
    way = moving[0]["direction"]
    hits = s.text("a car", k=50, where=f"direction = '{way}'")
    assert hits and all(h.direction == way for h in hits)
