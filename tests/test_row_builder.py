"""One row builder: ingest, build_index and `index add` read a source the same way
(carsearch.curation.frames, then carsearch.curation.corpus), the vehicle crops are cut once
(carsearch.curation.crops), and the vehicle classes have one declaration (carsearch.core.vocab)."""

from __future__ import annotations

import ast
import json
import os

import pytest
import yaml

from conftest import REPO, run
from test_vehicles import _frames
from testkit import composed_params

KEYS = ("id", "frame_id", "box", "box_class", "box_source", "camera", "time", "labels", "width", "height")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A folder of two traffic frames (labels.csv boxes: a red and a blue car each; camera and time
    from the file names) run through ingest -> make_jsonl -> caption_batch -> curate_pairs as DVC
    runs them (subprocesses, the offline captioner). Returns (workspace, frames folder)."""
    root = tmp_path_factory.mktemp("rows")
    frames = root / "frames"
    _frames(frames)
    (frames / "labels.csv").write_text(
        "file,x1,y1,x2,y2,color\n"
        + "".join(
            f"{cam}/{stamp}.jpg,20,60,120,120,red\n{cam}/{stamp}.jpg,180,70,300,140,blue\n"
            for cam, stamp in (("cam-a", "20260301_080000"), ("cam-b", "20260301_093000"))
        )
    )
    params = composed_params(
        {
            "data": {
                "source": "folder",
                "folder": {"path": str(frames), "subfolder_key": None},
                "capture": {"pattern": "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg", "timezone": "UTC"},
            },
            "caption": {"cache": {"enabled": False}},
        }
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text("stages: {}\n")
    for stage in ("ingest", "make_jsonl", "caption_batch"):
        run(["python", "-m", f"carsearch.stages.{stage}"], root)
    # two frames make too few pairs for its split check; its outputs are written before that check
    run(["python", "-m", "carsearch.stages.curate_pairs"], root, check=False)
    assert (root / "data/pairs/train.jsonl").is_file()
    return root, frames


def _settings(cfg, made=None):
    from carsearch.curation import corpus

    return corpus.RowSettings(cfg.data, cfg.curate.boxes, cfg.detect, cfg.train.seed, made)


def test_ingest_and_a_folder_corpus_make_the_same_rows(ingested):
    """The same folder ingested (then indexed as the `ingested` corpus) and indexed as a `folder`
    corpus (as `index add` of it does) gives the same vehicle rows: ids, frames, boxes, camera,
    capture time, labels and crop pixels."""
    from carsearch.core.params import load_config
    from carsearch.curation import corpus

    root, frames = ingested
    cfg = load_config(root / "params.yaml")
    via_ingest, _, _ = corpus.ingested_rows(root / cfg.paths.manifest, {}, root, root / "a/images", _settings(cfg))
    index = cfg.index.model_copy(update={"corpus": "folder", "corpus_path": str(frames), "subfolder_key": None})
    runs = corpus.corpus_runs("folder", frames, index, _settings(cfg), root, root / "b/images")
    via_folder = [r for rows, _, _ in runs for r in rows]

    def rows(rs):
        return sorted(({k: r.get(k) for k in KEYS} for r in rs), key=lambda r: r["id"])

    assert rows(via_ingest) == rows(via_folder) and len(via_ingest) == 4
    assert {r["camera"] for r in via_ingest} == {"cam-a", "cam-b"} and all(r["time"] for r in via_ingest)
    crop = {r["id"]: (root / r["path"]).read_bytes() for r in via_folder}
    assert all((root / r["path"]).read_bytes() == crop[r["id"]] for r in via_ingest)


def test_build_links_the_crops_curate_pairs_cut(ingested, monkeypatch):
    """build_index's corpus reader cuts no crop curate_pairs already cut: each vehicle row's crop
    is curate_pairs' file (a hard link), the same id; without those crops every one is cut again."""
    from carsearch.core.params import load_config
    from carsearch.curation import corpus, crops
    from carsearch.index import append, build
    from carsearch.sources import boxes as boxes_mod

    root, _ = ingested
    cfg = load_config(root / "params.yaml")
    made = crops.made(root / cfg.paths.pairs_dir)
    pair_ids = {
        p["id"]
        for s in cfg.curate.splits
        if (made.parent / f"{s}.jsonl").is_file()
        for p in map(json.loads, (made.parent / f"{s}.jsonl").read_text().splitlines())
        if p.get("box")
    }
    assert len(pair_ids) == 4 and len(list(made.glob("*.jpg"))) == 4
    cuts = []
    real = boxes_mod.crop
    monkeypatch.setattr(boxes_mod, "crop", lambda *a: cuts.append(a) or real(*a))
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))

    table, rejects, _ = build.read_corpus(cfg, root, root / "idx")
    vehicles = [r for r in table.to_pylist() if r["box"] is not None]
    assert {r["id"] for r in vehicles} == pair_ids and rejects == []
    assert cuts == []  # cut once, by curate_pairs
    assert all(os.path.samefile(root / r["path"], made / f"{r['id']}.jpg") for r in vehicles)
    assert append._settings(cfg, root).made_crops == made  # `index add` links them too

    rows, _, _ = corpus.ingested_rows(root / cfg.paths.manifest, {}, root, root / "c/images", _settings(cfg))
    assert len(cuts) == len([r for r in rows if r.get("box")]) == 4  # no crops made: each is cut


def test_vehicle_classes_have_one_declaration():
    """core/vocab declares the vehicle classes; the vehicles prompt and its answer check (the
    captioner's classes) and the detector (every class) derive from it: no module restates them.
    (The renderer's COCO category ids and the tiny detector's COCO labels are file formats' id
    orders, not vocabularies: those keep their own lists, within the classes.)"""
    from carsearch.captioning import formats, vehicles
    from carsearch.core import vocab
    from carsearch.detection import detect
    from carsearch_world.corridor import COCO_CATEGORIES

    assert f'"class": "{"|".join(vocab.CAPTION_CLASSES)}"' in formats.vehicles_prompt(320, 240)
    assert vehicles.CAPTION_CLASSES is vocab.CAPTION_CLASSES and detect.VEHICLE_CLASSES is vocab.VEHICLE_CLASSES
    assert set(vocab.CAPTION_CLASSES) < set(vocab.VEHICLE_CLASSES)
    assert set(COCO_CATEGORIES) <= set(vocab.CAPTION_CLASSES)
    restated = []
    for f in sorted((REPO / "src").rglob("*.py")):
        if f == REPO / "src/carsearch/core/vocab.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List)):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                words = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
                if {"car", "truck", "bus"} <= words and any(n.endswith("CLASSES") for n in names):
                    restated.append(f"{f.relative_to(REPO)}:{node.lineno} {names}")
    assert restated == []
