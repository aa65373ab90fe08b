"""Fit the relevance calibration (`confidence` on every hit) on held-out labelled queries.

The queries: the attribute queries of the test split ("a red sedan seen from the front", relevant
= every image with those labels) and the phrasings of every `eval.sets` set ("a white car",
relevant = that colour). Each query's top `eval.calibration.top_k` hits give one row each: the
query-invariant features of carsearch.core.confidence (score standardised against the query's
scores over the gallery, gap to the best, rank fraction) and whether the hit is relevant.

Method: logistic regression (scikit-learn) on the standardised features; a feature whose weight
comes out with the sign that would make a better score less confident is dropped and the model
refit, one at a time (so confidence is monotone in the score for one query). Honest figures: every figure is
out-of-fold, queries split by GroupKFold (a query's hits are never both fitted and judged), per
source; `transfer` fits on the other sources only (renders -> real photos). The calibration
written for the index is the fit on every query.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from carsearch.core.confidence import FEATURES, SIGNS, hit_features, predict
from carsearch.core.io import write_bytes
from carsearch.evaluation.evalsets import PHRASINGS


def query_rows(scores: np.ndarray, rel: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, query index) of each query's top `top_k` hits. `scores` [Q, N] with
    -inf for images outside the query's gallery (unlabelled for its attributes); `rel` [Q, N]."""
    xs, ys, gs = [], [], []
    for q, (s, r) in enumerate(zip(scores, rel)):
        gallery = np.isfinite(s)
        if gallery.sum() < 2 or not r[gallery].any():
            continue  # a query with nothing relevant in its gallery says nothing about relevance
        top = np.argsort(-np.where(gallery, s, -np.inf), kind="stable")[: min(top_k, int(gallery.sum()))]
        xs.append(hit_features(s[top], s[gallery]))
        ys.append(r[top].astype(int))
        gs.append(np.full(len(top), q))
    if not xs:
        return np.zeros((0, len(FEATURES))), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit(x: np.ndarray, y: np.ndarray, threshold: float = 0.5, c: float = 1.0) -> dict:
    """Sign-constrained logistic regression -> the calibration dict `core.confidence.predict` reads."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    xz = (x - mean) / scale
    keep = list(range(len(FEATURES)))
    coef = np.zeros(len(FEATURES))
    intercept = float(np.log(max(y.mean(), 1e-6) / max(1 - y.mean(), 1e-6)))
    if 0 < y.sum() < len(y):
        while keep:
            lr = LogisticRegression(C=c, max_iter=1000).fit(xz[:, keep], y)
            w = lr.coef_[0]
            signed = [wi * SIGNS[FEATURES[f]] for f, wi in zip(keep, w)]
            if min(signed) >= 0:
                coef[:] = 0.0
                coef[keep] = w
                intercept = float(lr.intercept_[0])
                break
            # the features are correlated: drop only the most wrong-signed one, then refit
            keep.pop(int(np.argmin(signed)))
    return {
        "method": "logistic regression (scikit-learn), sign-constrained",
        "features": list(FEATURES),
        "coef": {f: round(float(coef[i]), 6) for i, f in enumerate(FEATURES)},
        "intercept": round(intercept, 6),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "threshold": float(threshold),
        "rows": int(len(y)),
        "base_rate": round(float(y.mean()), 4) if len(y) else 0.0,
    }


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width probability bins of |mean p - hit rate| x share."""
    if not len(p):
        return 0.0
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean() for b in np.unique(idx)))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return [
        {
            "bin": [b / bins, (b + 1) / bins],
            "mean_confidence": round(float(p[idx == b].mean()), 4),
            "hit_rate": round(float(y[idx == b].mean()), 4),
            "hits": int((idx == b).sum()),
        }
        for b in range(bins)
        if (idx == b).any()
    ]


def judge(p: np.ndarray, y: np.ndarray, threshold: float, bins: int) -> dict:
    """ECE, and what "confident" (p >= threshold) means: precision (share of confident hits that
    match), coverage (share of the judged top-k hits marked confident), recall (share of the
    matching top-k hits marked confident)."""
    conf = p >= threshold
    return {
        "hits": int(len(y)),
        "base_rate": round(float(y.mean()), 4) if len(y) else 0.0,
        "ece": round(ece(p, y, bins), 4),
        "confident_precision": round(float(y[conf].mean()), 4) if conf.any() else None,
        "confident_coverage": round(float(conf.mean()), 4) if len(y) else 0.0,
        "confident_recall": round(float(conf[y == 1].mean()), 4) if (y == 1).any() else None,
        "reliability": reliability(p, y, bins),
    }


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, threshold: float) -> np.ndarray:
    """Each row's confidence from a fit that never saw its query (GroupKFold over queries)."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    p = np.full(len(y), np.nan)
    if n_groups < 2:
        return p
    for tr, te in GroupKFold(n_splits=min(folds, n_groups)).split(x, y, groups):
        p[te] = predict(fit(x[tr], y[tr], threshold), x[te])
    return p


def calibrate(sources: dict[str, tuple[np.ndarray, np.ndarray]], cfg: dict) -> tuple[dict, dict]:
    """(calibration fitted on every query, report). `sources`: name -> (scores [Q, N], rel [Q, N]).
    Report: per source (and "all") the out-of-fold figures (`judge`), `transfer` (fit on the other
    sources), and how many queries each source gave."""
    top_k, folds, thr, bins = int(cfg["top_k"]), int(cfg["folds"]), float(cfg["threshold"]), int(cfg["bins"])
    rows = {}
    for name, (scores, rel) in sources.items():
        x, y, g = query_rows(scores, rel, top_k)
        if len(y):
            rows[name] = (x, y, g)
    if not rows:
        return {}, {"skipped": "no labelled query with a relevant image in its gallery"}
    offset, parts = 0, []
    for name, (x, y, g) in rows.items():
        parts.append((name, x, y, g + offset))
        offset += int(g.max()) + 1
    x_all = np.concatenate([p[1] for p in parts])
    y_all = np.concatenate([p[2] for p in parts])
    g_all = np.concatenate([p[3] for p in parts])
    src = np.concatenate([[name] * len(y) for name, _, y, _ in parts])
    oof = out_of_fold(x_all, y_all, g_all, folds, thr)
    ok = np.isfinite(oof)
    report: dict = {"top_k": top_k, "threshold": thr, "folds": folds, "held_out": {}, "transfer": {}}
    report["held_out"]["all"] = {"queries": int(len(np.unique(g_all[ok]))), **judge(oof[ok], y_all[ok], thr, bins)}
    for name, x, y, g in parts:
        m = (src == name) & ok
        report["held_out"][name] = {"queries": int(len(np.unique(g_all[m]))), **judge(oof[m], y_all[m], thr, bins)}
        other = src != name
        if len(rows) > 1 and 0 < y_all[other].sum() < other.sum():
            report["transfer"][name] = {
                "fitted_on": sorted(set(rows) - {name}),
                **judge(predict(fit(x_all[other], y_all[other], thr), x), y, thr, bins),
            }
    calib = fit(x_all, y_all, thr)
    calib["sources"] = {name: int(len(np.unique(g))) for name, _, _, g in parts}
    return calib, report


def reliability_png(reports: dict[str, dict], out: Path) -> None:
    """Reliability diagram: hit rate against mean confidence per bin, one line per source (held out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfectly calibrated")
    for label, r in reports.items():
        pts = r.get("reliability") or []
        if pts:
            ax.plot(
                [b["mean_confidence"] for b in pts],
                [b["hit_rate"] for b in pts],
                marker="o",
                label=f"{label} (ECE {r['ece']:.3f}, {r['hits']} hits)",
            )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (held out)", ylabel="share of hits that match")
    ax.set_title("Reliability of hit confidence")
    ax.legend(fontsize=7, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes(out, buf.getvalue())


def split_source(
    img: np.ndarray, txt: np.ndarray, rel: np.ndarray, judged: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The test split's attribute queries as (scores, rel), -inf outside each query's gallery."""
    s = txt @ img.T
    return np.where(judged[None, :], s, -np.inf), rel


def set_source(img: np.ndarray, labels: list[dict], encode_text, attrs) -> tuple[np.ndarray, np.ndarray]:
    """An eval set's queries (every phrasing of every value of every attribute with >= 2 values)."""
    scores, rels = [], []
    for a in attrs:
        vals = [lab.get(a) for lab in labels]
        values = sorted({v for v in vals if v})
        if len(values) < 2:
            continue
        have = np.array([v is not None for v in vals])
        for p in PHRASINGS.get(a, ("a {v} car", "a photo of a {v} car", "{v}")):
            emb = encode_text([p.format(v=v) for v in values])
            scores.append(np.where(have[None, :], emb @ img.T, -np.inf))
            rels.append(np.array([[x == v for x in vals] for v in values]))
    if not scores:
        return np.zeros((0, len(labels))), np.zeros((0, len(labels)), bool)
    return np.concatenate(scores), np.concatenate(rels)
