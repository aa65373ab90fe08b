"""Fit the relevance calibration (`confidence` on every hit) on held-out labelled queries.

The queries: the attribute queries of the test split ("a red sedan seen from the front", relevant
= every image with those labels) and the phrasings of every `eval.sets` set ("a white car",
relevant = that colour). Each query's top `eval.calibration.top_k` hits give one row each: the
features of carsearch.core.confidence (raw score, score standardised against the query's scores
over the gallery, gap to the best, rank fraction; the query's score spread) and whether the hit
is relevant.

Method: a logistic regression on the standardised features with the weights of the
score-dependent features bounded to the sign that keeps a better score more confident (L-BFGS-B,
scipy, L2), then isotonic regression (scikit-learn) of the match rate on that linear score: the
confidence. "Confident": confidence >= the threshold, the lowest confidence whose out-of-fold
precision reaches `target_precision` over at least `min_confident` hits (None when no level
does: no hit is then confident). Honest figures: every figure is out-of-fold, queries split by
GroupKFold (a query's hits are never both fitted and judged), and each fold's threshold is chosen
inside its training queries (nested), per source; `transfer` fits on the other sources only
(renders -> real photos). The calibration written for the index is the fit on every query.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from carsearch.core.confidence import FEATURES, SIGNS, hit_features, predict
from carsearch.core.io import write_bytes
from carsearch.evaluation.evalsets import PHRASINGS

# a source of queries with nothing to find (car-less frames): kept although no hit of theirs matches
NULL_PREFIX = "null:"
METHOD = "sign-bounded logistic regression (scipy L-BFGS-B) + isotonic regression (scikit-learn)"


def query_rows(
    scores: np.ndarray, rel: np.ndarray, top_k: int, keep_empty: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, query index) of each query's top `top_k` hits. `scores` [Q, N] with
    -inf for images outside the query's gallery (unlabelled for its attributes); `rel` [Q, N].
    A query with nothing relevant in its gallery is left out unless `keep_empty` (null queries)."""
    xs, ys, gs = [], [], []
    for q, (s, r) in enumerate(zip(scores, rel)):
        gallery = np.isfinite(s)
        if gallery.sum() < 2 or not (keep_empty or r[gallery].any()):
            continue  # a query with nothing relevant in its gallery says nothing about relevance
        top = np.argsort(-np.where(gallery, s, -np.inf), kind="stable")[: min(top_k, int(gallery.sum()))]
        xs.append(hit_features(s[top], s[gallery]))
        ys.append(r[top].astype(int))
        gs.append(np.full(len(top), q))
    if not xs:
        return np.zeros((0, len(FEATURES))), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def _linear_fit(xz: np.ndarray, y: np.ndarray, l2: float, features=FEATURES, signs=SIGNS) -> tuple[np.ndarray, float]:
    """Logistic regression with the weight of each score-dependent feature bounded to its SIGNS sign."""
    from scipy.optimize import minimize

    n = len(y)

    def loss(w):
        t = xz @ w[1:] + w[0]
        p = 1.0 / (1.0 + np.exp(-np.clip(t, -40, 40)))
        grad = np.r_[np.mean(p - y), xz.T @ (p - y) / n + 2 * l2 * w[1:]]
        return float(np.mean(np.logaddexp(0.0, t) - y * t) + l2 * w[1:] @ w[1:]), grad

    bounds = [(None, None)] + [{1.0: (0.0, None), -1.0: (None, 0.0)}.get(signs[f], (None, None)) for f in features]
    w = minimize(loss, np.zeros(xz.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return w[1:], float(w[0])


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, features=FEATURES, signs=SIGNS) -> dict:
    """The calibration dict `core.confidence.predict` reads (no threshold: `fit_with_threshold`);
    `features`/`signs`: another feature set than a hit's (a sighting's: `core.sightings`)."""
    from sklearn.isotonic import IsotonicRegression

    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    coef = np.zeros(len(features))
    rate = float(y.mean()) if len(y) else 0.0
    intercept = float(np.log(max(rate, 1e-6) / max(1 - rate, 1e-6)))
    iso = None
    if 0 < y.sum() < len(y):
        coef, intercept = _linear_fit((x - mean) / scale, y.astype(np.float64), l2, features, signs)
        t = ((x - mean) / scale) @ coef + intercept
        ir = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(t, y)
        iso = {"x": [round(float(v), 6) for v in ir.X_thresholds_], "y": [round(float(v), 6) for v in ir.y_thresholds_]}
    return {
        "method": METHOD,
        "features": list(features),
        "coef": {f: round(float(coef[i]), 6) for i, f in enumerate(features)},
        "intercept": round(intercept, 6),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "isotonic": iso,
        "rows": int(len(y)),
        "base_rate": round(rate, 4),
    }


def wilson_lower(k: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Wilson score lower bound of a binomial proportion k/n (one-sided, `z` standard errors)."""
    n = np.maximum(np.asarray(n, np.float64), 1.0)
    ph = np.asarray(k, np.float64) / n
    centre = ph + z * z / (2 * n)
    spread = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(p: np.ndarray, y: np.ndarray, target: float, min_confident: int, z: float = 0.0) -> float | None:
    """The lowest confidence t such that the hits with confidence >= t (at least `min_confident` of
    them) match at least `target` of the time, by the Wilson lower bound at `z` (0: the plain
    share; > 0 leaves a margin for new queries); None when no t does."""
    ok = np.isfinite(p)
    p, y = p[ok], y[ok]
    levels = np.unique(p)[::-1]  # distinct confidences, highest first (ties go together)
    n = np.array([(p >= t).sum() for t in levels])
    hits = np.array([y[p >= t].sum() for t in levels])
    good = (n >= max(int(min_confident), 1)) & (wilson_lower(hits, n, z) >= target - 1e-12)
    return float(levels[good][-1]) if good.any() else None


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, cfg: dict | None = None, **feats):
    """Each row's confidence from a fit that never saw its query (GroupKFold over queries); with
    `cfg`, also whether it is confident under that fold's threshold, itself chosen out-of-fold
    inside the fold's training queries (so the threshold never saw the judged query either)."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    p, conf = np.full(len(y), np.nan), np.zeros(len(y), bool)
    if n_groups < 2:
        return p, conf
    for tr, te in GroupKFold(n_splits=min(folds, n_groups)).split(x, y, groups):
        calib = fit_with_threshold(x[tr], y[tr], groups[tr], cfg, **feats) if cfg else fit(x[tr], y[tr], **feats)
        p[te] = predict(calib, x[te])
        if cfg and calib["threshold"] is not None:
            conf[te] = p[te] >= calib["threshold"]
    return p, conf


def fit_with_threshold(x: np.ndarray, y: np.ndarray, groups: np.ndarray, cfg: dict, **feats) -> dict:
    """`fit` on every row, and its threshold for `cfg["target_precision"]` from out-of-fold
    confidences (`feats`: `fit`'s features and signs)."""
    calib = fit(x, y, **feats)
    p, _ = out_of_fold(x, y, groups, int(cfg["folds"]), **feats)
    thr = choose_threshold(p, y, float(cfg["target_precision"]), int(cfg["min_confident"]), float(cfg["margin_z"]))
    return {
        **calib,
        "target_precision": float(cfg["target_precision"]),
        "threshold": thr,
        "target_reached": thr is not None,
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


def judge(p: np.ndarray, y: np.ndarray, conf: np.ndarray, bins: int) -> dict:
    """ECE, and what "confident" (`conf`, a mask) means: precision (share of confident hits that
    match), coverage (share of the judged top-k hits marked confident), recall (share of the
    matching top-k hits marked confident)."""
    return {
        "hits": int(len(y)),
        "base_rate": round(float(y.mean()), 4) if len(y) else 0.0,
        "ece": round(ece(p, y, bins), 4),
        "confident_precision": round(float(y[conf].mean()), 4) if conf.any() else None,
        "confident_coverage": round(float(conf.mean()), 4) if len(y) else 0.0,
        "confident_recall": round(float(conf[y == 1].mean()), 4) if (y == 1).any() else None,
        "reliability": reliability(p, y, bins),
    }


def calibrate(sources: dict[str, tuple[np.ndarray, np.ndarray]], cfg: dict) -> tuple[dict, dict]:
    """(calibration fitted on every query, report). `sources`: name -> (scores [Q, N], rel [Q, N]).
    A source named `NULL_PREFIX...` holds queries with nothing to find (every hit a non-match).
    Report: per source (and "all") the out-of-fold figures (`judge`), `transfer` (fit on the other
    sources), how many queries each source gave, and the threshold of the shipped fit."""
    top_k, folds, bins = int(cfg["top_k"]), int(cfg["folds"]), int(cfg["bins"])
    rows = {}
    for name, (scores, rel) in sources.items():
        x, y, g = query_rows(scores, rel, top_k, keep_empty=name.startswith(NULL_PREFIX))
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
    oof, conf = out_of_fold(x_all, y_all, g_all, folds, cfg)
    ok = np.isfinite(oof)
    calib = fit_with_threshold(x_all, y_all, g_all, cfg)
    calib["sources"] = {name: int(len(np.unique(g))) for name, _, _, g in parts}
    report: dict = {
        "top_k": top_k,
        "target_precision": calib["target_precision"],
        "threshold": calib["threshold"],
        "target_reached": calib["target_reached"],
        "folds": folds,
        "held_out": {},
        "transfer": {},
    }
    report["held_out"]["all"] = {"queries": int(len(np.unique(g_all[ok]))), **judge(oof[ok], y_all[ok], conf[ok], bins)}
    for name, x, y, g in parts:
        m = (src == name) & ok
        report["held_out"][name] = {"queries": int(len(np.unique(g_all[m]))), **judge(oof[m], y_all[m], conf[m], bins)}
        other = src != name
        if len(rows) > 1 and 0 < y_all[other].sum() < other.sum():
            c = fit_with_threshold(x_all[other], y_all[other], g_all[other], cfg)
            p = predict(c, x)
            mask = p >= c["threshold"] if c["threshold"] is not None else np.zeros(len(y), bool)
            report["transfer"][name] = {"fitted_on": sorted(set(rows) - {name}), **judge(p, y, mask, bins)}
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
