"""The hit-confidence calibration inside an index version (read back by carsearch.core.confidence):
evaluate's fit for the model the index is built with, and a fixed random sample of the index's
own vectors (each query's score distribution over the index)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from carsearch.core.confidence import CALIBRATION_FILE, REFERENCE_FILE, calibration_doc, fits_by_kind
from carsearch.core.io import write_json


def ship_calibration(calibration_json: Path, use: str, reference: np.ndarray, stage: Path) -> dict | None:
    """Write the calibration of model `use` (metrics/calibration.json: its fit per query kind; an
    old file's bare fit is the text fit) and `reference`, the index's sample of its own vectors
    (`core.confidence.reference_rows`), into the version being built; a summary for index.json.
    None (hits then carry no confidence) when evaluate fitted none for that model, or its file is
    missing or torn. A query kind without a fit shows no confidence."""
    try:
        fits = fits_by_kind((json.loads(Path(calibration_json).read_text()) or {}).get(use))
    except (OSError, ValueError, AttributeError):
        fits = {}
    if not fits:
        return None
    ref = np.asarray(reference, np.float32)
    write_json(stage / CALIBRATION_FILE, calibration_doc(fits, model=use))
    with open(stage / REFERENCE_FILE, "wb") as fh:  # the version folder is published whole (atomic)
        np.save(fh, ref, allow_pickle=False)
    return {
        "model": use,
        "reference_rows": int(len(ref)),
        "kinds": {
            kind: {
                "target_precision": f.get("target_precision"),
                "threshold": f.get("threshold"),
                "target_reached": f.get("threshold") is not None,
                "coef": f["coef"],
            }
            for kind, f in fits.items()
        },
    }
