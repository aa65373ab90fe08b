"""How sure are the retrieval numbers? Per-query results, bootstrap confidence intervals over
queries, and the paired bootstrap that compares two revisions query by query.

- `query_results`: every query's recall@k / mAP@k / MRR (the headline metrics are their means),
  with the query's identity (the text of a text query, the image id of an image query).
- `add_intervals`: a percentile bootstrap over queries (`eval.bootstrap.n` resamples, seeded by
  `eval.bootstrap.seed`) next to every headline metric of eval.json (`"recall@5_ci": [lo, hi]`),
  and for the fine-tuned minus base gain (paired: both models on the same resampled queries).
- `write_query_csv` / `read_query_csv`: metrics/eval_queries.csv, one row per query.
- `paired_bootstrap`: the mean difference of two paired per-query arrays and its interval; the
  PR report calls a change "significant" when that interval excludes 0.

Resampling uses numpy's seeded `Generator.integers` and fixed-order numpy sums (no BLAS), so the
intervals are the same on every machine for the same per-query values.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from carsearch.core.io import write_text
from carsearch.core.schema import Bootstrap
from carsearch.evaluation.metrics import per_query_metrics
from carsearch.evaluation.protocol import judged_scores, labelled_for
from carsearch.sources.labels import same_model_relevance

DIRECTIONS = ("text_to_image", "image_to_image")
MODELS = ("base", "finetuned")
_CHUNK = 4_000_000  # gathered values per bootstrap chunk (memory bound, ~32 MB)


def bootstrap_settings(cfg: Bootstrap) -> dict:
    """`eval.bootstrap` (conf/eval/default.yaml) typed: {"n", "seed", "confidence"}."""
    out = {"n": int(cfg.n), "seed": int(cfg.seed), "confidence": float(cfg.confidence)}
    if out["n"] < 1 or not 0.0 < out["confidence"] < 1.0:
        raise ValueError(f"eval.bootstrap: n must be >= 1 and 0 < confidence < 1, got {out}")
    return out


def query_results(
    model_out: Mapping,
    labels: list[dict],
    ids: Sequence[str],
    attrs: Sequence[str],
    ks: Iterable[int] = (1, 5, 10),
    map_k: int = 10,
) -> dict[str, dict]:
    """Per-query metrics of one model, scored exactly as `evaluation.evaluate_embeddings` does.
    `model_out`: {"img": [N, D], "txt": [Q, D], "texts": [Q], "rel": [Q, N]} (full_report's query
    data plus the image embeddings). Returns {direction: {"query": [...], "relevant": int array,
    "values": {metric: float64 array}}}, queries with no relevant image left out (as in the means)."""
    img, txt, rel = model_out["img"], model_out["txt"], np.asarray(model_out["rel"], dtype=bool)
    ks = list(ks)
    out = {}
    if len(model_out["texts"]):
        t2i = judged_scores(txt @ img.T, labelled_for(labels, attrs))
        out["text_to_image"] = _one(t2i, rel, list(model_out["texts"]), ks, map_k)
    i2i = img @ img.T
    np.fill_diagonal(i2i, -np.inf)
    out["image_to_image"] = _one(i2i, same_model_relevance(labels), [str(i) for i in ids], ks, map_k)
    return out


def _one(scores, rel, names, ks, map_k) -> dict:
    keep, values = per_query_metrics(scores, rel, ks, map_k)
    return {
        "query": [n for n, k in zip(names, keep) if k],
        "relevant": rel.sum(axis=1)[keep].astype(int),
        "values": values,
    }


def _resample_means(columns: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Bootstrap means of each column of `columns` [Q, M] over `n` resamples of its rows: [n, M]."""
    q, m = columns.shape
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK // max(1, q * m))
    out = np.empty((n, m), dtype=np.float64)
    for start in range(0, n, per):
        b = min(per, n - start)
        idx = rng.integers(0, q, size=(b, q))
        out[start : start + b] = columns[idx].sum(axis=1) / q
    return out


def _interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """Percentile interval per column: [[lo, hi], ...]."""
    a = (1.0 - confidence) / 2.0
    return np.quantile(samples, [a, 1.0 - a], axis=0).T


def bootstrap_ci(
    values: Mapping[str, np.ndarray], n: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of the mean of each per-query array (all resampled together)."""
    names = list(values)
    if not names or not len(values[names[0]]):
        return {}
    cols = np.column_stack([np.asarray(values[k], dtype=np.float64) for k in names])
    iv = _interval(_resample_means(cols, n, seed), confidence)
    return {k: (float(lo), float(hi)) for k, (lo, hi) in zip(names, iv)}


def add_intervals(results: dict, per_query: Mapping[str, Mapping[str, dict]], cfg: Bootstrap, ndigits: int = 4) -> dict:
    """Put `"<metric>_ci": [lo, hi]` next to every metric of `results[model][direction]` that has
    per-query values, and next to `results["gain"][direction][metric]` (fine-tuned minus base on
    the same resampled queries). Lists are not numbers to `dvc metrics diff`, so its table keeps
    only the scalar metrics. Returns the settings used."""
    s = bootstrap_settings(cfg)
    for d in DIRECTIONS:
        if not all(d in per_query.get(m, {}) for m in MODELS):
            continue
        base, ft = per_query["base"][d], per_query["finetuned"][d]
        if not len(base["query"]) or base["query"] != ft["query"]:
            continue
        metrics = [k for k in base["values"] if k in ft["values"]]
        cols = np.column_stack(
            [base["values"][k] for k in metrics]
            + [ft["values"][k] for k in metrics]
            + [ft["values"][k] - base["values"][k] for k in metrics]
        )
        iv = _interval(_resample_means(cols, s["n"], s["seed"]), s["confidence"])
        for j, target in enumerate(
            (results.get("base", {}).get(d), results.get("finetuned", {}).get(d), results.get("gain", {}).get(d))
        ):
            if target is None:
                continue
            for i, k in enumerate(metrics):
                if k in target:
                    lo, hi = iv[j * len(metrics) + i]
                    target[f"{k}_ci"] = [round(float(lo), ndigits), round(float(hi), ndigits)]
    results["bootstrap"] = {
        "resamples": s["n"],
        "seed": s["seed"],
        "confidence": s["confidence"],
        "over": "queries (percentile bootstrap); gain: paired, same resampled queries",
        "per_query": "eval_queries.csv",
    }
    return s


def query_rows(per_query: Mapping[str, Mapping[str, dict]]) -> tuple[list[str], list[list]]:
    """(header, rows) of the per-query table: direction, query, relevant, then base_<metric>... and
    finetuned_<metric>... for each query both models were scored on."""
    models = [m for m in MODELS if m in per_query] or list(per_query)
    metrics: list[str] = []
    for m in models:
        for d in DIRECTIONS:
            for k in per_query[m].get(d, {}).get("values", {}):
                if k not in metrics:
                    metrics.append(k)
    header = ["direction", "query", "relevant"] + [f"{m}_{k}" for m in models for k in metrics]
    rows = []
    for d in DIRECTIONS:
        ref = per_query[models[0]].get(d)
        if not ref:
            continue
        for i, q in enumerate(ref["query"]):
            row = [d, q, int(ref["relevant"][i])]
            for m in models:
                vals = per_query[m][d]["values"]
                row += [_fmt(vals[k][i]) if k in vals else "" for k in metrics]
            rows.append(row)
    return header, rows


def _fmt(v) -> str:
    v = round(float(v), 6)
    return str(int(v)) if v.is_integer() else repr(v)


def write_query_csv(path: str | Path, per_query: Mapping[str, Mapping[str, dict]]) -> Path:
    header, rows = query_rows(per_query)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text(Path(path), buf.getvalue())
    return Path(path)


def read_query_csv(text: str) -> dict[str, dict[str, dict[str, float]]]:
    """metrics/eval_queries.csv -> {direction: {query: {column: value}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        d, q = row.pop("direction"), row.pop("query")
        out.setdefault(d, {})[q] = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
    return out


def paired_bootstrap(old: np.ndarray, new: np.ndarray, n: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean of `new - old` over paired queries, its percentile bootstrap interval, and a verdict:
    "significant" when the interval excludes 0, "no change" when every query is equal, else
    "within noise"."""
    old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    diff = new - old
    res = {
        "queries": int(len(diff)),
        "old": float(old.mean()) if len(diff) else float("nan"),
        "new": float(new.mean()) if len(diff) else float("nan"),
        "diff": float(diff.mean()) if len(diff) else float("nan"),
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
    }
    if not len(diff) or not diff.any():
        res.update(ci=(0.0, 0.0), verdict="no change" if len(diff) else "no queries")
        return res
    lo, hi = _interval(_resample_means(diff[:, None], n, seed), confidence)[0]
    res["ci"] = (float(lo), float(hi))
    res["verdict"] = "significant" if lo > 0 or hi < 0 else "within noise"
    return res
