"""Calibrated relevance at query time: the probability that a hit matches its query (pure NumPy;
the fit is in carsearch.evaluation.calibration, run by `evaluate`).

Features of a hit, all from its cosine score `s` and the query's scores over a fixed random
sample of the index (`calibration_ref.npy` in the index version, a few hundred vectors):
- score-dependent, each monotone in `s`: `score` (the raw cosine: the fine-tuned model's scale
  is shared by all queries and carries most of the signal), `z` ((s - mean) / std), `gap`
  ((s - max) / std, <= ~0), `log_rank` (log of the share of the sample scoring at least s);
- query-level, the same for every hit of one query: `ref_mean`, `ref_std`, `ref_p99`, `ref_p95`
  (how the query's scores spread over the index: a query most of the index half-matches reads
  differently from one a few images stand out for).
The fit is a linear score of the standardised features (weights of the score-dependent ones
constrained to the sign that makes a better score more confident; query-level ones free),
mapped to a probability by isotonic regression (non-decreasing). So for one query a better
score never gets a lower confidence. "Confident" is confidence >= the fit's `threshold`, chosen
by `evaluate` as the lowest confidence whose held-out precision reaches `target_precision`;
None when no level does (then no hit is confident, and CLI/API/page say so).

One fit per query kind (`QUERY_KINDS`: what the query vector is made of). A text query's cosines
and an image query's live on different scales (image->image cosines of one model sit far above
its text->image ones), so a fit of one kind says nothing about another. The calibration document
(metrics/calibration.json per model, calibration.json in an index version) is
`{"kinds": {kind: fit}}`; a kind without a fit gets no confidence and nothing confident, and
CLI/API/page say so (`Calibration.note`). A document of one bare fit (written before per-kind
fits) is the text fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# what a query is made of; each kind that shows a confidence has its own fit (plate: no fit yet;
# sightings: a fit of its own features, `core.sightings`, fitted by `evaluation.reid`)
QUERY_KINDS = ("text", "image", "text+image", "negative", "plate", "sightings")
FEATURES = ("score", "z", "gap", "log_rank", "ref_mean", "ref_std", "ref_p99", "ref_p95")
CALIBRATION_FILE = "calibration.json"
REFERENCE_FILE = "calibration_ref.npy"
# the sign each weight must have for the confidence to grow with the score (0: query-level, free)
SIGNS = {
    "score": 1.0,
    "z": 1.0,
    "gap": 1.0,
    "log_rank": -1.0,
    "ref_mean": 0.0,
    "ref_std": 0.0,
    "ref_p99": 0.0,
    "ref_p95": 0.0,
}


def hit_features(scores, ref_scores) -> np.ndarray:
    """[n_hits, len(FEATURES)] from the hits' scores and the query's scores over the reference sample."""
    s = np.asarray(scores, np.float64).reshape(-1)
    ref = np.sort(np.asarray(ref_scores, np.float64).reshape(-1))
    if ref.size == 0:
        raise ValueError("calibration: the reference sample is empty")
    mu, sd = float(ref.mean()), max(float(ref.std()), 1e-6)
    above = ref.size - np.searchsorted(ref, s, side="left")  # sample rows scoring >= s
    frac = np.maximum(above, 0.5) / ref.size
    const = [mu, sd, float(np.quantile(ref, 0.99)), float(np.quantile(ref, 0.95))]
    return np.column_stack([s, (s - mu) / sd, (s - ref[-1]) / sd, np.log(frac), *(np.full(s.size, c) for c in const)])


def linear(calib: dict, feats: np.ndarray) -> np.ndarray:
    """The fit's linear score (a logit) of rows of `hit_features` (or of the fit's own `features`:
    a sightings fit's are `core.sightings.FEATURES`)."""
    w = np.array([float(calib["coef"].get(f, 0.0)) for f in calib.get("features") or FEATURES])
    mean = np.asarray(calib["mean"], np.float64)
    scale = np.asarray(calib["scale"], np.float64)
    return ((np.asarray(feats, np.float64) - mean) / scale) @ w + float(calib["intercept"])


def predict(calib: dict, feats: np.ndarray) -> np.ndarray:
    """P(relevant) for rows of `hit_features` under a fitted calibration dict: the isotonic map of
    the linear score (flat beyond its ends), or the logistic of it when the fit has no map."""
    t = linear(calib, feats)
    iso = calib.get("isotonic")
    if iso:
        return np.interp(t, np.asarray(iso["x"], np.float64), np.asarray(iso["y"], np.float64))
    return 1.0 / (1.0 + np.exp(-np.clip(t, -40, 40)))


def query_kind(text: bool, image: bool, negative: bool = False, plate: bool = False) -> str:
    """The kind of a query from what its vector is made of (an image: an upload or an indexed image;
    `plate`: a plate filter, the query's only part when neither text nor image is given)."""
    if plate and not (text or image):
        return "plate"
    if negative:
        return "negative"
    if text and image:
        return "text+image"
    return "image" if image else "text"


def calibration_doc(fits: dict[str, dict], **extra) -> dict:
    """The calibration document: the fit of each query kind (a kind of `QUERY_KINDS`), plus `extra`."""
    unknown = set(fits) - set(QUERY_KINDS)
    if unknown:
        raise ValueError(f"calibration: unknown query kind(s) {sorted(unknown)} (known: {', '.join(QUERY_KINDS)})")
    return {"kinds": {k: fits[k] for k in QUERY_KINDS if fits.get(k)}, **extra}


def fits_by_kind(doc: dict | None) -> dict[str, dict]:
    """The usable fits of a calibration document by query kind; an old document (one bare fit, text
    queries only) reads as text-only; a fit without coefficients or of an unknown kind is left out."""
    if not isinstance(doc, dict):
        return {}
    kinds = {"text": doc} if "coef" in doc and "kinds" not in doc else doc.get("kinds") or {}
    ok = lambda f: (  # noqa: E731
        isinstance(f, dict) and f.get("coef") and len(f.get("mean") or ()) == len(f.get("features") or FEATURES)
    )
    return {k: f for k, f in kinds.items() if k in QUERY_KINDS and ok(f)}


class Calibrator:
    """The calibration of one query kind in one index version: `confidence(query_vector, scores)`,
    `threshold` (None: the precision target was not reached on held-out queries, so no hit is confident)."""

    def __init__(self, calib: dict, reference: np.ndarray):
        self.calib, self.reference = calib, np.asarray(reference, np.float32)
        thr = calib.get("threshold")
        self.threshold = None if thr is None else float(thr)
        tp = calib.get("target_precision")
        self.target_precision = None if tp is None else float(tp)

    def confident(self, confidence) -> bool:
        return self.threshold is not None and confidence is not None and confidence >= self.threshold

    def confidence(self, query_vector, scores) -> np.ndarray:
        q = np.asarray(query_vector, np.float32).reshape(-1)
        if q.shape[0] != self.reference.shape[1]:
            return np.full(len(scores), np.nan)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return predict(self.calib, hit_features(scores, self.reference @ q))


class Calibration:
    """An index version's calibration: one `Calibrator` per fitted query kind (`get(kind)`; None:
    that kind shows no confidence), and `note(kind)`, the line saying why a kind has none."""

    def __init__(self, fits: dict[str, Calibrator]):
        self.fits = fits

    @classmethod
    def load(cls, version_dir) -> Calibration | None:
        """The version's calibration, or None when it has none (built before calibration, or by a
        pipeline without `evaluate`); a torn file reads as none (hits then carry no confidence)."""
        d = Path(str(version_dir))
        try:
            doc = json.loads((d / CALIBRATION_FILE).read_text())
            ref = np.load(d / REFERENCE_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        fits = fits_by_kind(doc)
        if ref.ndim != 2 or not ref.size or not fits:
            return None
        return cls({k: Calibrator(f, ref) for k, f in fits.items()})

    def get(self, kind: str) -> Calibrator | None:
        return self.fits.get(kind)

    def note(self, kind: str) -> str | None:
        """None when `kind` has a fit; else why its hits show no confidence."""
        if kind in self.fits:
            return None
        return (
            f"no confidence for {kind} queries: this index's calibration has no fit for them "
            f"(fitted: {', '.join(self.fits)} queries)"
        )


def no_calibration_note(kind: str) -> str:
    return f"no confidence for {kind} queries: this index has no calibration (built without evaluate's fit)"


def reference_rows(total: int, n: int, seed: int) -> np.ndarray:
    """Which of `total` index rows the reference sample holds: `n` fixed at random (all when fewer), in order."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
