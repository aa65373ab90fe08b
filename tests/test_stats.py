"""Uncertainty of the retrieval metrics: per-query results whose means are the headline metrics,
seeded bootstrap intervals next to them in eval.json, the per-query CSV, and the paired test."""

import json

import numpy as np
import pytest

from carsearch.evaluation.metrics import per_query_metrics, retrieval_metrics
from carsearch.evaluation.protocol import full_report
from carsearch.evaluation.stats import (
    add_intervals,
    bootstrap_ci,
    paired_bootstrap,
    query_results,
    read_query_csv,
    write_query_csv,
)
from testkit import merge, section

HEADLINE = ("recall@1", "recall@5", "recall@10", "map@10", "mrr")
COLORS, BODIES, VIEWS = ("red", "blue", "green"), ("sedan", "suv"), ("front", "rear", "side")


def _dataset(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = [
        {
            "model_id": f"m{rng.integers(6)}",
            "make": "Demo",
            "model": "x",
            "color": str(rng.choice(COLORS)),
            "body_type": str(rng.choice(BODIES)),
            "view": str(rng.choice(VIEWS)),
        }
        for _ in range(n)
    ]
    vocab = {w: i for i, w in enumerate(COLORS + BODIES + VIEWS + tuple(f"m{i}" for i in range(6)))}

    def onehot(words):
        v = np.zeros(len(vocab), np.float32)
        for w in words:
            if w in vocab:
                v[vocab[w]] = 1
        return v

    def enc(texts):
        out = np.stack([onehot(t.split()) for t in texts]) + 0.3 * rng.normal(size=(len(texts), len(vocab)))
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    good = np.stack([onehot([lab["color"], lab["body_type"], lab["view"], lab["model_id"]]) for lab in labels])
    embs = {"base": rng.normal(size=good.shape), "finetuned": good + 0.5 * rng.normal(size=good.shape)}
    embs = {k: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for k, v in embs.items()}
    return labels, embs, enc


def _evaluate(cfg=None):
    """What the evaluate stage does with full_report's output (minus images, plots and MLflow)."""
    labels, embs, enc = _dataset()
    cfg = section("eval", **merge({"ks": [1, 5, 10], "map_k": 10, "by_combo": False, "zero_shot": []}, cfg or {}))
    results, extra = {}, {}
    for name, img in embs.items():
        m, _, q = full_report(img, labels, enc, cfg)
        results[name], extra[name] = m, {**q, "img": img}
    attrs = results["finetuned"]["attributes"]
    results["gain"] = {
        d: {k: results["finetuned"][d][k] - results["base"][d][k] for k in HEADLINE}
        for d in ("text_to_image", "image_to_image")
    }
    ids = [f"img{i:03d}" for i in range(len(labels))]
    per_query = {name: query_results(extra[name], labels, ids, attrs, cfg.ks, cfg.map_k) for name in embs}
    settings = add_intervals(results, per_query, cfg.bootstrap)
    return results, per_query, settings


def test_per_query_means_are_the_headline_metrics():
    rng = np.random.default_rng(1)
    scores, rel = rng.normal(size=(20, 30)), rng.random((20, 30)) < 0.1
    keep, per = per_query_metrics(scores, rel, (1, 5), 10)
    m = retrieval_metrics(scores, rel, (1, 5), 10)
    assert keep.sum() == m["queries"] and (~keep).sum() == m["skipped_queries"]
    for k, v in per.items():
        assert len(v) == keep.sum() and float(v.mean()) == m[k]
    assert set(np.unique(per["recall@1"])) <= {0.0, 1.0}
    results, per_query, _ = _evaluate()
    for name in ("base", "finetuned"):
        for d in ("text_to_image", "image_to_image"):
            vals = per_query[name][d]["values"]
            assert len(per_query[name][d]["query"]) == results[name][d]["queries"]
            for k in HEADLINE:
                assert float(vals[k].mean()) == results[name][d][k]


def test_intervals_next_to_every_headline_metric_seeded_and_sane():
    results, _, settings = _evaluate()
    assert settings == {"n": 1000, "seed": 0, "confidence": 0.95}
    assert results["bootstrap"]["resamples"] == 1000 and results["bootstrap"]["per_query"] == "eval_queries.csv"
    for name in ("base", "finetuned"):
        for d in ("text_to_image", "image_to_image"):
            m = results[name][d]
            for k in HEADLINE:
                lo, hi = m[f"{k}_ci"]
                assert 0.0 <= lo <= round(m[k], 4) + 1e-4 and m[k] - 1e-4 <= hi <= 1.0 and lo < hi, (name, d, k)
    for d in ("text_to_image", "image_to_image"):
        for k in HEADLINE:
            lo, hi = results["gain"][d][f"{k}_ci"]
            assert lo - 1e-4 <= results["gain"][d][k] <= hi + 1e-4
    # the fine-tuned model here is far better on text queries: its gain interval excludes 0
    assert results["gain"]["text_to_image"]["recall@5_ci"][0] > 0
    again, _, _ = _evaluate()
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)
    other, _, _ = _evaluate({"bootstrap": {"n": 1000, "seed": 7}})
    assert other["finetuned"]["image_to_image"]["mrr_ci"] != results["finetuned"]["image_to_image"]["mrr_ci"]
    wider, _, _ = _evaluate({"bootstrap": {"n": 400, "seed": 0, "confidence": 0.99}})
    lo95, hi95 = results["finetuned"]["image_to_image"]["map@10_ci"]
    lo99, hi99 = wider["finetuned"]["image_to_image"]["map@10_ci"]
    assert hi99 - lo99 > hi95 - lo95


def test_dvc_metrics_diff_sees_only_the_scalars():
    """Lists are not metrics to DVC: `recall@5_ci` sits next to `recall@5` without a table row."""
    results, _, _ = _evaluate()
    flat = {}

    def walk(x, pre=""):
        for k, v in x.items():
            if isinstance(v, dict):
                walk(v, f"{pre}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[pre + k] = v

    walk(results)
    assert "finetuned.text_to_image.recall@5" in flat and not any(k.endswith("_ci") for k in flat)
    assert isinstance(results["finetuned"]["text_to_image"]["recall@5_ci"], list)


def test_query_csv_round_trip(tmp_path):
    results, per_query, _ = _evaluate()
    f = write_query_csv(tmp_path / "metrics" / "eval_queries.csv", per_query)
    text = f.read_text()
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["direction", "query", "relevant"]
    assert {f"{m}_{k}" for m in ("base", "finetuned") for k in HEADLINE} <= set(header)
    table = read_query_csv(text)
    for d in ("text_to_image", "image_to_image"):
        assert len(table[d]) == results["finetuned"][d]["queries"]
        for k in HEADLINE:
            mean = np.mean([row[f"finetuned_{k}"] for row in table[d].values()])
            assert mean == pytest.approx(results["finetuned"][d][k], abs=1e-6)
    assert "a red sedan seen from the front" in table["text_to_image"] and "img000" in table["image_to_image"]
    assert all(row["relevant"] >= 1 for d in table for row in table[d].values())


def test_bootstrap_ci_and_paired_test():
    rng = np.random.default_rng(0)
    ci = bootstrap_ci({"x": rng.random(200)}, n=500, seed=0)
    assert 0.4 < ci["x"][0] < 0.5 < ci["x"][1] < 0.6
    assert bootstrap_ci({}) == {}
    old = (rng.random(120) < 0.4).astype(float)
    better = old.copy()
    better[np.flatnonzero(old == 0)[:30]] = 1  # 30 of 120 queries fixed, none broken
    r = paired_bootstrap(old, better)
    assert r["verdict"] == "significant" and r["ci"][0] > 0 and r["better"] == 30 and r["worse"] == 0
    noisy = old.copy()
    noisy[np.flatnonzero(old == 0)[:3]] = 1  # 3 fixed, 3 broken: noise
    noisy[np.flatnonzero(old == 1)[:3]] = 0
    r = paired_bootstrap(old, noisy)
    assert r["verdict"] == "within noise" and r["ci"][0] < 0 < r["ci"][1] and r["diff"] == 0
    assert paired_bootstrap(old, old)["verdict"] == "no change"
    worse = paired_bootstrap(better, old)  # the same change backwards: a significant regression
    assert worse["verdict"] == "significant" and worse["ci"][1] < 0 and worse["worse"] == 30
    assert paired_bootstrap(old, better) == paired_bootstrap(old, better)  # seeded


def test_evaluate_stage_writes_intervals_and_per_query_file(tmp_path, monkeypatch):
    """The stage itself, on a tiny model and 12 test images (no MLflow run: no carsearch_run.json)."""
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.stages import evaluate
    from testkit import TINY, write_pairs, write_params

    write_pairs(tmp_path, {"train": 2, "val": 2, "test": 12})
    write_params(tmp_path, eval={"bootstrap": {"n": 200, "seed": 3, "confidence": 0.9}})
    save_clip(*load_clip(dict(TINY), seed=1), tmp_path / "models/finetuned")
    monkeypatch.setenv("CARSEARCH_ROOT", str(tmp_path))
    evaluate.main()
    ev = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert ev["bootstrap"]["resamples"] == 200 and ev["bootstrap"]["confidence"] == 0.9
    t2i = ev["finetuned"]["text_to_image"]
    assert t2i["recall@5_ci"][0] <= t2i["recall@5"] <= t2i["recall@5_ci"][1]
    assert "recall@5_ci" in ev["gain"]["text_to_image"]
    for name in ("base", "finetuned"):  # per class of body type and colour, with intervals
        pc = ev[name]["per_class"]
        assert "color" in pc and set(pc) <= {"body_type", "color", "view"}
        for cls in pc["color"]["by_class"].values():
            assert cls["top1_ci"][0] <= cls["top1"] <= cls["top1_ci"][1]
    table = read_query_csv((tmp_path / "metrics/eval_queries.csv").read_text())
    assert len(table["text_to_image"]) == ev["queries"]["text_to_image"]
    mean = np.mean([r["finetuned_recall@5"] for r in table["text_to_image"].values()])
    assert mean == pytest.approx(t2i["recall@5"], abs=1e-4)
