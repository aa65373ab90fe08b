"""Retrieval metrics over a score matrix and a relevance matrix (numpy, exact, tie-stable).

Conventions (those of CLIP retrieval benchmarks): `recall@k` is the fraction of queries with at
least one relevant item in the top k (torchmetrics' RetrievalHitRate); `map@k` is mean average
precision over the top k (torchmetrics' RetrievalMAP(top_k=k)); `mrr` is mean reciprocal rank of
the first relevant item. Queries with no relevant item are skipped and counted.
"""

from __future__ import annotations

import numpy as np


def _ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be the same 2-D shape")
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(relevant, order, axis=1)


def per_query_metrics(
    scores: np.ndarray, relevant: np.ndarray, ks=(1, 5, 10), map_k: int = 10
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each query's `recall@k` (0 or 1), `mrr` (1 / rank of the first relevant item) and
    `map@k` (average precision in the top k), for the queries with at least one relevant item.
    Returns (kept: bool mask over all queries, {metric: float64 array over the kept queries});
    `retrieval_metrics` is the mean of these arrays."""
    rel = _ranked_relevance(scores, relevant)
    keep = rel.any(axis=1)
    rel = rel[keep]
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall@{k}"] = rel[:, :k].any(axis=1).astype(np.float64)
    first = rel.argmax(axis=1)
    out["mrr"] = 1.0 / (first + 1)
    top = rel[:, :map_k].astype(np.float64)
    hits = np.cumsum(top, axis=1)
    prec = hits / np.arange(1, top.shape[1] + 1)
    n_rel_top = top.sum(axis=1)
    out[f"map@{map_k}"] = np.where(n_rel_top > 0, (prec * top).sum(axis=1) / np.maximum(n_rel_top, 1), 0.0)
    return keep, out


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, ks=(1, 5, 10), map_k: int = 10) -> dict[str, float]:
    keep, per_query = per_query_metrics(scores, relevant, ks, map_k)
    out: dict[str, float] = {"queries": int(keep.sum()), "skipped_queries": int((~keep).sum())}
    if not keep.any():
        return out
    for name, values in per_query.items():
        out[name] = float(values.mean())
    return out


def recall_curve(scores: np.ndarray, relevant: np.ndarray, max_k: int = 10) -> list[float]:
    rel = _ranked_relevance(scores, relevant)
    rel = rel[rel.any(axis=1)]
    if not len(rel):
        return [0.0] * max_k
    first = rel.argmax(axis=1)
    return [float((first < k).mean()) for k in range(1, max_k + 1)]
