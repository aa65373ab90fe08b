"""Counts of vehicles (tracks, not boxes) per bucket, or of line crossings per direction
(`carsearch counts`, `/api/v1/counts`; docs/search/motion.md).

Any search can be counted: its filters, `--where`, time range and camera go through the one query
path (`CarSearch.plan`); with a text the top `k` hits of the text search are counted (with
`min_confidence`, only the confident ones), else every row the plan's where clause matches. A video
track is one row (carsearch.detection.footage.collapse_tracks), so a vehicle seen in 40 frames
counts once. With a line (x1, y1, x2, y2 in one camera's image pixels), each time a track's ground
contact point (its boxes' bottom centre, in time order) crosses the segment counts, bucketed by the
way it crossed: `towards` / `away` (down / up the image) over a line more wide than tall, else
`right` / `left`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from carsearch.core.errors import CarsearchError
from carsearch.index.query import QueryError
from carsearch.index.search import SELECT, CarSearch

# bucket name -> the row column it reads (`hour` is the UTC hour of `time`)
BY = {"camera": "camera", "hour": "time", "class": "box_class", "colour": "color", "color": "color",
      "direction": "direction", "view": "view", "body_type": "body_type"}  # fmt: skip
UNKNOWN = "unknown"


def parse_by(by: str | list[str]) -> list[str]:
    names = [b.strip() for b in (by.split(",") if isinstance(by, str) else by) if b.strip()]
    bad = [b for b in names if b not in BY]
    if bad or not names:
        raise QueryError(f"--by: {', '.join(bad) or 'nothing'}: count by some of {', '.join(BY)}")
    return list(dict.fromkeys(names))


def parse_line(line: str | list[float] | None) -> tuple[float, float, float, float] | None:
    if line is None or line == "":
        return None
    parts = line.split(",") if isinstance(line, str) else list(line)
    try:
        xs = tuple(float(v) for v in parts)
    except ValueError:
        xs = ()
    if len(xs) != 4 or xs[:2] == xs[2:]:
        raise QueryError(f"--line: {line!r}: expected x1,y1,x2,y2 (pixels of the camera's image, two points)")
    return xs  # type: ignore[return-value]


def _bucket(row: dict, name: str) -> str:
    v = row.get(BY[name])
    if name == "hour":
        return UNKNOWN if v is None else datetime.fromtimestamp(float(v), timezone.utc).strftime("%Y-%m-%dT%H:00")
    return UNKNOWN if v in (None, "") else str(v)


def _side(line, p) -> float:
    x1, y1, x2, y2 = line
    return (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1)


def crossings(row: dict, line) -> list[str]:
    """The ways a track's contact point crossed the line segment, in time order."""
    members = json.loads(row.get("track_json") or "[]")
    pts = [((m["box"][0] + m["box"][2]) / 2, m["box"][3]) for m in sorted(members, key=lambda m: m.get("offset") or 0)]
    x1, y1, x2, y2 = line
    wide = abs(x2 - x1) >= abs(y2 - y1)
    out = []
    for a, b in zip(pts, pts[1:]):
        sa, sb = _side(line, a), _side(line, b)
        seg = (a[0], a[1], b[0], b[1])
        # the segments cross (a point on the line counts on its negative side: one crossing, not 0 or 2)
        if (sa > 0) != (sb > 0) and _side(seg, (x1, y1)) * _side(seg, (x2, y2)) <= 0:
            if wide:
                out.append("towards" if b[1] > a[1] else "away")
            else:
                out.append("right" if b[0] > a[0] else "left")
    return out


def count_rows(rows: list[dict], by: list[str], line=None) -> list[dict]:
    """[{<by>: bucket, ..., "count": n}] over rows (one per vehicle or track), or over the line's
    crossings (`direction` is then the way each crossed), largest buckets first."""
    tally: Counter = Counter()
    for r in rows:
        if line is None:
            tally[tuple(_bucket(r, b) for b in by)] += 1
            continue
        for way in crossings(r, line):
            tally[tuple(way if b == "direction" else _bucket(r, b) for b in by)] += 1
    return [dict(zip(by, k), count=n) for k, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))]


def counts(searcher, by, *, line=None, camera=None, text=None, k: int = 1000, filters=None, where=None,
           after=None, before=None, min_confidence=None) -> list[dict]:  # fmt: skip
    """Count a search (module docstring) through the searcher's one query path."""
    by, line = parse_by(by), parse_line(line)
    if line is not None and not camera:
        raise QueryError("--line needs --camera: a line is drawn in one camera's image")
    filters = {**(filters or {}), **({"camera": [camera]} if camera else {})}
    if text:  # motion words become filters, as in a search ("vans heading north")
        text, filters, _ = searcher.understand(text, filters)
    plan = searcher.plan(filters, where, after=after, before=before, min_confidence=min_confidence)
    if text:
        rows = searcher.search(searcher.embed_texts([text])[0], k, plan=plan)
    else:
        cols = searcher.index.columns(SELECT)

        def scan():
            q = searcher.table.search().select(cols).limit(None)
            return (q.where(plan.where) if plan.where else q).to_list()

        rows = searcher.index.run(scan)
    return count_rows(rows, by, line)


def counts_csv(table: list[dict], by: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*by, "count"])
    for r in table:
        w.writerow([*(r[b] for b in by), r["count"]])
    return buf.getvalue()


def counts_png(table: list[dict], by: list[str], title: str = "") -> bytes:
    """A stacked bar chart: one bar per bucket of the first `by`, stacked by the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted({r[by[0]] for r in table})
    stacks = sorted({" / ".join(r[b] for b in by[1:]) for r in table})
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(xs) + 2), 3.5), dpi=100)
    bottom = [0] * len(xs)
    for s in stacks:
        h = [sum(r["count"] for r in table if r[by[0]] == x and " / ".join(r[b] for b in by[1:]) == s) for x in xs]
        ax.bar(xs, h, bottom=bottom, label=s or "count")
        bottom = [a + b for a, b in zip(bottom, h)]
    ax.set_ylabel("vehicles"), ax.set_xlabel(by[0]), ax.set_title(title or f"counts by {', '.join(by)}")
    if len(by) > 1:
        ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def command(query, by, line, k, csv_out, png, index_dir, filters, **asked) -> int:
    """`carsearch counts`: count, print a line per bucket, write the CSV and the PNG; the exit code
    (1 with one `error:` line on stderr for anything the library refuses)."""
    filters = {name: values for name, values in filters.items() if values is not None and values != []}
    cams = filters.pop("camera", [])  # --line needs exactly one --camera
    camera = cams[0] if len(cams) == 1 else None
    filters.update({"camera": cams} if len(cams) > 1 else {})
    try:
        names = parse_by(by)
        table = counts(CarSearch(index_dir), names, line=line, camera=camera, text=query, k=k, filters=filters, **asked)
    except (FileNotFoundError, ValueError, CarsearchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in table:
        print("\t".join([*(str(r[b]) for b in names), str(r["count"])]))
    Path(csv_out).write_text(counts_csv(table, names), encoding="utf-8")
    Path(png).write_bytes(counts_png(table, names, query or ""))
    print(f"{sum(r['count'] for r in table)} counted -> {csv_out}, {png}", file=sys.stderr)
    return 0
