"""finetune_clip -> evaluate -> build_index in-process on a small set, with a real MLflow sqlite
store and model registry and a real LanceDB; the promotion gate; search on the result."""

import json

import pytest

from carsearch.index.promotion import promotion_decision
from testkit import write_pairs, write_params


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    write_pairs(root, {"train": 24, "val": 8, "test": 12})
    write_params(root, train={"epochs": 2})
    mp = pytest.MonkeyPatch()
    mp.setenv("CARSEARCH_ROOT", str(root))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    from carsearch.stages import build_index, evaluate, finetune_clip

    finetune_clip.main()
    evaluate.main()
    build_index.main()
    yield root
    mp.undo()


def test_train_outputs_and_mlflow_run(pipeline):
    root = pipeline
    train = json.loads((root / "metrics/train.json").read_text())
    assert (
        train["epochs_run"] == 2 and train["best_epoch"] in (1, 2) and train["early_stopping_metric"] == "val_recall@5"
    )
    assert not (root / "models/checkpoints/finetune_clip").exists()  # finished: nothing to resume
    run = json.loads((root / "models/finetuned/carsearch_run.json").read_text())
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{root / 'mlruns.db'}")
    r = c.get_run(run["mlflow_run_id"])
    assert r.data.params["train.lr"] == "0.002"
    assert len(c.get_metric_history(r.info.run_id, "train_loss")) == train["steps"]
    assert len(c.get_metric_history(r.info.run_id, "val_recall_at_5")) == 2
    assert "finetuned.text_to_image.recall_at_5" in r.data.metrics and "base.image_to_image.mrr" in r.data.metrics
    arts = {a.path for a in c.list_artifacts(r.info.run_id)} | {
        a.path for a in c.list_artifacts(r.info.run_id, "plots")
    }
    assert {"model", "eval.json", "plots/recall_at_k.png", "plots/examples.png"} <= arts
    mv = c.get_model_version(run["registered_model"]["name"], str(run["registered_model"]["version"]))
    assert mv.run_id == r.info.run_id and mv.tags["content_hash"] == run["content_hash"]
    assert "finetuned.text_to_image.recall_at_5" in mv.tags


def test_eval_json_and_plots(pipeline):
    ev = json.loads((pipeline / "metrics/eval.json").read_text())
    for name in ("base", "finetuned"):
        for d in ("text_to_image", "image_to_image"):
            assert {"recall@1", "recall@5", "recall@10", "map@10", "mrr"} <= set(ev[name][d])
        assert set(ev[name]["zero_shot"]) == {"color", "body_type", "model", "view"}
    csv = (pipeline / "metrics/plots/recall_at_k.csv").read_text().splitlines()
    assert csv[0] == "k,base_text_to_image,base_image_to_image,finetuned_text_to_image,finetuned_image_to_image"
    assert len(csv) == 11
    for png in ("recall_at_k.png", "examples.png"):
        assert (pipeline / "metrics/plots" / png).read_bytes()[:4] == b"\x89PNG"


def test_index_records_model_version_and_decision(pipeline):
    idx = json.loads((pipeline / "metrics/index.json").read_text())
    ev = json.loads((pipeline / "metrics/eval.json").read_text())
    assert idx["rows"] == 44 and idx["promotion"]["metric"] == "text_to_image.recall@5"
    ft, base = ev["finetuned"]["text_to_image"]["recall@5"], ev["base"]["text_to_image"]["recall@5"]
    want = "finetuned" if ft > base else "base"  # min_gain 0; no WiSE-FT candidates for a random-init base
    reason = idx["promotion"]["reason"]
    assert idx["model"] == want and idx["promotion"]["use"] == want, (idx["model"], reason)
    cmp = ">" if want == "finetuned" else "<="
    assert reason.startswith(
        f"on the test split: fine-tuned text_to_image.recall@5 {ft:.4f} {cmp} base {base:.4f} + min_gain 0"
    ), reason
    assert ("indexing with the base model" in reason) == (want == "base"), reason
    if want == "finetuned":
        run = json.loads((pipeline / "models/finetuned/carsearch_run.json").read_text())
        assert idx["registered_model"]["version"] == run["registered_model"]["version"]
        assert idx["registered_model"]["registry_checked"] and idx["content_hash"] == run["content_hash"]
    from carsearch.index.search import CarSearch

    s = CarSearch(root=pipeline)
    hits = s.text("a red sedan seen from the front", k=3)
    assert len(hits) == 3 and s.model_info["model"] == want


def test_promotion_gate_falls_back_to_base():
    ev = {"base": {"text_to_image": {"recall@5": 0.5}}, "finetuned": {"text_to_image": {"recall@5": 0.4}}}
    d = promotion_decision(ev, "text_to_image.recall@5")
    assert d["use"] == "base" and "did not pay" in d["reason"]
    assert promotion_decision(ev, "text_to_image.recall@5", min_gain=-0.2)["use"] == "finetuned"
    from carsearch.core.params import ParamsError

    with pytest.raises(ParamsError, match="not in eval.json"):
        promotion_decision(ev, "text_to_image.ndcg")


def test_base_model_index_is_searchable(pipeline, tmp_path, monkeypatch):
    """Force the gate to fail: the index is built with the saved base model and search loads it."""
    import shutil

    root = tmp_path / "r"
    shutil.copytree(pipeline, root)
    write_params(root, train={"epochs": 2}, index={"promote": {"metric": "text_to_image.recall@5", "min_gain": 5.0}})
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    from carsearch.stages import build_index

    build_index.main()
    idx = json.loads((root / "metrics/index.json").read_text())
    assert idx["model"] == "base" and idx["model_dir"] == "model" and "did not pay" in idx["promotion"]["reason"]
    meta = json.loads((root / "data/index/carsearch_index.json").read_text())
    assert (
        root / "data/index" / meta["version"] / "model" / "config.json"
    ).is_file()  # the base model travels in the index
    from carsearch.index.search import CarSearch

    assert len(CarSearch(root=root).image(root / "data/raw/images/img0000.jpg", k=2)) == 2


def test_readme_example_grids_from_the_built_index(pipeline, monkeypatch):
    """The summarize stage renders one top-k grid per README example query from the built index, each
    hit framed by whether it has what the query names (carsearch.experiments.examples)."""
    from PIL import Image

    from carsearch.experiments.examples import asked, relevant, slug

    assert asked("red pickup seen from behind") == {"color": "red", "body_type": "pickup", "view": "rear"}
    assert asked("a grey sports car") == {"color": "grey", "body_type": "sports car"} and asked("a car") == {}
    assert relevant({"color": "red", "view": "rear"}, {"color": "red"}) and not relevant({}, {"color": "red"})
    root = pipeline
    write_params(root, train={"epochs": 2}, examples={"queries": ["a red car", "a blue car"], "k": 3})
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    from carsearch.stages import summarize

    summarize.main()
    out = sorted((root / "docs/img/examples").iterdir())
    assert [p.name for p in out] == [f"{slug('a blue car')}.png", f"{slug('a red car')}.png"]
    with Image.open(out[1]) as im:
        assert im.width == 220 + 3 * (112 + 4)  # the query's label, then its top 3
