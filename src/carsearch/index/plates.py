"""Plate search: which of an index's plates a typed plate matches, and how far each is from it.

A query is a plate as typed (case, spaces and hyphens ignored), with `*` (any run of characters)
and `?` (one character) wildcards. OCR misreads look-alikes, so matching tolerates them: the
distance is an edit distance where a look-alike substitution (`CONFUSIONS`: 0/O, 8/B, 1/I, 5/S,
2/Z, 6/G) costs `confusion_cost` and any other edit (a substitution, a dropped or an extra
character) costs 1; a plate matches within `max_distance` (`index.plate_search` in conf/).

Speed: an index holds far fewer distinct plates than rows, so `PlateMatcher` is built once per
index version from the distinct plates and matches in memory; the caller then filters rows with
`plate IN (...)`. Every plate within `max_distance` is within `floor(max_distance)` plain edits of
the query once look-alikes are folded together (`fold`), so candidates come from a deletion
neighbourhood of the folded plates (SymSpell's trick: two strings within d edits share a string
of d or fewer deletions; built in Arrow, sorted, looked up by binary search) and only they get the
weighted distance. A wildcard query is matched
with Arrow's LIKE over the folded plates (an exact match ranks first). `IndexPlates` keeps an
index version's matcher; `plate_rows` answers a plate-only query. Light: pyarrow and NumPy.
"""

from __future__ import annotations

from carsearch.core.plate_match import (  # noqa: F401  (their old home: the matching itself lives in core)
    CONFUSIONS,
    MAX_PLATES,
    PlateMatcher,
    PlateQueryError,
    check_plate,
    distance,
    fold,
    normal,
)
from carsearch.index.query import QueryError, quote


class IndexPlates:
    """The `PlateMatcher` of an index's live version, built at its first plate query (the distinct
    plates of the table, read once per version: `index add` appends a new table version)."""

    def __init__(self):
        self._key, self._matcher = None, None

    def matcher(self, handle, settings) -> PlateMatcher:
        key = (str(handle.version_dir), handle.table.version, settings.max_distance, settings.confusion_cost)
        if self._matcher is None or self._key != key:
            if "plate" not in handle.columns(("plate",)):
                raise QueryError("--plate: this index was built before plates were indexed; rebuild it")
            n = max(handle.table.count_rows(), 1)
            col = handle.table.search().where("plate != ''").select(["plate"]).limit(n).to_arrow()["plate"]
            self._key, self._matcher = key, PlateMatcher(col, settings.max_distance, settings.confusion_cost)
        return self._matcher

    def matching(self, handle, asked, settings) -> dict[str, float]:
        """{stored plate: distance} of the plates any of `asked` (a plate or several) matches."""
        out: dict[str, float] = {}
        for q in [asked] if isinstance(asked, str) else list(asked):
            try:
                found = self.matcher(handle, settings).match(q)
            except PlateQueryError as e:
                raise QueryError(str(e)) from None
            for p, d in found.items():
                out[p] = min(d, out.get(p, d))
        return out


def plate_rows(handle, where: str, plates: dict[str, float], k: int, cols: list[str]) -> list[dict]:
    """The k rows of a plate-only query (`where` holds the plate filter), nearest plate first (a
    distance tier's rows before the next's; then earliest, then id); `score` = 1 / (1 + distance)."""
    rows: list[dict] = []
    tiers: dict[float, list[str]] = {}
    for p, d in plates.items():
        tiers.setdefault(d, []).append(p)
    for d in sorted(tiers):
        clause = f"({where}) AND plate IN ({', '.join(quote(p) for p in tiers[d])})"

        def run(clause=clause, n=int(k) - len(rows)):
            return handle.table.search().where(clause).select(cols).limit(n).to_list()

        got = handle.run(run)
        got.sort(key=lambda r: (r.get("time") is None, r.get("time") or 0.0, r["id"]))
        for r in got:
            r["score"], r["plate_distance"] = round(1.0 / (1.0 + d), 4), d
            r["confidence"], r["confident"] = None, False
        rows += got
        if len(rows) >= int(k):
            break
    return rows[: int(k)]
