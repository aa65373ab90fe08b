"""Checking what a query asks, once, before a model loads: `QueryPlanner` (a base of
`index.search.CarSearch`) turns filters, `--where`, a time range, ANN knobs, hybrid text and a
confidence cut into a `Plan`; a plate filter (`core.columns` fuzzy filters) becomes
`plate IN (the plates it matches)` (`index.plates`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carsearch.core.columns import ROW
from carsearch.index.query import QueryError, build_where, check_confidence, combine, quote, scope_where


@dataclass(frozen=True)
class Plan:
    """A checked query: the where clause, the ANN knobs, the hybrid text, the confidence cut and the
    query's kind (core.confidence.QUERY_KINDS: each kind has its own calibration)."""

    where: str | None
    nprobes: int | None
    refine_factor: int | None
    hybrid_text: str | None
    min_confidence: float | None
    kind: str = "text"
    plates: dict | None = None  # a plate filter's matches: {stored plate: distance} (None: no plate filter)
    exact: bool = (
        False  # a flat (exhaustive) scan of the rows the where clause keeps: no ANN index (watches on new rows)
    )


def plate_settings(root: Path):
    """`index.plate_search` of the repo's params.yaml (max_distance, confusion_cost)."""
    from carsearch.core.params import load_config

    return load_config(root / "params.yaml").index.plate_search


class QueryPlanner:
    """The planning half of `CarSearch` (needs `self.index`, `self.meta`, `self.root`,
    `self.plate_settings`, `self._plates`, `has_fts`)."""

    def where_clause(
        self, filters: dict | None = None, where: str | None = None, after=None, before=None
    ) -> str | None:
        """Structured filters (`{"color": ["red"], "camera": ["cam-a"]}`), a `--where` filter and a
        capture-time range [after, before) as one checked where clause (QueryError naming the bad part)."""
        return self._where(filters, where, after, before)[0]

    def _where(self, filters, where, after, before) -> tuple[str | None, dict | None]:
        """The where clause and the plate filter's matches ({stored plate: distance}; None: no plate
        filter): the fuzzy filter columns (`plate`) become `plate IN (the plates it matches)`."""
        filters = dict(filters or {})
        fuzzy = {c: filters.pop(c) for c in ROW.fuzzy if filters.get(c)}
        clauses, plates = [], None
        for col, asked in fuzzy.items():
            plates = self.plates_matching(asked)
            clauses.append(f"{col} IN ({', '.join(quote(p) for p in plates)})" if plates else "false")
        scope = scope_where(None, after, before, self.index.has_tracks())
        return combine(build_where(filters, where), *clauses, scope), plates

    def plates_matching(self, asked) -> dict[str, float]:
        """{stored plate: distance} of the plates any of `asked` (a plate or several) matches."""
        settings = self.plate_settings or plate_settings(self.root)
        return self._plates.matching(self.index, asked, settings)

    def plan(
        self,
        filters=None,
        where=None,
        *,
        after=None,
        before=None,
        nprobes=None,
        refine_factor=None,
        hybrid_text=None,
        min_confidence=None,
        kind: str = "text",
    ) -> Plan:
        """Check everything a query asks (before a model loads or a vector is made)."""
        clause, plates = self._where(filters, where, after, before)
        knobs = []
        for name, v in (("nprobes", nprobes), ("refine_factor", refine_factor)):  # default: the index's own
            v = self.meta.get(name) if v is None else v
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise QueryError(f"{name}: expected a whole number >= 0 (0: lance's default), got {v!r}")
            knobs.append(int(v) if v else None)
        min_confidence = check_confidence(min_confidence)
        if hybrid_text is not None and not self.has_fts():
            raise QueryError(
                "hybrid search needs the full-text index on captions, which this index was built without; "
                "rebuild it (`dvc repro build_index`, index.fts: true)"
            )
        if hybrid_text is not None and min_confidence is not None:
            raise QueryError("min_confidence: hybrid results have no calibrated confidence (a fused rank score)")
        return Plan(clause, knobs[0], knobs[1], hybrid_text, min_confidence, kind, plates)
