"""`carsearch report`: the Markdown metrics + params diff that CI comments on a pull request,
on two commits of a temporary DVC repo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, stdout=subprocess.DEVNULL)


def _commit(root: Path, lr: float, recall: float, msg: str):
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": lr, "epochs": 3}}))
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/eval.json").write_text(json.dumps({"finetuned": {"text_to_image": {"recall@5": recall}}}))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", msg)


def test_report_on_two_commits(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": "true", "params": ["train"], "metrics": [{"metrics/eval.json": {"cache": False}}]}}}))
    _commit(root, 5e-4, 0.25, "base")
    _git(root, "checkout", "-qb", "feature")
    _commit(root, 1e-3, 0.75, "head")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CARSEARCH_ROOT": str(root)}
    p = subprocess.run([str(BIN / "carsearch"), "report", "--base", "main", "--out", str(tmp_path / "r.md")],
                       cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    md = p.stdout
    assert "### Metrics" in md and "### Params" in md
    assert "finetuned.text_to_image.recall@5" in md and "0.25" in md and "0.75" in md
    assert "train.lr" in md and "0.0005" in md and "0.001" in md
    assert "| Path" in md  # Markdown tables
    assert (tmp_path / "r.md").read_text().strip() == md.strip()
    # explicit revisions and no change
    from carsearch.report import pr_report

    same = pr_report(base="HEAD", head="HEAD", root=root)
    assert "No metric changed." in same and "No param changed." in same
    bad = subprocess.run([str(BIN / "carsearch"), "report", "--base", "no-such-branch"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")
