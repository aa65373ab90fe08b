"""Judged queries as an eval set (issue 34, `eval.sets` kind `judgments`): precision@k over each
query's judged hits and the share of its ✓/✗ pairs ranked ✓ first, with bootstrap intervals, split
from the training queries by query id; the promotion gate can decide on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testkit import TINY, section, write_pairs

SPEC = {"name": "judged", "path": "data/feedback/judgments.jsonl", "kind": "judgments", "eval_fraction": 1.0}
QUERIES = ["a red car", "a blue car", "a green car", "a red sedan", "a blue suv", "a green van"]


def _judge(root: Path, rows: list[dict]) -> None:
    """Each query judges 4 images: ✓ on those of its colour, ✗ on the others."""
    from carsearch.feedback import store
    from carsearch.feedback.record import Hit, Judgment, Query

    made = []
    for qi, text in enumerate(QUERIES):
        colour = text.split()[1]
        for rank, r in enumerate(rows[qi * 2 : qi * 2 + 4], 1):
            made.append(
                Judgment.make(
                    Query(kind="text", text=text),
                    Hit(id=r["id"], rank=rank, path=r["path"]),
                    r["labels"]["color"] == colour,
                )
            )
    made.append(Judgment.make(Query(kind="image", image_id=rows[0]["id"]), Hit(id=rows[1]["id"], rank=1), "n"))
    store.append(root / SPEC["path"], made)


def test_judged_queries_are_an_eval_set_the_gate_can_decide_on(tmp_path):
    from carsearch.evaluation.evalsets import evaluate_sets
    from carsearch.evaluation.protocol import embed_texts
    from carsearch.index.promotion import promotion_decision
    from carsearch.model.clip import encode_images, load_clip

    rows = write_pairs(tmp_path, {"test": 14}, size=32)["test"]
    _judge(tmp_path, rows)
    colour_of = {str(tmp_path / r["path"]): r["labels"]["color"] for r in rows}
    axes = {"red": 0, "blue": 1, "green": 2}

    def oracle_img(paths):  # a model that knows each crop's colour ...
        return np.array([np.eye(3)[axes[colour_of[str(p)]]] for p in paths])

    def oracle_txt(texts):  # ... and each query's
        return np.array([np.eye(3)[axes[t.split()[1]]] for t in texts])

    model, proc = load_clip(TINY, seed=0)
    encoders = {
        "base": (lambda ps: encode_images(model, proc, ps), lambda t: embed_texts(model, proc, t)),
        "finetuned": (oracle_img, oracle_txt),
    }
    from carsearch.core.schema import validate_params
    from testkit import composed_params

    cfg = validate_params(composed_params({"eval": {"set_k": 2, "sets": [SPEC]}}), root=tmp_path).eval  # typed
    res = evaluate_sets(
        list(cfg.sets),
        tmp_path,
        {"base": None, "finetuned": None},
        encoders,
        {},
        cfg,
        (None, None),
        log=lambda *_: None,
    )
    r = res["judged"]
    assert r["kind"] == "judgments" and r["split"] == {"eval": 7, "train": 0}
    assert r["skipped"] == {"image_queries": 1, "missing_files": 0, "bad_lines": 0}
    ft = r["finetuned"]["text_to_image"]
    pairs = sum(
        1
        for qi, t in enumerate(QUERIES)
        if len({x["labels"]["color"] == t.split()[1] for x in rows[qi * 2 : qi * 2 + 4]}) == 2
    )
    assert ft["queries"] == 6 and ft["pair_queries"] == pairs and pairs >= 2
    assert ft["pairwise"] == 1.0 and ft["pairwise_ci"] == [1.0, 1.0]  # every ✓ above every ✗
    # precision@2 of a perfect ranker: min(#✓, 2) / 2, averaged
    expect = np.mean([min(sum(x["labels"]["color"] == t.split()[1] for x in rows[qi * 2 : qi * 2 + 4]), 2) / 2
                      for qi, t in enumerate(QUERIES)])  # fmt: skip
    assert ft["precision@2"] == pytest.approx(expect)
    base = r["base"]["text_to_image"]
    assert 0.0 <= base["pairwise"] <= 1.0 and base["pairwise_ci"][0] <= base["pairwise"] <= base["pairwise_ci"][1]
    assert r["gain"]["text_to_image"]["pairwise"] == pytest.approx(1.0 - base["pairwise"], abs=1e-4)
    eval_json = {"base": {}, "finetuned": {}, "sets": res}
    gate = promotion_decision(eval_json, "text_to_image.pairwise", 0.0, "judged")
    assert gate["use"] == ("finetuned" if base["pairwise"] < 1.0 else "base") and "eval set 'judged'" in gate["reason"]


def test_split_is_by_query_stable_and_recorded(tmp_path):
    from carsearch.feedback import split
    from carsearch.feedback.record import Hit, Judgment, Query

    js = [
        Judgment.make(Query(kind="text", text=f"query {i}"), Hit(id=f"h{j}", rank=j + 1), j % 2 == 0)
        for i in range(40)
        for j in range(3)
    ]
    parts = split.split(js, 0.5)
    assert sorted(parts["eval"] + parts["train"]) == sorted({j.query_id for j in js})
    assert not set(parts["eval"]) & set(parts["train"]) and 8 <= len(parts["eval"]) <= 32
    more = js + [Judgment.make(Query(kind="text", text="query 41"), Hit(id="h0", rank=1), "y")]
    again = split.split(more, 0.5)  # a new query never moves an old one across
    assert set(parts["eval"]) <= set(again["eval"]) and set(parts["train"]) <= set(again["train"])
    assert split.split(js, 0.0)["eval"] == [] and split.split(js, 1.0)["train"] == []


def test_training_takes_the_judged_queries_not_held_out_and_learns_their_order(tmp_path):
    import torch

    from carsearch.feedback.split import held_out
    from carsearch.model.clip import load_clip
    from carsearch.training.feedback import feedback_term

    rows = write_pairs(tmp_path, {"train": 14}, size=32)["train"]
    _judge(tmp_path, rows)
    # typed, as finetune_clip passes `cfg.eval.sets` (a dict here once hid an AttributeError there)
    spec = section("eval", sets=[{**SPEC, "eval_fraction": 0.5}]).sets[0]
    model, proc = load_clip(TINY, seed=0)
    tcfg = section("train", feedback_weight=1.0, feedback_queries_per_step=4, feedback_images_per_query=4)
    term, record = feedback_term(tmp_path / SPEC["path"], tmp_path, [spec], proc, tcfg)
    # the leakage rule: no held-out query is trained on; the split is recorded
    assert record["eval_set"] == "judged" and record["used"] is True
    assert not set(record["train_queries"]) & set(record["held_out_queries"])
    assert all(held_out(q, 0.5) for q in record["held_out_queries"])
    assert record["train_queries"] and record["skipped"]["missing_files"] == 0
    assert record["positives"] == sum(len(p) for p, _ in term.groups) > 0
    none, rec0 = feedback_term(
        tmp_path / SPEC["path"], tmp_path, [spec], proc, tcfg.model_copy(update={"feedback_weight": 0.0})
    )
    assert none is None and rec0["used"] is False
    # a step draws at most 4 of a query's judged images, at least one ✓, the same for the same step
    for q, (ps, ns) in enumerate(term.groups):
        got = term.draw(q, torch.Generator().manual_seed(7))
        assert got == term.draw(q, torch.Generator().manual_seed(7))
        assert 1 <= len(got[0]) and len(got[0]) + len(got[1]) == min(4, len(ps) + len(ns))
        assert set(got[0]) <= set(ps) and set(got[1]) <= set(ns)

    def order() -> float:  # share of the trained queries' (✓, ✗) pairs scored ✓ first
        with torch.no_grad():
            img, txt = term.embed(model, list(range(len(term.groups))), list(range(len(term.pix))), "cpu")
        s = txt @ img.t()
        wins = [float(s[q, p] > s[q, n]) for q, (ps, ns) in enumerate(term.groups) for p in ps for n in ns]
        return sum(wins) / len(wins)

    before = order()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(6):
        opt.zero_grad()
        term(model, step, torch.device("cpu")).backward()
        opt.step()
    after = order()
    assert after > before or after == 1.0, (before, after)


def test_dvc_exp_show_headline_has_the_judged_set(tmp_path):
    import json

    from carsearch.experiments.headline import summary

    judged = {"finetuned": {"text_to_image": {"precision@5": 0.8, "pairwise": 0.75, "pairwise_ci": [0.6, 0.9]}}}
    (tmp_path / "eval.json").write_text(json.dumps({"sets": {"judged": judged}}))
    out = summary(tmp_path, {}, None)
    assert out["set_judged_t2i_precision@5"] == 0.8 and out["set_judged_pairwise"] == 0.75
