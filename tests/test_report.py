"""`carsearch report`: the Markdown report that CI comments on a pull request, on commits of a
temporary DVC repo: the paired significance test on per-query results (a real change, a pure-noise
change, a base without per-query results), then the metrics diff (quality first, run time and cost
apart) and the params diff."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from testkit import composed_params

BIN = Path(sys.executable).parent


def _git(root, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, stdout=subprocess.DEVNULL
    )


def _commit(root: Path, lr: float, recall: float, msg: str):
    (root / "params.yaml").write_text(yaml.safe_dump(composed_params({"train": {"lr": lr, "epochs": 3}})))
    (root / "metrics").mkdir(exist_ok=True)
    machine = {"cores": 2 if recall < 0.5 else 16, "ram_gib": 24.0 if recall < 0.5 else 128.0, "load_1m": recall}
    prov = {"commit": msg, "machine": machine}  # the run's machine and commit: not a figure to diff
    (root / "metrics/eval.json").write_text(
        json.dumps({"finetuned": {"text_to_image": {"recall@5": recall}}, "provenance": prov})
    )
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", msg)


def test_report_on_two_commits(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "train": {"cmd": "true", "params": ["train"], "metrics": [{"metrics/eval.json": {"cache": False}}]}
                }
            }
        )
    )
    _commit(root, 5e-4, 0.25, "base")
    _git(root, "checkout", "-qb", "feature")
    _commit(root, 1e-3, 0.75, "head")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CARSEARCH_ROOT": str(root)}
    p = subprocess.run(
        [str(BIN / "carsearch"), "report", "--base", "main", "--out", str(tmp_path / "r.md")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    md = p.stdout
    assert "### Quality metrics" in md and "### Params" in md
    assert "finetuned.text_to_image.recall@5" in md and "0.25" in md and "0.75" in md
    assert "train.lr" in md and "0.0005" in md and "0.001" in md
    assert "| Path" in md  # Markdown tables
    assert "provenance" not in md and "ram_gib" not in md
    assert (tmp_path / "r.md").read_text().strip() == md.strip()
    # explicit revisions and no change
    from carsearch.experiments.report import pr_report

    same = pr_report(base="HEAD", head="HEAD", root=root)
    assert (
        "No quality metric changed." in same and "No run-time figure changed." in same and "No param changed." in same
    )
    bad = subprocess.run(
        [str(BIN / "carsearch"), "report", "--base", "no-such-branch"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


# ------------------------------------------------------------------ signal or noise
N_Q = 120


def _queries(t2i_hits: np.ndarray, i2i_hits: np.ndarray) -> dict:
    """Per-query results in the evaluate stage's layout: the base model misses everything."""

    def one(hits, names):
        hits = hits.astype(np.float64)
        vals = {
            "recall@1": hits,
            "recall@5": np.maximum(hits, hits[::-1]),
            "recall@10": np.ones_like(hits),
            "mrr": np.where(hits > 0, 1.0, 0.2),
            "map@10": np.where(hits > 0, 0.9, 0.1),
        }
        return {"query": names, "relevant": np.full(len(hits), 3), "values": vals}

    t2i_names = [f"a car number {i}, seen from the front" for i in range(N_Q)]  # commas: CSV quoting
    i2i_names = [f"img{i:04d}" for i in range(N_Q)]
    zero = np.zeros(N_Q)
    return {
        "base": {"text_to_image": one(zero, t2i_names), "image_to_image": one(zero, i2i_names)},
        "finetuned": {"text_to_image": one(t2i_hits, t2i_names), "image_to_image": one(i2i_hits, i2i_names)},
    }


def _commit_rev(root: Path, name: str, t2i, i2i, seconds: float, tokens: int, lr: float, with_queries: bool = True):
    from carsearch.evaluation.stats import write_query_csv

    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "train": {"lr": lr},
                "paths": {"metrics_dir": "metrics"},
                "eval": {"bootstrap": {"n": 1000, "seed": 0, "confidence": 0.95}},
            }
        )
    )
    (root / "metrics").mkdir(exist_ok=True)
    ft = {
        "text_to_image": {"recall@1": float(t2i.mean()), "queries": N_Q},
        "image_to_image": {"recall@1": float(i2i.mean()), "queries": N_Q},
    }
    (root / "metrics/eval.json").write_text(json.dumps({"finetuned": ft}))
    (root / "metrics/train.json").write_text(json.dumps({"train_seconds": seconds, "final_loss": 1.5}))
    (root / "metrics/caption.json").write_text(json.dumps({"input_tokens": tokens, "estimated_usd": tokens * 1e-6}))
    if with_queries:
        write_query_csv(root / "metrics/eval_queries.csv", _queries(t2i, i2i))
    elif (root / "metrics/eval_queries.csv").exists():
        (root / "metrics/eval_queries.csv").unlink()
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", name)
    _git(root, "tag", name)


@pytest.fixture(scope="module")
def revisions(tmp_path_factory):
    """old (no per-query file) -> base -> real (clearly better on many queries) / noise (a few flipped each way)."""
    root = tmp_path_factory.mktemp("sig") / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "evaluate": {
                        "cmd": "true",
                        "params": ["train"],
                        "outs": [{"metrics/eval_queries.csv": {"cache": False}}],
                        "metrics": [{f"metrics/{f}.json": {"cache": False}} for f in ("eval", "train", "caption")],
                    }
                }
            }
        )
    )
    rng = np.random.default_rng(0)
    t2i = (rng.random(N_Q) < 0.4).astype(float)
    i2i = (rng.random(N_Q) < 0.5).astype(float)
    _commit_rev(root, "old", t2i, i2i, 200.0, 1000, 5e-4, with_queries=False)
    _commit_rev(root, "base", t2i, i2i, 210.0, 1000, 5e-4)
    real = t2i.copy()
    real[np.flatnonzero(t2i == 0)[:40]] = 1  # 40 queries fixed, none broken
    _commit_rev(root, "real", real, i2i, 260.0, 1000, 1e-3)
    _git(root, "checkout", "-q", "base")
    noise = t2i.copy()
    noise[np.flatnonzero(t2i == 0)[:4]] = 1  # 4 fixed, 3 broken
    noise[np.flatnonzero(t2i == 1)[:3]] = 0
    _commit_rev(root, "noise", noise, i2i, 205.0, 1000, 5e-4)
    return root


def _row(md: str, label: str) -> str:
    rows = [ln for ln in md.splitlines() if ln.startswith(f"| {label} |")]
    assert len(rows) == 1, (label, md)
    return rows[0]


def _sections(md: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith("### ")]


def test_real_change_is_significant(revisions):
    from carsearch.experiments.report import pr_report

    md = pr_report(base="base", head="real", root=revisions)
    assert _sections(md) == [
        "### Retrieval quality: signal or noise",
        "### Quality metrics (`dvc metrics diff`)",
        "### Run time and cost",
        "### Params (`dvc params diff`)",
    ]
    row = _row(md, "text→image recall@1")
    assert "**significant** ▲" in row and "| 40 / 0 |" in row and "+0.3333" in row
    assert "no change" in _row(md, "image→image recall@1")  # identical per-query results
    assert "120 text→image queries" in md and "1000 resamples, seed 0" in md
    quality, runtime = md.split("### Quality metrics")[1].split("### Run time and cost")
    assert "finetuned.text_to_image.recall@1" in quality and "train_seconds" not in quality
    assert "final_loss" not in quality  # unchanged
    assert "train_seconds" in runtime and "260" in runtime.split("### Params")[0]
    assert "input_tokens" not in runtime  # unchanged
    assert "train.lr" in md.split("### Params")[1]


def test_pure_noise_is_within_noise(revisions):
    from carsearch.experiments.report import pr_report

    md = pr_report(base="base", head="noise", root=revisions)
    row = _row(md, "text→image recall@1")
    assert "within noise" in row and "significant" not in row and "| 4 / 3 |" in row
    assert "**significant**" not in md.split("Paired bootstrap")[0]
    assert "No param changed." in md


def test_regression_is_significant_too(revisions):
    from carsearch.experiments.report import pr_report

    md = pr_report(base="real", head="base", root=revisions)
    assert "**significant** ▼" in _row(md, "text→image recall@1")


def test_base_without_per_query_results_falls_back_to_the_plain_diff(revisions):
    from carsearch.experiments.report import pr_report

    md = pr_report(base="old", head="base", root=revisions)
    section = md.split("### Retrieval quality: signal or noise")[1].split("###")[0].strip()
    assert (
        section
        == "`old` has no per-query results (metrics/eval_queries.csv): no significance test, the plain diff follows."
    )
    assert "train_seconds" in md.split("### Run time and cost")[1]


def test_workspace_head_via_cli(revisions, tmp_path):
    """`carsearch report` with the workspace as head (what CI runs after `dvc repro`)."""
    _git(revisions, "checkout", "-q", "real")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CARSEARCH_ROOT": str(revisions)}
    p = subprocess.run(
        [str(BIN / "carsearch"), "report", "--base", "base", "--out", str(tmp_path / "r.md")],
        cwd=revisions,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "this workspace against `base`" in p.stdout and "**significant** ▲" in p.stdout
    assert (tmp_path / "r.md").read_text().strip() == p.stdout.strip()
