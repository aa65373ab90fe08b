"""Sightings: is a row the same vehicle as the query? The pair features both the query path
(`index.sightings`) and the evaluation (`evaluation.reid`) compute, and the camera network.

A sighting pair (query row, candidate row) is described by `FEATURES`:
- `appearance`: the cosine of the two crops' vectors (the index's);
- `plate_sim`, `plate_known`: where both rows have a read plate, 1 / (1 + the plate distance,
  `core.plate_match.distance`: OCR look-alikes cheap) and 1; else 0 and 0 (an unread plate says nothing);
- `net_in`, `net_out`: where both rows have a time and the camera pair a travel-time window
  (`Network`), 1 in the first when |time difference| is inside the window, 1 in the second when
  outside; else both 0 (no window: the network says nothing).

The same-vehicle probability is a fit of these (`evaluation.calibration.fit` with this module's
features and signs: sign-bounded logistic regression + isotonic, as a hit's match confidence is),
read back with `core.confidence.predict`. `VARIANTS` names the feature sets evaluated (appearance
only, + plate, + network). Pure NumPy.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from carsearch.core.plate_match import distance, normal

FEATURES = ("appearance", "plate_sim", "plate_known", "net_in", "net_out")
# the sign each weight must have (a closer look, a nearer plate, a plausible travel time never lower it)
SIGNS = {"appearance": 1.0, "plate_sim": 1.0, "plate_known": -1.0, "net_in": 1.0, "net_out": -1.0}
VARIANTS = {
    "appearance": ("appearance",),
    "plate": ("appearance", "plate_sim", "plate_known"),
    "network": FEATURES,
}


def pair_key(a: str, b: str) -> str:
    """A camera pair's name, order-free: "cam-1|cam-2"."""
    return "|".join(sorted((str(a), str(b))))


class Network:
    """Travel-time windows per camera pair: {pair_key: (min_s, max_s)} of |time difference|."""

    def __init__(self, windows: dict[str, Sequence[float]] | None = None):
        self.windows = {k: (float(v[0]), float(v[1])) for k, v in (windows or {}).items()}

    def window(self, a, b) -> tuple[float, float] | None:
        return self.windows.get(pair_key(a, b)) if a and b else None

    def features(self, cam_a, t_a, cam_b, t_b) -> tuple[float, float]:
        """(net_in, net_out) of two sightings."""
        w = self.window(cam_a, cam_b)
        if w is None or t_a is None or t_b is None:
            return 0.0, 0.0
        inside = w[0] <= abs(float(t_a) - float(t_b)) <= w[1]
        return (1.0, 0.0) if inside else (0.0, 1.0)

    def as_dict(self) -> dict:
        return {k: [round(lo, 3), round(hi, 3)] for k, (lo, hi) in sorted(self.windows.items())}


def learn_windows(
    sightings: Iterable[tuple[str, str, float | None]],
    margin_s: float,
    min_identities: int,
    coverage: float,
    fixed: dict[str, Sequence[float]] | None = None,
    max_pass_s: float = np.inf,
) -> Network:
    """The network from labelled sightings (identity, camera, unix time): per camera pair, each
        identity's closest pass (the least |time difference| between its sightings at the two cameras);
        the window spans those passes from the least to the `coverage` quantile, widened by `margin_s`
        either side (not below 0), for pairs with at least `min_identities` identities; a closest pass
    longer than `max_pass_s` is another trip (another day), not a travel time. `fixed` windows
        (conf/cameras.yaml `pairs`) win over learned ones."""
    by_id: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for ident, cam, t in sightings:
        if ident and cam and t is not None:
            by_id[str(ident)].append((str(cam), float(t)))
    closest: dict[str, list[float]] = defaultdict(list)
    for seen in by_id.values():
        best: dict[str, float] = {}
        for i, (ca, ta) in enumerate(seen):
            for cb, tb in seen[i + 1 :]:
                if ca != cb:
                    k = pair_key(ca, cb)
                    best[k] = min(best.get(k, np.inf), abs(ta - tb))
        for k, dt in best.items():
            if dt <= max_pass_s:
                closest[k].append(dt)
    windows = {}
    for k, dts in closest.items():
        if len(dts) >= max(int(min_identities), 1):
            lo, hi = float(np.min(dts)), float(np.quantile(dts, coverage))
            windows[k] = (max(lo - margin_s, 0.0), hi + margin_s)
    windows.update({k: (float(v[0]), float(v[1])) for k, v in (fixed or {}).items()})
    return Network(windows)


def plate_features(q_plate: str | None, plates: Sequence[str | None], confusion_cost: float) -> np.ndarray:
    """[n, 2] (plate_sim, plate_known) of a query plate against candidates' plates."""
    out = np.zeros((len(plates), 2))
    q = normal(q_plate) if q_plate else ""
    if not q:
        return out
    for j, p in enumerate(plates):
        g = normal(p) if p else ""
        if g:
            out[j] = 1.0 / (1.0 + distance(q, g, confusion_cost)), 1.0
    return out


def pair_features(
    appearance: np.ndarray,
    query: dict,
    candidates: Sequence[dict],
    network: Network,
    confusion_cost: float,
) -> np.ndarray:
    """[n, len(FEATURES)] of a query sighting and its candidates (dicts with `camera`, `time` (unix
    seconds or None) and `plate` (read plate or None)); `appearance`: their cosines [n]."""
    plate = plate_features(query.get("plate"), [c.get("plate") for c in candidates], confusion_cost)
    net = np.array(
        [network.features(query.get("camera"), query.get("time"), c.get("camera"), c.get("time")) for c in candidates]
    ).reshape(-1, 2)
    return np.column_stack([np.asarray(appearance, np.float64).reshape(-1), plate, net])


def columns(variant: str) -> list[int]:
    """The columns of `FEATURES` a variant (`VARIANTS`) uses."""
    return [FEATURES.index(f) for f in VARIANTS[variant]]


def timeline(sightings: Sequence[dict]) -> list[dict]:
    """Sightings grouped by camera: [{camera, first, last, sightings (by time)}], cameras in the order
    the vehicle reached them (a camera without times last)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in sightings:
        groups[str(s.get("camera") or "")].append(s)

    def when(s):
        return (s.get("time") is None, s.get("time") or 0.0, str(s.get("id")))

    out = []
    for cam, rows in groups.items():
        rows = sorted(rows, key=when)
        times = [r["time"] for r in rows if r.get("time") is not None]
        out.append(
            {
                "camera": cam or None,
                "first": min(times) if times else None,
                "last": max(times) if times else None,
                "sightings": rows,
            }
        )
    return sorted(out, key=lambda g: (g["first"] is None, g["first"] or 0.0, g["camera"] or ""))
