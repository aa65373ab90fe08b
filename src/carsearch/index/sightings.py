"""Sightings as a query: where else was this vehicle seen? Input: an indexed hit (its id), a track
(its track id) or a photo; output: the vehicle's sightings at every camera and time, grouped by
camera on a timeline, each with a calibrated same-vehicle probability. A query with a camera (a
hit, a track) looks at the other cameras only: the fit, like VeRi-776's protocol, weighs pairs of
cameras (a vehicle's other frames at its own camera are its track, not sightings).

Candidates come from the one query path (`CarSearch.search` with the query's vector: the nearest
`k` rows by appearance, filters as any search's). Each is scored on `core.sightings.FEATURES`
(appearance, plate similarity where both plates were read, the camera network's travel-time window)
by the index version's sightings fit (kind "sightings" of its calibration: fitted by `evaluate`,
`evaluation.reid`, with the network it learned and conf/cameras.yaml's fixed `pairs`).
"Confident" sightings reach the fit's threshold; the rest are listed apart. Without a fit the
sightings are ordered by appearance and carry no probability (`note` says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carsearch.core.columns import ROW
from carsearch.core.confidence import linear, predict
from carsearch.core.sightings import FEATURES, Network, pair_features, timeline
from carsearch.core.when import iso
from carsearch.index.query import QueryError, quote

DEFAULT_K = 50


@dataclass
class SightingsResult:
    query: dict
    sightings: list[dict]
    note: str | None = None
    threshold: float | None = None
    fitted: bool = False

    @property
    def confident(self) -> list[dict]:
        return [s for s in self.sightings if s["confident"]]

    @property
    def others(self) -> list[dict]:
        return [s for s in self.sightings if not s["confident"]]

    def cameras(self, confident_only: bool = False) -> int:
        rows = self.confident if confident_only else self.sightings
        return len({s["camera"] for s in rows if s.get("camera")})

    def as_dict(self, hit=lambda r: r) -> dict:
        """The API's body: the query, the timelines (confident, then the rest), counts and the note;
        `hit` turns a row into what is shown of it (the API's hit)."""

        def line(rows):
            return [
                {**g, "first": iso(g["first"]), "last": iso(g["last"]), "sightings": [hit(s) for s in g["sightings"]]}
                for g in timeline(rows)
            ]

        return {
            "query": self.query,
            "calibrated": self.fitted,
            "threshold": self.threshold,
            "note": self.note,
            "cameras": self.cameras(),
            "confident_cameras": self.cameras(True),
            "confident": line(self.confident),
            "others": line(self.others),
        }


def _query_of(row: dict) -> dict:
    return {k: row.get(k) for k in ("id", "camera", "time", "plate", "track_id")}


class Sightings:
    """`Sightings(CarSearch()).of_id("43b2...")`, `.of_track("t7")`, `.of_image("car.jpg")`."""

    def __init__(self, searcher):
        self.s = searcher

    def _fit(self) -> tuple[dict | None, str | None]:
        cal = self.s.calibrator("sightings")
        if cal is None:
            return None, (
                "no same-vehicle probability: this index's calibration has no sightings fit "
                "(evaluate fits one where the data has labelled identities); ordered by appearance"
            )
        return cal.calib, None

    def _row(self, where: str, what: str) -> dict:
        cols = self.s.index.columns(tuple(ROW.metadata)) + ["vector"]

        def run():
            return self.s.table.search().where(where).select(cols).limit(1).to_list()

        rows = self.s.index.run(run)
        if not rows:
            raise QueryError(f"sightings: {what} is not in the index")
        return rows[0]

    def of_id(self, image_id: str, k: int = DEFAULT_K, filters: dict | None = None) -> SightingsResult:
        """The sightings of the vehicle of an indexed row."""
        self.s.refresh()
        row = self._row(f"id = {quote(str(image_id))}", f"id {image_id!r}")
        return self._sightings(row["vector"], _query_of(row), k, filters, exclude=row["id"])

    def of_track(self, track_id: str, k: int = DEFAULT_K, filters: dict | None = None) -> SightingsResult:
        """The sightings of a video track's vehicle (the track's row)."""
        self.s.refresh()
        if "track_id" not in self.s.index.columns(("track_id",)):
            raise QueryError("sightings: this index has no tracks (no video was indexed)")
        row = self._row(f"track_id = {quote(str(track_id))}", f"track {track_id!r}")
        return self._sightings(row["vector"], _query_of(row), k, filters, exclude=row["id"])

    def of_image(self, image, k: int = DEFAULT_K, filters=None, plate: str | None = None) -> SightingsResult:
        """The sightings of the vehicle in a photo (a path or a PIL image); `plate`: its plate if known."""
        self.s.refresh()
        vec = self.s.encoder.image(image)
        return self._sightings(vec, {"id": None, "camera": None, "time": None, "plate": plate}, k, filters)

    def _sightings(self, vector, query: dict, k: int, filters, exclude: str | None = None) -> SightingsResult:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= 1000:
            raise QueryError(f"sightings: k must be a whole number from 1 to 1000, got {k!r}")
        where = None
        if query.get("camera"):  # the other cameras (VeRi's rule, as the fit was made)
            where = f"camera IS NULL OR camera != {quote(str(query['camera']))}"
        plan = self.s.plan(filters, where, kind="image")  # candidates: the one query path, by appearance
        rows = self.s.search(vector, int(k), plan=plan, exclude=exclude)
        fit, note = self._fit()
        network = Network((fit or {}).get("windows"))
        cost = float((fit or {}).get("confusion_cost", 0.3))
        x = pair_features([r["score"] for r in rows], query, rows, network, cost).reshape(-1, len(FEATURES))
        prob = predict(fit, x) if fit else np.full(len(rows), np.nan)
        order = np.argsort(-linear(fit, x), kind="stable") if fit else np.arange(len(rows))
        thr = None if fit is None else fit.get("threshold")
        out = []
        for i in order:
            r, p = rows[int(i)], prob[int(i)]
            w = network.window(query.get("camera"), r.get("camera"))
            dt = None if query.get("time") is None or r.get("time") is None else abs(r["time"] - query["time"])
            out.append(
                {
                    **r,
                    "probability": None if not np.isfinite(p) else round(float(p), 4),
                    "confident": thr is not None and bool(np.isfinite(p)) and float(p) >= float(thr),
                    "plate_similarity": round(float(x[i, 1]), 4) if x[i, 2] else None,
                    "travel_s": None if dt is None else round(float(dt), 3),
                    "travel_window": list(w) if w else None,
                    "plausible": None if (w is None or dt is None) else bool(x[i, 3]),
                }
            )
        if fit is not None and thr is None:
            note = (
                "no sighting is marked confident: the sightings fit reached no confidence level of its precision target"
            )
        q = {**query, "time": iso(query.get("time"))}
        return SightingsResult(q, out, note, None if thr is None else float(thr), fit is not None)
