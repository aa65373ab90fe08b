"""End to end on the TORCS source (`data=torcs`, renders of TORCS cars) with multi-vehicle street frames: `dvc repro`
on a small config through the whole DAG -> one index row per vehicle (its crop and frame id), a
pair and a crop per vehicle for training and evaluation, vehicle- and frame-level metrics and
box recall in metrics/eval.json, and a search that returns a vehicle with its frame."""

from __future__ import annotations

import json
import re

import pytest

from conftest import copy_repo, run
from conftest import set_yaml as _set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from carsearch_world import default_torcs_dir, find_torcs_cars

    if not find_torcs_cars(default_torcs_dir()):
        pytest.skip("no TORCS car models (scripts/fetch_torcs.sh)")
    repo = copy_repo(tmp_path_factory.mktemp("traffic") / "repo")
    config = repo / "conf/config.yaml"
    config.write_text(re.sub(r"- data: \w+", "- data: torcs", config.read_text()))
    _set(repo / "conf/config.yaml", {"epochs": 2})
    _set(
        repo / "conf/data/_base.yaml",
        {"torcs.n_images": 48, "torcs.size": 96, "torcs.traffic.n_frames": 12, "torcs.traffic.size": [256, 192]},
    )
    run(["python", "scripts/compose_params.py"], repo)
    out = run(["dvc", "repro"], repo).stdout
    assert "vehicles in" in out and "box recall of llm boxes" in out, out[-3000:]
    return repo


def test_every_rendered_vehicle_is_a_row_a_pair_and_a_crop(repo):
    manifest = [json.loads(x) for x in (repo / "data/raw/manifest.jsonl").read_text().splitlines()]
    frames = [m for m in manifest if m.get("boxes")]
    assert len(frames) == 12 and len(manifest) == 60
    pairs = [
        json.loads(x)
        for s in ("train", "val", "test")
        for x in (repo / f"data/pairs/{s}.jsonl").read_text().splitlines()
    ]
    vehicle_pairs = [p for p in pairs if p.get("box") is not None]
    rejected = [json.loads(x) for x in (repo / "data/pairs/rejects.jsonl").read_text().splitlines()]
    n_boxes = sum(len(f["boxes"]) for f in frames)
    assert len(vehicle_pairs) + sum(r["reason"].startswith("bad vehicle") for r in rejected) == n_boxes
    for p in vehicle_pairs:  # trained and evaluated on its crop, with its frame beside it
        assert p["path"].startswith("data/pairs/crops/") and (repo / p["path"]).is_file()
        assert p["frame_path"].startswith("data/raw/images/") and p["frame_id"] in {f["id"] for f in frames}
    # vehicles of one frame never straddle splits
    split_of = {}
    for s in ("train", "val", "test"):
        for x in (repo / f"data/pairs/{s}.jsonl").read_text().splitlines():
            p = json.loads(x)
            if p.get("frame_id"):
                assert split_of.setdefault(p["frame_id"], s) == s

    idx = json.loads((repo / "metrics/index.json").read_text())
    assert idx["vehicles"] == len(vehicle_pairs) and idx["rows"] == 48 + len(vehicle_pairs)


def test_vehicle_level_metrics_and_box_recall(repo):
    ev = json.loads((repo / "metrics/eval.json").read_text())
    for model in ("base", "finetuned"):
        v = ev[model]["vehicles"]
        assert v["vehicles"] >= 2 and 0 <= v["vehicle"]["recall@1"] <= v["vehicle"]["recall@5"] <= 1
        assert 0 < v["vehicle"]["mrr"] <= 1 and 0 <= v["frame"]["recall@5"] <= 1
    # the offline captioner restates the renderer's boxes: what it misses are the boxes curate rejects
    # as too small (under curate.boxes.min_side)
    br = ev["box_recall"]["llm"]
    assert br["precision"] == 1.0 and 0.5 < br["recall"] <= 1.0


def test_a_vehicle_search_returns_the_crop_and_its_frame(repo):
    from carsearch.index.search import CarSearch

    s = CarSearch(repo / "data/index")
    rows = [r for r in s.table.to_arrow().to_pylist() if r["box"] is not None]
    target = max(rows, key=lambda r: (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    hit = s.image(repo / target["path"], k=1)[0]
    assert hit.id == target["id"] and hit.frame_id == target["frame_id"] and hit.box == target["box"]
    color, body = target["color"], target["body_type"]
    hits = s.text(
        f"a {color} {body}", k=5, where=f"color = '{color}' AND body_type = '{body}' AND box_source = 'render'"
    )
    assert hits and all(h.box is not None and h.frame_path.startswith("data/raw/images/") for h in hits)
    out = run(["carsearch", "search", f"a {color} {body}", "-k", "3", "--where", "box_source = 'render'"], repo).stdout
    assert "frame=" in out and "box=" in out


def test_box_recall_of_a_detector_on_the_same_test_frames(repo):
    """With `detect` naming a detector (here the random-init tiny RT-DETR: the code path, not a
    real detector), evaluate also scores its boxes against the renderer's on the same frames."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["detect"].update(tiny=True, threshold=0.0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["python", "-m", "carsearch.stages.evaluate"], repo).stdout
    br = json.loads((repo / "metrics/eval.json").read_text())["box_recall"]
    assert set(br) == {"llm", "detector"} and br["detector"]["truth"] == br["llm"]["truth"]
    assert br["detector"]["found"] > 0 and 0 <= br["detector"]["recall"] <= 1 and "box recall of detector" in out
