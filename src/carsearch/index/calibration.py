"""The hit-confidence calibration inside an index version (read back by carsearch.core.confidence):
evaluate's fit for the model the index is built with, and a fixed random sample of the index's
own vectors (each query's score distribution over the index)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from carsearch.core.confidence import CALIBRATION_FILE, REFERENCE_FILE
from carsearch.core.io import write_json


def ship_calibration(calibration_json: Path, use: str, reference: np.ndarray, stage: Path) -> dict | None:
    """Write the calibration of model `use` (metrics/calibration.json) and `reference`, the index's
    sample of its own vectors (`core.confidence.reference_rows`), into the version being built; a
    summary for index.json. None (hits then carry no confidence)
    when evaluate fitted none for that model, or its file is missing or torn."""
    try:
        calib = (json.loads(Path(calibration_json).read_text()) or {}).get(use)
    except (OSError, ValueError):
        calib = None
    if not calib or not calib.get("coef"):
        return None
    ref = np.asarray(reference, np.float32)
    write_json(stage / CALIBRATION_FILE, {**calib, "model": use})
    with open(stage / REFERENCE_FILE, "wb") as fh:  # the version folder is published whole (atomic)
        np.save(fh, ref, allow_pickle=False)
    return {
        "model": use,
        "target_precision": calib.get("target_precision"),
        "threshold": calib.get("threshold"),
        "target_reached": calib.get("threshold") is not None,
        "reference_rows": int(len(ref)),
        "coef": calib["coef"],
    }
