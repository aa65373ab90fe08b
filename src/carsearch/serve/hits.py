"""A result row as the API sees it: the hit (its `api` columns, its track, the URLs the page loads)
and the facets counted over the candidates."""

from __future__ import annotations

import json
from collections import Counter

from carsearch.core.columns import ROW
from carsearch.core.when import hour_bucket, iso
from carsearch.index.hits import where_row


def _track(row: dict) -> dict | None:
    """A video vehicle's track: id, first/last seen (ISO) and its member boxes, for the page's strip."""
    if not row.get("track_id"):
        return None
    members = json.loads(row.get("track_json") or "[]")
    return {
        "id": row["track_id"],
        "first_seen": iso(row.get("first_seen")),
        "last_seen": iso(row.get("last_seen")),
        "boxes": [{**m, "time": iso(m.get("time"))} for m in members],
    }


def api_hit(r: dict, rank: int, row=ROW) -> dict:
    """A result row (CarSearch.search) as the API's hit: its `api` columns (carsearch.core.columns;
    a time as ISO 8601, strings "" where unknown, a vehicle's frame id its own for a whole image),
    then where its original is and the URLs the page loads."""
    out = {
        "rank": rank,
        "score": round(float(r["score"]), 6),
        "confidence": r["confidence"],
        "confident": r["confident"],
    }
    for c in (row.by_name[n] for n in row.api):
        v = r.get(c.name)
        if c.kind == "time":
            out[c.name] = iso(v)
        elif c.kind in ("box", "float"):
            out[c.name] = v
        else:
            out[c.name] = v or (r["id"] if c.name == "frame_id" else "")
    return {
        **out,
        **where_row(r),
        "frame_url": f"/api/v1/frames/{r['id']}" if r.get("box") is not None else None,
        "track": _track(r),
        "image_url": f"/api/v1/images/{r['id']}",
        "thumb_url": f"/api/v1/thumbs/{r['id']}",
    }


def facets(rows: list[dict], top: int, row=ROW) -> dict:
    """Value counts of each facet column over the candidates (the `top` most frequent), and the hours."""
    out = {}
    for c in row.facets:
        counts = Counter(r.get(c) for r in rows if r.get(c))
        out[c] = [{"value": v, "count": k} for v, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    hours = Counter(hour_bucket(r["time"]) for r in rows if r.get("time") is not None)
    out["hour"] = [{"value": h, "count": k} for h, k in sorted(hours.items())]  # in time order
    return out
