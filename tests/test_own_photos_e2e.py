"""End to end on the user's own photos: a folder whose only labels are colour sub-folders (plus real
dashcam frames with no label at all) runs the whole DAG with the offline captioner; partial labels
train colour queries, unlabelled images are summarised once and still indexed, evaluation runs the
queries the labels support and says which it skipped, and `carsearch search "a red car"` finds red."""

import json
import re
import shutil

import pytest

from conftest import DASHCAM, copy_repo, run
from conftest import set_yaml as _set
from test_pipeline_e2e import _hits

pytestmark = pytest.mark.slow
COLORS = ("red", "blue", "white", "yellow")


@pytest.fixture(scope="module")
def photos_repo(tmp_path_factory):
    from carsearch.sources.demo import demo_items

    base = tmp_path_factory.mktemp("own")
    photos = base / "My Photos"
    for i, (_, data, labels, _) in enumerate(demo_items(192, 80, seed=11, colors=list(COLORS))):
        d = photos / labels["color"]  # the colour folder is the only label
        d.mkdir(parents=True, exist_ok=True)
        (d / f"IMG_{i:04d}.jpg").write_bytes(data)
    n_dashcam = 0
    if DASHCAM.is_dir():  # real frames, unlabelled
        (photos / "unsorted").mkdir()
        for f in sorted(DASHCAM.glob("*.jpg")):
            shutil.copy(f, photos / "unsorted" / f.name)
            n_dashcam += 1
    repo = copy_repo(base / "repo")
    config = repo / "conf/config.yaml"
    config.write_text(re.sub(r"- data: \w+", "- data: folder", config.read_text()))
    _set(config, {"epochs": 20, "lr": 5e-4, "batch_size": 32})
    _set(repo / "conf/data/_base.yaml", {"folder.path": str(photos)})
    run(["python", "scripts/compose_params.py"], repo)
    out = run(["dvc", "repro"], repo).stdout
    return repo, photos, n_dashcam, out


def test_whole_dag_on_colour_folders(photos_repo):
    repo, photos, n_dashcam, out = photos_repo
    n_photos = sum(1 for _ in photos.rglob("*.jpg"))
    manifest = (repo / "data/raw/manifest.jsonl").read_text().splitlines()
    assert len(manifest) == n_photos
    pairs = [
        json.loads(l)
        for s in ("train", "val", "test")
        for l in (repo / f"data/pairs/{s}.jsonl").read_text().splitlines()
    ]
    assert pairs and all(set(p["labels"]) == {"color"} for p in pairs)
    assert all(p["attributes"]["view"] == "unknown" for p in pairs)
    ev = json.loads((repo / "metrics/eval.json").read_text())
    assert ev["queries"]["attributes"] == ["color"]
    assert set(ev["queries"]["skipped"]) >= {"text_to_image.body_type", "text_to_image.view", "image_to_image"}
    assert "evaluate: skipped text_to_image.view queries" in out
    idx = json.loads((repo / "metrics/index.json").read_text())
    assert idx["rows"] == n_photos  # unlabelled images are searchable too


def test_unlabelled_real_frames_are_summarised_once_and_indexed(photos_repo, dashcam_dir):
    """The real dashcam frames (no label at all): one summary line with the count and the fix, and
    every one of them indexed. Skipped, with the reason, without ../shared/fixtures/dashcam."""
    repo, photos, n_dashcam, out = photos_repo
    assert n_dashcam == len(list(dashcam_dir.glob("*.jpg"))) > 0
    lines = [l for l in out.splitlines() if "no labels" in l]
    assert len(lines) == 1 and f"{n_dashcam} " in lines[0] and "bedrock" in lines[0], lines
    origins = [json.loads(l).get("origin") or "" for l in (repo / "data/raw/manifest.jsonl").read_text().splitlines()]
    assert sum("unsorted/" in o for o in origins) == n_dashcam, origins[:5]


def test_search_a_red_car_finds_a_red_one_first(photos_repo):
    repo, *_ = photos_repo
    manifest = {json.loads(l)["id"]: json.loads(l) for l in (repo / "data/raw/manifest.jsonl").read_text().splitlines()}
    for color in ("red", "yellow"):
        rows = _hits(run(["carsearch", "search", f"a {color} car", "-k", "3"], repo).stdout)
        assert (manifest[rows[0][2]]["labels"] or {}).get("color") == color, rows
