"""Calibrated relevance at query time: the probability that a hit matches its query (pure NumPy;
the fit is in carsearch.evaluation.calibration, run by `evaluate`).

A raw cosine score means different things for different queries ("a white car" tops out at 0.52,
"a red suv" at 0.31), so the calibration reads features that mean the same across queries, all
from the hit's score and the query's score distribution over a fixed random sample of the index
(`calibration_ref.npy` in the index version, a few hundred vectors):
- `z`: the score standardised against that distribution, (s - mean) / std;
- `gap`: the distance to the best score in the sample, in the same units ((s - max) / std; <= ~0);
- `log_rank`: log of the hit's estimated rank fraction in the index (share of the sample scoring
  at least s, floored at half a row).
Every feature is monotone in the score for one query and the fit keeps only features whose
weight has the sign that keeps the confidence increasing with the score, so for one query a
better score never gets a lower confidence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FEATURES = ("z", "gap", "log_rank")
CALIBRATION_FILE = "calibration.json"
REFERENCE_FILE = "calibration_ref.npy"
# the sign each feature's weight must have for the confidence to grow with the score
SIGNS = {"z": 1.0, "gap": 1.0, "log_rank": -1.0}


def hit_features(scores, ref_scores) -> np.ndarray:
    """[n_hits, len(FEATURES)] from the hits' scores and the query's scores over the reference sample."""
    s = np.asarray(scores, np.float64).reshape(-1)
    ref = np.sort(np.asarray(ref_scores, np.float64).reshape(-1))
    if ref.size == 0:
        raise ValueError("calibration: the reference sample is empty")
    mu, sd = float(ref.mean()), max(float(ref.std()), 1e-6)
    above = ref.size - np.searchsorted(ref, s, side="left")  # sample rows scoring >= s
    frac = np.maximum(above, 0.5) / ref.size
    return np.stack([(s - mu) / sd, (s - ref[-1]) / sd, np.log(frac)], axis=1)


def predict(calib: dict, feats: np.ndarray) -> np.ndarray:
    """P(relevant) for rows of `hit_features` under a fitted calibration dict."""
    w = np.array([float(calib["coef"].get(f, 0.0)) for f in FEATURES])
    mean = np.array([float(calib["mean"][i]) for i in range(len(FEATURES))])
    scale = np.array([float(calib["scale"][i]) for i in range(len(FEATURES))])
    logit = ((np.asarray(feats, np.float64) - mean) / scale) @ w + float(calib["intercept"])
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -40, 40)))


class Calibrator:
    """The calibration of one index version: `confidence(query_vector, scores)`."""

    def __init__(self, calib: dict, reference: np.ndarray):
        self.calib, self.reference = calib, np.asarray(reference, np.float32)
        self.threshold = float(calib.get("threshold", 0.5))

    @classmethod
    def load(cls, version_dir) -> Calibrator | None:
        """The version's calibration, or None when it has none (built before calibration, or by a
        pipeline without `evaluate`); a torn file reads as none (hits then carry no confidence)."""
        d = Path(str(version_dir))
        try:
            calib = json.loads((d / CALIBRATION_FILE).read_text())
            ref = np.load(d / REFERENCE_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if ref.ndim != 2 or not ref.size or not calib.get("coef"):
            return None
        return cls(calib, ref)

    def confidence(self, query_vector, scores) -> np.ndarray:
        q = np.asarray(query_vector, np.float32).reshape(-1)
        if q.shape[0] != self.reference.shape[1]:
            return np.full(len(scores), np.nan)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return predict(self.calib, hit_features(scores, self.reference @ q))


def reference_rows(total: int, n: int, seed: int) -> np.ndarray:
    """Which of `total` index rows the reference sample holds: `n` fixed at random (all when fewer), in order."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def reference_sample(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A fixed random sample of `n` index vectors (all of them when fewer), float32."""
    v = np.asarray(vectors, np.float32)
    return v[reference_rows(len(v), n, seed)]
