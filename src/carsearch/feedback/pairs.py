"""The training signal of judgments (issue 34): the judged text queries NOT held out for evaluation
(by query: carsearch.feedback.split, the eval_fraction of the eval set of kind judgments), each
with its ✓ hits (extra positives of the query's text) and ✗ hits (its hard negatives)."""

from __future__ import annotations

from pathlib import Path

from carsearch.core.paths import resolve
from carsearch.core.schema import EvalSet
from carsearch.feedback import split, store


def judgments_set(sets: list[EvalSet]) -> EvalSet | None:
    """The eval set of kind judgments (the first one), whose held-out queries training leaves alone."""
    return next((s for s in sets if s.kind == "judgments"), None)


def training_groups(path: Path, root: Path, sets: list[EvalSet], log=print) -> tuple[list[dict], dict]:
    """([{"query_id", "text", "pos": [file], "neg": [file]}], the record of the split and counts)."""
    held = judgments_set(sets)
    if held is not None and resolve(held.path, root) != Path(path):
        log(f"finetune_clip: note: eval set {held.name!r} reads {held.path}, not paths.judgments")
    fraction = float(held.eval_fraction) if held is not None else 0.0
    loaded = store.read(path)
    for p in loaded.problems:
        log(f"finetune_clip: {p}")
    parts = split.split(loaded.judgments, fraction)
    train = set(parts["train"])
    groups, skipped = [], {"image_queries": 0, "missing_files": 0}
    for qid, by_hit in split.latest(loaded.judgments).items():
        if qid not in train:
            continue
        q = next(iter(by_hit.values())).query
        if q.kind != "text":
            skipped["image_queries"] += 1
            continue
        g = {"query_id": qid, "text": q.text, "pos": [], "neg": []}
        for j in by_hit.values():
            f = resolve(j.hit.path, root) if j.hit.path else None
            if f is None or not f.is_file():
                skipped["missing_files"] += 1
                continue
            g["pos" if j.verdict else "neg"].append(f)
        if g["pos"]:  # a query with no ✓ has nothing to pull towards
            groups.append(g)
    record = {
        "eval_set": held.name if held is not None else None,
        "eval_fraction": fraction,
        "held_out_queries": parts["eval"],
        "train_queries": [g["query_id"] for g in groups],
        "positives": sum(len(g["pos"]) for g in groups),
        "hard_negatives": sum(len(g["neg"]) for g in groups),
        "skipped": skipped,
        "bad_lines": len(loaded.problems),
    }
    return groups, record
