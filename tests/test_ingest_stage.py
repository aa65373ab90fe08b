"""The ingest stage as DVC runs it (a subprocess in a repo folder), on its fallbacks and bad input."""

import json

import yaml

from conftest import REPO, run
from testkit import merge


def _workspace(tmp_path, **data_over):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = merge(params["data"], data_over)
    params["data"]["demo"].update(n_images=12, size=48)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def test_torcs_source_without_the_data_falls_back_to_the_toy_set(tmp_path):
    ws = _workspace(tmp_path, source="torcs")
    p = run(["python", "-m", "carsearch.stages.ingest"], ws, env={"CARSEARCH_TORCS_DIR": str(tmp_path / "none")})
    assert "no TORCS car models under" in p.stdout and "using the toy demo set" in p.stdout
    rows = [json.loads(line) for line in (ws / "data/raw/manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["source"] == "demo" for r in rows)
    assert (ws / "metrics/plots/contact_sheet.png").is_file()


def test_folder_source_with_bad_files_keeps_going_and_reports(tmp_path, dashcam_dir):
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(dashcam_dir.glob("*.jpg"))[:2]:
        (src / f.name).write_bytes(f.read_bytes())
    (src / "truncated.jpg").write_bytes((dashcam_dir / "test3.jpg").read_bytes()[:5000])
    ws = _workspace(
        tmp_path / "ws", source="folder", folder={"path": str(src), "subfolder_key": None, "labels_csv": "labels.csv"}
    )
    p = run(["python", "-m", "carsearch.stages.ingest"], ws)
    assert (
        "rejected 1 x corrupt or truncated image: e.g. " in p.stdout
        and "truncated.jpg: corrupt or truncated image" in p.stdout
    )
    assert json.loads((ws / "metrics/ingest.json").read_text()) == {
        "images": 2,
        "labelled": 0,
        "rejected": 1,
        "reencoded": 0,
        "rejected_by_kind": {"corrupt or truncated image": 1},
    }


def test_missing_folder_is_one_line(tmp_path):
    ws = _workspace(tmp_path, source="folder", folder={"path": str(tmp_path / "nope"), "subfolder_key": None})
    p = run(["python", "-m", "carsearch.stages.ingest"], ws, check=False)
    assert p.returncode == 1
    assert p.stdout.strip().splitlines()[-1] == (
        f"error: params.yaml: data.folder.path = '{tmp_path / 'nope'}': "
        "no such folder (data.source is folder: give a directory of images)"
    )
    assert "Traceback" not in p.stdout


def test_torcs_source_renders_traffic_frames_with_a_box_per_car(tmp_path):
    """The default source renders multi-vehicle street frames beside the single-car images; each
    frame's manifest row holds the renderer's exact box (and labels) of every visible car."""
    from carsearch_world import default_torcs_dir, find_torcs_cars

    if not find_torcs_cars(default_torcs_dir()):
        import pytest

        pytest.skip("no TORCS car models (scripts/fetch_torcs.sh)")
    ws = _workspace(
        tmp_path, source="torcs", torcs={"n_images": 6, "size": 64, "traffic": {"n_frames": 4, "size": [160, 120]}}
    )
    run(["python", "-m", "carsearch.stages.ingest"], ws)
    rows = [json.loads(line) for line in (ws / "data/raw/manifest.jsonl").read_text().splitlines()]
    frames = [r for r in rows if r["origin"].startswith("traffic/")]
    assert len(rows) == 10 and len(frames) == 4 and all(not r.get("boxes") for r in rows if r not in frames)
    for f in frames:
        assert 1 <= len(f["boxes"]) <= 8 and (f["width"], f["height"]) == (160, 120)
        for b in f["boxes"]:
            assert b["frame"] == f["id"] and b["source"] == "render" and b["labels"]["color"]
            assert 0 <= b["x1"] < b["x2"] <= 160 and 0 <= b["y1"] < b["y2"] <= 120
