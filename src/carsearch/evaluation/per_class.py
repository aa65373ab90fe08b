"""Per class of body type, colour and view: how well a model tells each value apart and finds it.

For each vocabulary attribute of `eval.zero_shot` (body_type, color, view: the label vocabulary's,
not free-form make/model), over the split's images labelled with it:

- zero-shot top-1: each image is classified by the nearest prompt among the values present ("a
  sedan", "a red car"); per class, `top1` is the share of that class's images classified as it
  (its recall) and `precision` the share of the images classified as it that are it; overall
  `top1` (every image) and `macro_top1` (the mean over classes);
- retrieval: the class's query ranks every labelled image; `ap` is its average precision
  (relevant = the images of that class).

Each `top1` and `ap` carries a percentile bootstrap interval (`"top1_ci": [lo, hi]`) over the images
(`eval.bootstrap`: resamples, seed, confidence; a class's top-1 over its own images). The average
precision of a resample is exact for repeated images (a harmonic-number sum), without BLAS, so the
intervals are the same on every machine for the same scores.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from carsearch.core.vocab import UNKNOWN, query_text
from carsearch.evaluation.stats import bootstrap_ci, bootstrap_settings

ATTRIBUTES = ("body_type", "color", "view")  # the vocabulary attributes reported per class


def average_precision(scores: np.ndarray, rel: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Average precision of ranking the items by `scores` [N] (stable order), relevant where `rel`
    [N]; with `counts` [B, N] (how many times each item is in each of B resamples) the AP of each
    resample [B], copies of an item ranked together. NaN where nothing relevant is drawn."""
    order = np.argsort(-scores, kind="stable")
    r = np.asarray(rel, dtype=np.float64)[order]
    c = np.ones((1, len(r))) if counts is None else np.asarray(counts, dtype=np.float64)[:, order]
    upto, hits = np.cumsum(c, axis=1), np.cumsum(c * r, axis=1)
    before, hits_before = upto - c, hits - c * r
    n = int(upto[:, -1].max()) if upto.size else 0
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
    # the copies j = 1..c of a relevant item: sum of (hits_before + j) / (before + j)
    at = before.astype(np.int64)
    span = harmonic[at + c.astype(np.int64)] - harmonic[at]
    contrib = np.where(r > 0, c - (before - hits_before) * span, 0.0)
    total = (c * r).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = contrib.sum(axis=1) / total
    return ap if counts is not None else ap[:1]


def _ci(samples: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the finite resampled values (a resample without the class has no AP),
    as `stats.bootstrap_ci`'s; None if none."""
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return [round(float(lo), 4), round(float(hi), 4)]


def _mean_ci(values: np.ndarray, boot: Mapping, seed: int) -> list[float]:
    lo, hi = bootstrap_ci({"v": values}, boot["n"], seed, boot["confidence"])["v"]
    return [round(lo, 4), round(hi, 4)]


def _counts(n_items: int, n: int, seed: int) -> np.ndarray:
    """[n, n_items]: how often each item is drawn in each of `n` resamples of `n_items` items."""
    idx = np.random.default_rng(seed).integers(0, n_items, size=(n, n_items))
    out = np.zeros((n, n_items), dtype=np.int64)
    np.add.at(out, (np.arange(n)[:, None], idx), 1)
    return out


def attribute_classes(
    img: np.ndarray, values: list, encode_text: Callable[[list[str]], np.ndarray], attr: str, boot: Mapping
) -> dict:
    """The per-class block of one attribute: `values` the images' labels for it (None: unlabelled)."""
    keep = np.array([v is not None for v in values], dtype=bool)
    truth_vals = [v for v in values if v is not None]
    classes = sorted(set(truth_vals))
    scores = img[keep] @ encode_text([query_text(**{attr: c}) for c in classes]).T  # [N, C]
    pred = np.argmax(scores, axis=1)
    truth = np.array([classes.index(v) for v in truth_vals])
    correct = (pred == truth).astype(np.float64)
    seed = boot["seed"]
    counts = _counts(len(truth), boot["n"], seed + 1)  # the same image resamples for every class's AP
    by_class = {}
    for j, c in enumerate(classes):
        mine = truth == j
        predicted = pred == j
        top1 = float(correct[mine].mean())
        ap = float(average_precision(scores[:, j], mine)[0])
        by_class[c] = {
            "images": int(mine.sum()),
            "top1": top1,
            "top1_ci": _mean_ci(correct[mine], boot, seed + 2 + j),
            "precision": float(mine[predicted].mean()) if predicted.any() else None,
            "ap": ap,
            "ap_ci": _ci(average_precision(scores[:, j], mine, counts), boot["confidence"]),
        }
    return {
        "classes": len(classes),
        "images": int(keep.sum()),
        "chance": 1.0 / len(classes),
        "top1": float(correct.mean()),
        "top1_ci": _mean_ci(correct, boot, seed),
        "macro_top1": float(np.mean([b["top1"] for b in by_class.values()])),
        "by_class": by_class,
    }


def per_class_report(
    img: np.ndarray,
    labels: list[dict],
    encode_text: Callable[[list[str]], np.ndarray],
    attrs: Sequence[str],
    bootstrap: Mapping,
) -> dict:
    """{attribute: its per-class block} for the vocabulary attributes among `attrs` with >= 2 values
    present in `labels` (aligned with the rows of `img`, L2-normalised image embeddings)."""
    boot = bootstrap_settings(bootstrap)
    out = {}
    for a in (a for a in attrs if a in ATTRIBUTES):
        values = [v if v and v != UNKNOWN else None for v in (lab.get(a) for lab in labels)]
        if len({v for v in values if v}) >= 2:
            out[a] = attribute_classes(img, values, encode_text, a, boot)
    return out
