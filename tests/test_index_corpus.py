"""build_index over a corpus (not the training set), the embedding cache, atomic publishing with
readers that survive a rebuild or a kill, `carsearch index add`, and the ANN branch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from carsearch.sources.demo import COLOR_RGB
from testkit import TINY, write_pairs, write_params


def _photos(folder: Path, n_per_color: int, colors=("red", "blue", "white"), size=(96, 72), start=0) -> list[Path]:
    """Plain photos of a coloured car-ish blob in colour sub-folders (the only labels)."""
    import random

    out = []
    for c in colors:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n_per_color):
            rng = random.Random(f"{c}{i}")
            im = Image.new("RGB", size, tuple(rng.randint(60, 200) for _ in range(3)))
            x, y = rng.randint(5, 30), rng.randint(5, 25)
            im.paste(COLOR_RGB[c], (x, y, x + 50, y + 30))
            p = folder / c / f"photo {i}.jpg"
            im.save(p, quality=90)
            out.append(p)
    return out


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repo with curated demo pairs, a 'fine-tuned' tiny model, and no gate (indexes with it)."""
    from carsearch.model.clip import load_clip, save_clip

    root = tmp_path / "repo"
    root.mkdir()
    write_pairs(root, {"train": 8, "val": 4, "test": 8})
    save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
    write_params(
        root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 8}
    )
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    return root


def _build(root: Path, **index) -> dict:
    """build_index's `run` in process with the composed config (`index` overrides on top), as the
    stage calls it; its metrics/index.json figures plus the embedding-cache counts."""
    import yaml

    from carsearch.core.params import load_config
    from carsearch.experiments import tracking
    from carsearch.index.build import run
    from carsearch.index.build_report import index_metrics
    from carsearch.index.store import read_meta

    p = yaml.safe_load((root / "params.yaml").read_text())
    p["index"].update(index)
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    built = run(load_config(root / "params.yaml"), root, registry=tracking)
    meta = read_meta(root / "data/index")  # the embedding-cache counts live in the index meta, not the metrics
    return {**index_metrics(built), "embedded": meta["embedded"], "cached": meta["cached"]}


def test_default_corpus_is_every_ingested_image(repo):
    """Images without a pair (no caption) are indexed too: the index is the corpus."""
    manifest = repo / "data/raw/manifest.jsonl"
    extra = _photos(repo / "extra", 2, colors=("red",))
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for p in extra:  # ingested but never captioned
        dst = repo / "data/raw/images" / p.name.replace(" ", "_")
        dst.write_bytes(p.read_bytes())
        rows.append({"id": f"x{len(rows)}", "path": dst.relative_to(repo).as_posix(), "labels": {"color": "red"}})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    idx = _build(repo)
    assert idx["rows"] == 22 and idx["corpus"] == "ingested" and idx["embedded"] == 22
    from carsearch.index.search import CarSearch

    t = CarSearch(root=repo).table.to_arrow()
    by_id = dict(zip(t.column("id").to_pylist(), t.column("caption").to_pylist()))
    assert by_id["x20"] == "" and by_id["img0000"]  # uncaptioned row, captioned row
    assert dict(zip(t.column("id").to_pylist(), t.column("color").to_pylist()))["x21"] == "red"


def test_folder_corpus_indexes_exactly_the_folder_and_caches_embeddings(repo):
    photos = repo.parent / "photos"
    _photos(photos, 4)
    (photos / "notes.txt").write_text("not an image")
    idx = _build(repo, corpus="folder", corpus_path=str(photos))
    assert idx["rows"] == 12 and idx["rejected"] == 1 and idx["embedded"] == 12 and idx["cached"] == 0
    from carsearch.index.search import CarSearch

    s = CarSearch(root=repo)
    t = s.table.to_arrow()
    assert sorted(t.column("color").to_pylist()) == ["blue"] * 4 + ["red"] * 4 + ["white"] * 4
    assert {Path(o).parent.name for o in t.column("origin").to_pylist()} == {"red", "blue", "white"}
    assert all((repo / p).is_file() for p in t.column("path").to_pylist())
    hits = s.text("a red car", k=3)
    assert len(hits) == 3
    # add 1 photo: exactly one image is embedded, the rest come from the cache
    _photos(photos, 1, colors=("red",), start=100)
    idx2 = _build(repo, corpus="folder", corpus_path=str(photos))
    assert idx2["rows"] == 13 and idx2["embedded"] == 1 and idx2["cached"] == 12


def test_a_corpus_read_in_runs_gives_the_rows_and_rejects_of_one_read(repo, monkeypatch):
    """A folder corpus is read `corpus.RUN` files at a time into Arrow columns: read in runs of 2,
    it gives the same rows (sorted by id) and the same rejects as in one run, and a duplicate of a
    photo read in an earlier run is still rejected naming the kept one."""
    import shutil

    from carsearch.core.params import load_config
    from carsearch.curation import corpus

    folder = repo / "photos"
    kept = _photos(folder, 3)[0]  # red/photo 0.jpg
    shutil.copy(kept, folder / "white" / "copy.jpg")  # read several runs later
    (folder / "blue" / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = load_config()
    index = cfg.index.model_copy(update={"corpus": "folder", "corpus_path": str(folder)})
    settings = corpus.RowSettings(cfg.data, cfg.curate.boxes, cfg.detect, cfg.train.seed)

    def read(n):
        monkeypatch.setattr(corpus, "RUN", n)
        return corpus.gather(index, cfg.paths, cfg.curate.splits, settings, repo, repo / "data/index/images")

    whole, whole_rejects, whole_notes = read(10**6)
    runs, run_rejects, run_notes = read(2)
    assert whole.num_rows == 9 and runs.equals(whole) and run_notes == whole_notes
    assert whole.column("id").to_pylist() == sorted(whole.column("id").to_pylist())
    assert run_rejects == whole_rejects and len(run_rejects) == 2
    dup = next(r for r in run_rejects if r["path"].endswith("copy.jpg"))
    assert "exact duplicate" in dup["reason"] and "photo 0.jpg" in dup["reason"]
    assert any(r["path"].endswith("broken.jpg") for r in run_rejects)


def test_open_searcher_survives_rebuilds_and_picks_up_the_new_index(repo):
    from carsearch.index.search import CarSearch

    _build(repo)
    s = CarSearch(root=repo)
    v1 = s.meta["version"]
    errors, done, n = [], threading.Event(), [0]

    def hammer():
        while not done.is_set():
            try:
                assert len(s.text("a red sedan", k=3)) == 3
                n[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(e))

    th = threading.Thread(target=hammer)
    th.start()
    try:
        for _ in range(3):
            _build(repo)
    finally:
        done.set()
        th.join()
    assert not errors, errors[:3]
    assert n[0] > 0 and s.text("a red sedan", k=1) and s.meta["version"] != v1
    versions = sorted(p.name for p in (repo / "data/index").glob("v-*"))
    assert len(versions) == 2 and s.meta["version"] in versions  # live + previous kept, older pruned
    assert not list((repo / "data/index").glob(".building-*"))


def test_kill_during_build_keeps_the_old_index(repo):
    """SIGKILL build_index while it builds (its staging folder is there, the process alive): the old
    index still answers; a rerun completes and leaves no temp folder."""
    import shutil

    from carsearch.index.search import CarSearch

    _build(repo)
    s = CarSearch(root=repo)
    live = json.loads((repo / "data/index/carsearch_index.json").read_text())["version"]
    env = {**os.environ, "CARSEARCH_ROOT": str(repo), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    shutil.rmtree(repo / ".carsearch", ignore_errors=True)  # make the build embed (longer, killable mid-way)
    p = subprocess.Popen(
        [sys.executable, "-m", "carsearch.stages.build_index"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not list((repo / "data/index").glob(".building-*")):  # the build has begun its new version
        assert p.poll() is None, f"build_index ended ({p.returncode}) before it began building"
        assert time.time() < deadline, "build_index did not begin building in 120 s"
        time.sleep(0.01)
    assert p.poll() is None  # alive when killed
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    # killed mid-build: its staging folder is left, nothing was published
    assert list((repo / "data/index").glob(".building-*"))
    assert json.loads((repo / "data/index/carsearch_index.json").read_text())["version"] == live
    assert len(CarSearch(root=repo).text("a blue car", k=2)) == 2
    assert len(s.text("a blue car", k=2)) == 2
    idx = _build(repo)
    assert idx["rows"] == 20 and not list((repo / "data/index").glob(".building-*"))
    assert len(s.text("a blue car", k=2)) == 2


def test_index_add_appends_new_images_and_repro_ends_in_the_same_table(repo, capsys):
    from typer.testing import CliRunner

    from carsearch.cli import app
    from carsearch.index.search import CarSearch

    photos = repo.parent / "photos"
    _photos(photos, 2)
    _build(repo, corpus="folder", corpus_path=str(photos))
    s = CarSearch(root=repo)
    new = _photos(photos, 1, colors=("red", "white"), start=50)
    res = CliRunner().invoke(app, ["index", "add", *map(str, new), str(photos / "red")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # photo 50 is named twice (as a file and inside the folder): kept once, the copy reported
    assert "2 added, 2 already indexed, 1 rejected" in res.output and "exact duplicate" in res.output
    assert s.table.count_rows() == 8  # an open searcher sees the appended rows
    ids_added = set(s.table.to_arrow().column("id").to_pylist())
    again = CliRunner().invoke(app, ["index", "add", str(new[0])])
    assert "0 added, 1 already indexed" in again.output
    idx = _build(repo, corpus="folder", corpus_path=str(photos))  # a later repro: same rows, nothing re-embedded
    assert idx["rows"] == 8 and idx["embedded"] == 0
    t = CarSearch(root=repo).table.to_arrow()
    assert set(t.column("id").to_pylist()) == ids_added
    bad = CliRunner().invoke(app, ["index", "add", str(repo / "nope.jpg")])
    assert bad.exit_code == 0 and "1 rejected" in bad.output


def test_ann_branch_is_reached_and_searchable(repo):
    """The >= ann_min_rows branch (lowered here) builds an IVF_HNSW_SQ index that answers queries."""
    idx = _build(repo, ann_min_rows=10, num_partitions=2)
    assert idx["search"] == "IVF_HNSW_SQ"
    from carsearch.index.search import CarSearch

    s = CarSearch(root=repo)
    assert s.table.list_indices() and len(s.text("a red car", k=5)) == 5


def test_an_empty_folder_corpus_says_it_has_no_usable_image(repo):
    """A folder corpus with no file at all gives the corpus's clear line, not pyarrow's
    "Must pass at least one table" (issue 30 item 2)."""
    empty = repo.parent / "nothing here"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"the corpus \(folder\) has no usable image; nothing to index"):
        _build(repo, corpus="folder", corpus_path=str(empty))
