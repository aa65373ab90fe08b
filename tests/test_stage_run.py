"""Stages as library calls: `run(cfg, root)` in process with the real composed config (no
CARSEARCH_ROOT), `data.max_pixels` reaching every image reader, and a write the disk refuses
reported as one line with the live outputs untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from carsearch.core.params import load_config
from testkit import REPO, TINY, write_pairs, write_params


def _repo(root: Path, **over) -> Path:
    """Curated demo pairs, a 'fine-tuned' tiny model, no promotion gate; params.yaml composed from
    conf/ with the test's settings on top."""
    from carsearch.model.clip import load_clip, save_clip

    root.mkdir(parents=True, exist_ok=True)
    write_pairs(root, {"train": 8, "val": 4, "test": 8})
    save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
    index = {"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 8}
    write_params(root, index={**index, **over.pop("index", {})}, **over)
    return root


def _photo(path: Path, size: tuple[int, int], rgb=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, quality=90)
    return path


def test_build_index_and_evaluate_run_in_process_with_the_composed_config(tmp_path, monkeypatch):
    """lightning-hydra-template's way: the composed config in, a result out; the stage's main only
    writes and prints what `run` returns. No environment variable points the stage at the repo."""
    from carsearch.evaluation import outputs
    from carsearch.evaluation.run import run as evaluate
    from carsearch.index.build import run as build
    from carsearch.index.build_report import index_metrics, summary_lines
    from carsearch.index.store import read_meta

    monkeypatch.delenv("CARSEARCH_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    root = _repo(tmp_path / "repo")
    cfg = load_config(root / "params.yaml")
    res = evaluate(cfg, root, log=lambda *_: None)
    assert res.results["queries"]["test_images"] == 8 and set(res.calibs) == {"base", "finetuned"}
    assert 0.0 <= res.results["finetuned"]["text_to_image"]["recall@5"] <= 1.0
    assert not (root / "metrics" / "eval.json").exists()  # run computes; writing is the stage's
    outputs.write(res, root / "metrics", root / "metrics" / "plots")
    assert json.loads((root / "metrics" / "eval.json").read_text()) == res.results
    flat = outputs.mlflow_metrics(res.results, res.creports)
    assert flat["finetuned.text_to_image.recall_at_5"] == res.results["finetuned"]["text_to_image"]["recall@5"]

    built = build(cfg, root)
    meta = read_meta(root / "data" / "index")
    assert meta["version"] == built.version and meta["rows"] == built.rows.num_rows == 20
    assert index_metrics(built)["rows"] == 20 and "seconds" not in index_metrics(built)
    assert summary_lines(built, cfg.index, cfg.paths.index_dir)[-1].startswith(
        "build_index: 20 images (20 embedded, 0 from the embedding cache)"
    )


def test_max_pixels_override_reaches_ingest_the_index_corpus_and_the_eval_sets(tmp_path, monkeypatch):
    """`-S data.max_pixels=5000` (params.yaml as DVC composes it with the override): a 96x72 photo
    (6,912 px) is refused by every reader of the user's images, a 64x64 one (4,096 px) kept: ingest,
    the index corpus (build_index) and the eval sets (evaluate). Before, only ingest honoured it."""
    from carsearch.evaluation.evalsets import load_set
    from carsearch.index.build import read_corpus

    monkeypatch.setenv("CARSEARCH_ROOT", str(tmp_path / "repo"))
    photos = tmp_path / "photos"
    _photo(photos / "red" / "small.jpg", (64, 64))
    _photo(photos / "blue" / "big.jpg", (96, 72), (30, 30, 200))
    root = _repo(
        tmp_path / "repo",
        data={"source": "folder", "folder": {"path": str(photos)}, "max_pixels": 5000},
        index={"corpus": "folder", "corpus_path": str(photos)},
        eval={"sets": [{"name": "mine", "path": str(photos)}]},
    )
    cfg = load_config(root / "params.yaml")
    assert cfg.data.max_pixels == 5000
    too_large = "image too large (96x72 = 0 MP, data.max_pixels is 0 MP)"

    # ingest (its stage, in a subprocess as DVC runs it)
    env = {**os.environ, "CARSEARCH_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "carsearch.stages.ingest"], env=env, check=True, capture_output=True)
    rejects = [json.loads(line) for line in (root / "data/raw/rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["path"]).name, r["reason"]) for r in rejects] == [("big.jpg", too_large)]

    # the index corpus
    rows, rejects, _ = read_corpus(cfg, root, root / "data" / "index")
    assert rows.num_rows == 1 and rows.column("path").to_pylist()[0].endswith("small.jpg")
    assert [(Path(r["path"]).name, r["reason"]) for r in rejects] == [("big.jpg", too_large)]

    # an eval set
    rows, rejects = load_set(cfg.eval.sets[0], root, tmp_path / "work", (cfg.data.max_pixels, cfg.data.max_edge))
    assert [Path(r["origin"]).name for r in rows] == ["small.jpg"]
    assert [(Path(r["path"]).name, r["reason"]) for r in rejects] == [("big.jpg", too_large)]


_LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # `ulimit -f`: a bigger write fails (EFBIG)
sys.argv = ["{module}"]
runpy.run_module("{module}", run_name="__main__")
"""


def _limited(module: str, root: Path, limit: int) -> subprocess.CompletedProcess:
    """Run a stage as DVC would, under a file size limit (Python ignores SIGXFSZ: the write fails)."""
    env = {
        **os.environ,
        "CARSEARCH_ROOT": str(root),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}",
    }
    code = _LIMITED.format(limit=limit, module=module)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def test_a_refused_write_is_one_line_and_the_live_index_is_unchanged(tmp_path):
    """build_index with writes failing (`ulimit -f`, the same path as a full disk): one line
    naming the file and the reason, that the live index is unchanged; no traceback; the live index
    still answers; without the limit the next build succeeds."""
    from carsearch.index.store import read_meta

    root = _repo(tmp_path / "repo")
    ok = _limited("carsearch.stages.build_index", root, 1 << 40)
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = read_meta(root / "data/index")
    listing = sorted(p.name for p in (root / "data/index").iterdir())

    bad = _limited("carsearch.stages.build_index", root, 4096)  # the model's tokenizer.json is bigger
    assert bad.returncode == 1
    err = bad.stderr.strip().splitlines()
    assert "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert err[-1].startswith("error: cannot write ") and "file too large" in err[-1], err[-1]
    assert err[-1].endswith("; the live index (data/index) is unchanged"), err[-1]
    assert read_meta(root / "data/index") == before
    assert sorted(p.name for p in (root / "data/index").iterdir()) == listing  # no half-built version left

    again = _limited("carsearch.stages.build_index", root, 1 << 40)
    assert again.returncode == 0 and read_meta(root / "data/index")["version"] != before["version"]


def test_a_refused_write_in_a_stage_folder_is_one_line_and_the_folder_is_unchanged(tmp_path):
    """ingest writes data/raw through `atomic_dir`: under a file size limit the manifest does not
    fit, one line names the file (where it was going, not the temp folder) and says data/raw is
    unchanged; data/raw keeps the previous run's files."""
    photos = tmp_path / "photos"
    for i in range(3):
        _photo(photos / "red" / f"p{i}.png", (160, 120), (200, 30 + 40 * i, 30))
    root = tmp_path / "repo"
    root.mkdir()
    write_params(root, data={"source": "folder", "folder": {"path": str(photos)}})
    ok = _limited("carsearch.stages.ingest", root, 1 << 40)
    assert ok.returncode == 0, ok.stderr[-2000:]
    manifest = (root / "data/raw/manifest.jsonl").read_bytes()
    _photo(photos / "red" / "new.png", (160, 120), (10, 200, 10))

    bad = _limited("carsearch.stages.ingest", root, 1024)  # the manifest is bigger
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    line = bad.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write {root / 'data/raw'}/manifest.jsonl: ") and ".tmp-" not in line, line
    assert "file too large" in line and line.endswith(f"; {root / 'data/raw'} is unchanged"), line
    assert (root / "data/raw/manifest.jsonl").read_bytes() == manifest
    assert not [p for p in (root / "data").iterdir() if p.name.startswith(".raw.")]  # no temp folder left


@pytest.mark.parametrize("errno_, why", [(28, "no space left on the device"), (27, "file too large")])
def test_refused_write_reasons(tmp_path, errno_, why):
    """The reasons of the one line, from an OSError and from copytree's shutil.Error alike."""
    import shutil

    from carsearch.core.io import WriteError, atomic_dir, refused_write

    e = OSError(errno_, os.strerror(errno_), str(tmp_path / "x.bin"))
    assert refused_write(e)[0] == str(tmp_path / "x.bin") and refused_write(e)[1].startswith(why)
    agg = shutil.Error([("a", str(tmp_path / "b"), f"[Errno {errno_}] {os.strerror(errno_)}: 'b'")])
    assert refused_write(agg) == (str(tmp_path / "b"), refused_write(e)[1])
    assert refused_write(OSError(2, "No such file")) is None
    out = tmp_path / "out"
    with pytest.raises(WriteError, match=rf"^cannot write {out}/f: {why}.*; {out} is unchanged$"):
        with atomic_dir(out) as tmp:
            raise OSError(errno_, os.strerror(errno_), str(tmp / "f"))
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_no_image_limit_default_outside_conf():
    """conf/ is the only home of data.max_pixels / data.max_edge: the library has no copy."""
    from carsearch.core import imaging

    assert not hasattr(imaging, "DEFAULT_MAX_PIXELS") and not hasattr(imaging, "DEFAULT_MAX_EDGE")
    conf = yaml.safe_load((REPO / "conf/data/_base.yaml").read_text())
    assert load_config(REPO / "params.yaml").data.max_pixels == conf["max_pixels"]
