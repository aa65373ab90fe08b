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

import re
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from carsearch.core.errors import CarsearchError
from carsearch.index.query import QueryError, quote

# look-alike pairs OCR confuses; each folds to its first character
CONFUSIONS = ("0O", "8B", "1I", "5S", "2Z", "6G")
_FOLD = str.maketrans({b: a for a, b in CONFUSIONS})
_ALLOWED = re.compile(r"^[A-Z0-9*?]+$")
MAX_PLATES = 5000  # plates one query may select (its `plate IN (...)`), the nearest first


class PlateQueryError(CarsearchError, ValueError):
    """A plate query that cannot be matched; one line."""


def normal(plate: str) -> str:
    """A plate as compared: upper case, without spaces, hyphens and dots."""
    return re.sub(r"[\s\-.·]+", "", str(plate)).upper()


def fold(plate: str) -> str:
    """A normal plate with look-alikes folded together (O -> 0, B -> 8, I -> 1, S -> 5, ...)."""
    return plate.translate(_FOLD)


def check_plate(query) -> str:
    """The query as compared (`normal`); PlateQueryError naming what is wrong with it."""
    q = normal(query or "")
    if not q:
        raise PlateQueryError("--plate: empty plate (type the plate, e.g. AB12CDE or AB1*)")
    if not _ALLOWED.match(q):
        bad = sorted(set(re.sub(r"[A-Z0-9*?]", "", q)))
        raise PlateQueryError(f"--plate {query!r}: only letters, digits, * and ? (not {''.join(bad)!r})")
    if len(q) > 20:
        raise PlateQueryError(f"--plate {query!r}: {len(q)} characters, at most 20")
    return q


_LOOK = {frozenset(p) for p in CONFUSIONS}


def distance(a: str, b: str, confusion_cost: float) -> float:
    """The weighted edit distance between two normal plates (look-alike substitutions cheap)."""
    prev = [float(j) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        cur = [float(i)] + [0.0] * len(b)
        for j, cb in enumerate(b, 1):
            sub = 0.0 if ca == cb else confusion_cost if frozenset((ca, cb)) in _LOOK else 1.0
            cur[j] = min(prev[j] + 1.0, cur[j - 1] + 1.0, prev[j - 1] + sub)
        prev = cur
    return prev[-1]


def _deletions(s: str, d: int) -> set[str]:
    out = {s}
    for n in range(1, min(d, len(s)) + 1):
        out |= {"".join(c for i, c in enumerate(s) if i not in drop) for drop in combinations(range(len(s)), n)}
    return out


class PlateMatcher:
    """The distinct plates of one index version, ready to match (`match`)."""

    def __init__(self, plates, max_distance: float, confusion_cost: float):
        self.max_distance, self.confusion_cost = float(max_distance), float(confusion_cost)
        self.depth = min(int(self.max_distance), 2)  # plain edits a match may need (deeper: slower)
        stored = [p for p in pc.unique(pa.array(plates, pa.string())).to_pylist() if p]
        self.by_normal: dict[str, list[str]] = {}
        for p in stored:
            self.by_normal.setdefault(normal(p), []).append(p)
        self.normals = list(self.by_normal)
        self.folded = pa.array([fold(n) for n in self.normals], pa.string())
        self._neighbours: tuple[np.ndarray, np.ndarray] | None = None  # built at the first fuzzy query

    def _neighbourhood(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, owners): each folded plate and its strings of up to `depth` deletions, sorted, and
        the index of the plate each came from (built in Arrow: under a second for 200k plates)."""
        if self._neighbours is None:
            n, f = len(self.folded), self.folded
            keys, owners = [f], [pa.array(range(n), pa.int32())]
            longest = max((len(x) for x in self.normals), default=0)
            for drop in (d for k in range(1, self.depth + 1) for d in combinations(range(longest), k)):
                key, start = pa.array([""] * n, pa.string()), 0
                for i in drop:  # the pieces between the dropped positions
                    key = pc.binary_join_element_wise(key, pc.utf8_slice_codeunits(f, start, i), "")
                    start = i + 1
                keys.append(pc.binary_join_element_wise(key, pc.utf8_slice_codeunits(f, start, 10**6), ""))
                owners.append(owners[0])
            keys, owners = pa.concat_arrays(keys), pa.concat_arrays(owners)
            order = pc.sort_indices(keys)  # sorted: a key's owners found by binary search
            self._neighbours = (pc.take(keys, order).to_numpy(zero_copy_only=False), pc.take(owners, order).to_numpy())
        return self._neighbours

    def match(self, query: str) -> dict[str, float]:
        """{stored plate: distance} of the plates `query` (checked by `check_plate`) matches, nearest
        first, at most MAX_PLATES."""
        q = check_plate(query)
        if "*" in q or "?" in q:
            found = self._wildcard(q)
        else:
            (keys, owners), fq = self._neighbourhood(), fold(q)
            cand = set()
            for key in _deletions(fq, self.depth):
                lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
                cand.update(owners[lo:hi].tolist())
            found = {}
            for i in cand:
                d = distance(q, self.normals[i], self.confusion_cost)
                if d <= self.max_distance + 1e-9:
                    found[self.normals[i]] = round(d, 4)
        best = sorted(found.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_PLATES]
        return {p: d for n, d in best for p in self.by_normal[n]}

    def _wildcard(self, q: str) -> dict[str, float]:
        like = q.replace("*", "%").replace("?", "_")  # check_plate allows no % or _ of its own
        hits = pc.indices_nonzero(pc.match_like(self.folded, fold(like))).to_pylist()
        exact = re.compile("^" + re.escape(q).replace(r"\*", ".*").replace(r"\?", ".") + "$")
        return {self.normals[i]: 0.0 if exact.match(self.normals[i]) else self.confusion_cost for i in hits}


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
