"""Matching typed plates against a set of plates (pure: pyarrow and NumPy), the half of plate search
that needs no index: `distance` (a weighted edit distance, OCR look-alikes cheap), `fold`,
`check_plate` and `PlateMatcher` (the distinct plates of one index version or of an evaluation's
gallery). `carsearch.index.plates` (the index's plate filter) and `carsearch.evaluation.reid`
(re-ID and plate-search figures) both use it; see `index.plates` for how matching is kept fast.
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from carsearch.core.errors import CarsearchError

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
