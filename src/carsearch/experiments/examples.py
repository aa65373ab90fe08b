"""The README's example queries, answered by the built index: one PNG per query with its top-k hits
(green frame: the hit has every attribute the query names, red: it lacks one), written by the summarize stage into `paths.examples_dir` for the README to show."""

from __future__ import annotations

import re
from pathlib import Path

from carsearch.core.imaging import open_rgb
from carsearch.core.io import write_bytes
from carsearch.core.vocab import BODY_TYPES, COLORS, SYNONYMS, VIEWS
from carsearch.evaluation.plots import results_grid_png

ASKED = {"color": COLORS, "body_type": BODY_TYPES, "view": VIEWS}
TILE = 106  # px: results_grid_png's picture size (thumb 112 less its frame)


def slug(query: str) -> str:
    """The PNG's file name of a query: lower-case words joined by '-'."""
    return "-".join(re.findall(r"[a-z0-9]+", query.lower()))[:60] or "query"


def asked(query: str) -> dict[str, str]:
    """The attributes a query names ("red pickup seen from behind" -> color red, body_type pickup,
    view rear), synonyms mapped as the vocabulary maps an LLM's answer."""
    text = " " + " ".join(query.lower().split()) + " "
    for k, v in sorted(SYNONYMS.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<![\w-]){re.escape(k)}(?![\w-])", v, text)
    out = {}
    for attr, values in ASKED.items():
        for v in sorted(values, key=len, reverse=True):  # "sports car" before "car"-like shorter names
            if re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", text):
                out[attr] = v
                break
    return out


def relevant(labels: dict | None, want: dict[str, str]) -> bool:
    return all(str((labels or {}).get(a, "")).lower() == v for a, v in want.items())


def _tile(path: Path, side: int = TILE):
    """A hit's picture, a small vehicle crop scaled up to the grid's tile (the grid only shrinks);
    the path itself when it cannot be read (the grid draws its placeholder)."""
    try:
        im = open_rgb(path)
    except (OSError, ValueError):
        return path
    scale = side / max(im.size)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale)))) if scale > 1 else im


def example_grids(search, queries: list[str], k: int, out_dir: Path) -> list[Path]:
    """One `<slug>.png` per query under `out_dir` (each written beside and swapped in): the top `k`
    hits of `search.text(query, k)`, framed by whether they have what the query names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for q in queries:
        want = asked(q)
        hits = search.text(q, k=k)
        cells = [(_tile(Path(search.root) / h.path), h.score, relevant(h.labels, want)) for h in hits]
        buf = out_dir / f".{slug(q)}.grid.png"
        results_grid_png([(q, cells)], buf)
        data = buf.read_bytes()
        buf.unlink()
        path = out_dir / f"{slug(q)}.png"
        write_bytes(path, data)
        paths.append(path)
    return paths
