"""The judgments file is a stage input (issue 34): a fresh clone has it (committed empty), and a new
judgment makes `dvc status` (a real dvc subprocess) name the stages it affects: finetune_clip and
evaluate, no other."""

from __future__ import annotations

import hashlib
import json

import yaml

from conftest import copy_repo, run

JUDGED = "data/feedback/judgments.jsonl"


def _dvc_status(repo) -> dict[str, list[str]]:
    """stage -> its changed deps, from `dvc status --json`."""
    out = json.loads(run(["dvc", "status", "--json"], repo).stdout.strip().splitlines()[-1])
    return {
        stage: sorted(d for item in items if isinstance(item, dict) for d in item.get("changed deps", {}))
        for stage, items in out.items()
    }


def test_a_new_judgment_makes_dvc_status_name_finetune_clip_and_evaluate(tmp_path):
    from carsearch.feedback import store
    from carsearch.feedback.record import Hit, Judgment, Query

    repo = copy_repo(tmp_path / "repo")
    assert (repo / JUDGED).is_file() and (repo / JUDGED).read_bytes() == b""  # what a fresh clone has
    # the lock as `dvc repro` leaves it for the file as committed (the rest of the lock is whatever it is)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    entry = {"path": JUDGED, "hash": "md5", "md5": hashlib.md5(b"").hexdigest(), "size": 0}
    for stage in ("finetune_clip", "evaluate"):
        deps = [d for d in lock["stages"][stage]["deps"] if d["path"] != JUDGED]
        lock["stages"][stage]["deps"] = deps + [entry]
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    before = _dvc_status(repo)
    assert not any(JUDGED in deps for deps in before.values()), before
    store.append(repo / JUDGED, Judgment.make(Query(kind="text", text="a blue van"), Hit(id="abc", rank=1), "✗"))
    after = _dvc_status(repo)
    assert sorted(s for s, deps in after.items() if JUDGED in deps) == ["evaluate", "finetune_clip"], after
