"""Every figure says which machine and commit it came from (issue 35): the stages stamp their
metrics file with `provenance` (carsearch.core.provenance) and the results page prints it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from carsearch.core.provenance import provenance, stamped

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from gen_results import results_page  # noqa: E402


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_provenance_names_the_machine_and_the_commit(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "c")
    head = _git(tmp_path, "rev-parse", "HEAD")
    p = provenance(tmp_path)
    assert p["commit"] == head and p["dirty"] is False
    m = p["machine"]
    assert m["cores"] >= 1 and m["ram_gib"] > 0 and m["cpu"] and isinstance(m["gpu"], str)
    (tmp_path / "src" / "a.py").write_text("x = 2\n")  # the code differs from the commit
    (tmp_path / "metrics.json").write_text("{}")  # an untracked output does not make it dirty
    assert provenance(tmp_path)["dirty"] is True
    s = stamped({"rows": 3}, tmp_path)
    assert s["rows"] == 3 and s["provenance"]["commit"] == head


def test_provenance_outside_git_is_none_not_an_error(tmp_path):
    p = provenance(tmp_path)
    assert p["commit"] is None and p["dirty"] is None and p["machine"]["cores"] >= 1


def test_results_page_prints_each_tables_machine_and_commit(tmp_path):
    prov = {
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "dirty": True,
        "machine": {"cpu": "Test CPU 9000", "cores": 2, "ram_gib": 24.0, "gpu": "none", "load_1m": 3.5},
        "at": "2026-12-07T05:00:00Z",
    }
    ev = {"finetuned": {"text_to_image": {"recall@5": 0.5}}, "provenance": prov}
    tr = {"best_val": 0.3, "train_seconds": 10.0, "provenance": {**prov, "machine": {**prov["machine"], "gpu": "H100"}}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    (tmp_path / "train.json").write_text(json.dumps(tr))
    (tmp_path / "index.json").write_text(json.dumps({"rows": 5}))  # written before provenance existed
    (tmp_path / "ingest.json").write_text(json.dumps({"images": 3}))  # a bit-exact data stage
    (tmp_path / "summary.json").write_text(json.dumps({"t2i_R@5": 0.5, "val_best": 0.3, "index_rows": 5}))
    page = results_page(tmp_path)
    eval_sec = page.split("## Retrieval")[1].split("##")[0]
    assert "Test CPU 9000 (2 cores, 24 GiB), GPU: none, load 3.5" in eval_sec
    assert "commit `0123456` with uncommitted code changes" in eval_sec
    assert "GPU: H100" in page.split("## Training")[1]
    assert "machine and commit not recorded" in page.split("## Index")[1].split("##")[0]
    head = page.split("## Headline")[1].split("| figure")[0]  # the headline lists its figures' files
    assert "`metrics/eval.json`: ran at 2026-12-07T05:00:00Z" in head and "`metrics/index.json`" in head
    assert "the same bytes on every machine" in page.split("## ingest")[1]
    assert "`provenance`" not in page.split("## Training")[1].split("|---|---|")[1]  # not a figure row
