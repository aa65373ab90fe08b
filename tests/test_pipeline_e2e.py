"""End to end: `dvc repro` on a tiny config in a temporary copy of the repo, then search, a no-op
repro, an experiment with `-S`, `dvc metrics diff` / `dvc params diff`, and bad overrides."""

import csv
import io
import json
import re
import time

import pytest
import yaml

from conftest import copy_repo, run
from conftest import set_yaml as _set

pytestmark = pytest.mark.slow


def _hits(out: str) -> list[list[str]]:
    """The result lines of `carsearch search` (rank, score, id, caption, path)."""
    return [line.split("\t") for line in out.splitlines() if line.split("\t")[0].isdigit()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    # a tiny config, written into conf/ so that `dvc exp run -S` re-compositions keep it
    config = repo / "conf/config.yaml"
    config.write_text(re.sub(r"- data: \w+", "- data: demo", config.read_text()))
    _set(config, {"epochs": 14, "lr": 5e-4, "batch_size": 32})
    _set(
        repo / "conf/data/_base.yaml",
        {"demo.n_images": 384, "demo.size": 64, "demo.colors": ["red", "blue", "yellow", "white"]},
    )
    run(["python", "scripts/compose_params.py"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny config"], repo)
    out = run(["dvc", "repro"], repo).stdout
    assert "build_index: " in out
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)
    return repo


def test_repro_outputs_and_metrics(repo):
    ev = json.loads((repo / "metrics/eval.json").read_text())
    for model in ("base", "finetuned"):
        for direction in ("text_to_image", "image_to_image"):
            m = ev[model][direction]
            assert 0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= 1
    assert ev["finetuned"]["text_to_image"]["recall@5"] > ev["base"]["text_to_image"]["recall@5"]
    idx = json.loads((repo / "metrics/index.json").read_text())
    manifest = (repo / "data/raw/manifest.jsonl").read_text().splitlines()
    pairs = sum(len((repo / f"data/pairs/{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test"))
    rejects = len((repo / "data/pairs/rejects.jsonl").read_text().splitlines())
    # the index is the corpus (every ingested image), not only the curated pairs
    assert len(manifest) == pairs + rejects == 384 and idx["rows"] == len(manifest) and idx["corpus"] == "ingested"
    for png in ("metrics/plots/recall_at_k.png", "metrics/plots/examples.png", "metrics/plots/contact_sheet.png"):
        assert (repo / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_search_finds_the_attribute_combination(repo):
    rows = _hits(run(["carsearch", "search", "a red sedan", "-k", "5"], repo).stdout)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    manifest = {
        json.loads(l)["id"]: json.loads(l)["labels"]
        for l in (repo / "data/raw/manifest.jsonl").read_text().splitlines()
    }
    hits = [manifest[r[2]] for r in rows]
    assert any(h["color"] == "red" and h["body_type"] == "sedan" for h in hits), hits


def test_image_search_and_python_api(repo):
    from carsearch.index.search import CarSearch

    first = json.loads((repo / "data/pairs/test.jsonl").read_text().splitlines()[0])
    rows = _hits(run(["carsearch", "search", "--image", first["path"], "-k", "3"], repo).stdout)
    assert len(rows) == 3 and rows[0][2] == first["id"]  # an indexed image finds itself first
    hits = CarSearch(root=repo).text("a blue car", k=4, where="color = 'blue'")
    assert len(hits) == 4 and all(h.labels["color"] == "blue" for h in hits)


def test_noop_repro_is_fast(repo):
    t = time.time()
    out = run(["dvc", "repro"], repo).stdout
    assert "didn't change" in out or "up to date" in out
    assert time.time() - t < 15


def test_train_on_one_set_index_a_folder_of_photos_without_llm(repo, tmp_path):
    """`-S index.corpus=folder -S index.corpus_path=...`: the model trained on the demo set indexes
    the user's photos; only build_index runs (no captioning), the index holds exactly the folder."""
    from carsearch.sources.demo import demo_items

    photos = tmp_path / "photos"
    n = 0
    for i, (_, data, labels, _) in enumerate(demo_items(24, 96, seed=7, colors=["red", "blue", "white"])):
        d = photos / labels["color"]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"cam {i:02d}.jpg").write_bytes(data)
        n += 1
    (photos / "notes.txt").write_text("not a photo")
    # runs while the workspace is the committed repro (before the tests that run other experiments):
    # `-S` recomposes params.yaml from conf/, so only the index settings differ from it
    caption_before = (repo / "metrics/caption.json").read_text()
    out = run(["dvc", "exp", "run", "-S", "index.corpus=folder", "-S", f"index.corpus_path={photos}"], repo).stdout
    assert "Running stage 'build_index'" in out
    for stage in ("ingest", "make_jsonl", "caption_batch", "curate_pairs", "finetune_clip"):
        assert f"Running stage '{stage}'" not in out, out[-2000:]
    assert (repo / "metrics/caption.json").read_text() == caption_before  # no LLM call, not even offline
    idx = json.loads((repo / "metrics/index.json").read_text())
    assert idx["corpus"] == "folder" and idx["rows"] == n and idx["rejected"] == 1
    from carsearch.index.search import CarSearch

    s = CarSearch(root=repo)
    origins = set(s.table.to_arrow().column("origin").to_pylist())
    assert origins == {str(p) for p in photos.rglob("*.jpg")}
    hits = s.text("a red car", k=3)
    assert len(hits) == 3 and all(h.labels.get("color") in ("red", "blue", "white") for h in hits)
    img_hits = _hits(
        run(["carsearch", "search", "--image", str(photos / "red" / "cam 00.jpg"), "-k", "1"], repo).stdout
    )
    assert img_hits and (repo / img_hits[0][4]).is_file()


def test_exp_run_override_and_metrics_diff(repo):
    # two epochs: the override reaches training (and every stage after it) without a full retrain
    run(["dvc", "exp", "run", "-S", "lr=1e-4", "-S", "epochs=2"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["lr"] == 1e-4 and params["train"]["lr"] == 1e-4 and params["train"]["epochs"] == 2
    assert json.loads((repo / "metrics/train.json").read_text())["epochs_run"] == 2
    pdiff = run(["dvc", "params", "diff", "--md"], repo).stdout
    assert "lr" in pdiff and "0.0001" in pdiff
    # the one declared metric is the headline: what changed, then the quality of the indexed model
    mdiff = run(["dvc", "metrics", "diff", "--md"], repo).stdout
    assert "metrics/summary.json" in mdiff and "lr=0.0001" in mdiff and "metrics/eval.json" not in mdiff
    full = run(["dvc", "metrics", "diff", "--md", "--targets", "metrics/eval.json"], repo).stdout
    assert "finetuned.text_to_image.recall@5" in full
    # `dvc exp show` (default columns): the changed params and the headline metrics come first
    rows = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], repo).stdout)))
    header = list(rows[0])
    assert header[header.index("Created") + 2 : header.index("Created") + 4] == ["changed", "t2i_R@5"], header[:12]
    by_rev = {r["rev"]: r for r in rows}
    assert (
        by_rev["workspace"]["changed"].startswith("epochs=2, lr=0.0001") and float(by_rev["workspace"]["t2i_R@5"]) >= 0
    )
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)[0]["data"]["metrics"]
    assert set(shown) == {"metrics/summary.json"} and len(shown["metrics/summary.json"]["data"]) <= 20


def test_mlflow_runs_tell_dvc_experiments_apart(repo):
    """After `dvc repro` and `dvc exp run -S lr=1e-4 -S epochs=2`: two runs in the sqlite store, named and tagged
    by the DVC experiment, git revision and changed params, in the model-training view, with the
    curated pairs logged as datasets with their DVC hash; @champion names the indexed version."""
    import yaml
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / 'mlruns.db'}")
    exp = c.get_experiment_by_name("carsearch")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = c.search_runs([exp.experiment_id], "tags.stage = 'finetune_clip'", order_by=["attributes.start_time ASC"])
    assert len(runs) >= 2
    first, last = runs[0], runs[-1]
    assert first.info.run_name != last.info.run_name
    assert last.data.tags["dvc.exp_name"] and last.info.run_name.startswith(last.data.tags["dvc.exp_name"])
    assert "lr=0.0001" in last.data.tags["dvc.changed_params"] and "lr=0.0001" in last.info.run_name
    assert len(last.data.tags["git.revision"]) == 40 and last.data.tags["git.dirty"] in ("true", "false")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    pairs_md5 = next(o["md5"] for o in lock["stages"]["curate_pairs"]["outs"] if o["path"] == "data/pairs")
    assert last.data.tags["data.pairs_md5"] == pairs_md5
    inputs = {d.dataset.name: d.dataset.digest for d in last.inputs.dataset_inputs}
    assert {"pairs-train", "pairs-val", "pairs-test"} <= set(inputs) and inputs["pairs-train"] == pairs_md5[:36]
    idx = json.loads((repo / "metrics/index.json").read_text())
    reg = idx["registered_model"]
    if idx["model"] == "finetuned":
        assert reg["uri"] == f"models:/{reg['name']}@champion"
        assert int(c.get_model_version_by_alias(reg["name"], "champion").version) == reg["version"]
        mv = c.get_model_version(reg["name"], str(reg["version"]))
        assert mv.tags["data.pairs_md5"] == pairs_md5 and mv.tags["dvc.exp_name"] == last.data.tags["dvc.exp_name"]
        hits = _hits(run(["carsearch", "search", "a red car", "-k", "2", "--use-model", reg["uri"]], repo).stdout)
        assert len(hits) == 2


def test_bad_overrides_give_one_clear_line(repo):
    p = run(["dvc", "exp", "run", "-S", "model=no_such_model"], repo, check=False)
    assert p.returncode != 0 and "no_such_model" in p.stdout and "Traceback" not in p.stdout
    p = run(["dvc", "exp", "run", "-S", "data=folder", "-S", "data.folder.path=/no/such/folder"], repo, check=False)
    assert p.returncode != 0 and "/no/such/folder" in p.stdout and "Traceback" not in p.stdout
