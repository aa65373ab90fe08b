"""What a search gives its caller: the `Hit` type and the CSV export, both derived from the row's
declaration (`carsearch.core.columns`): a column marked `hit` is a field of `Hit`, one with a `csv`
header a column of the CSV (the CLI's `--csv` and the API's `format=csv` share `hits_csv`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

from carsearch.core.columns import ROW, Row
from carsearch.core.when import iso

PY_TYPES = {"float": float | None, "time": float | None, "box": list[float] | None}


def hit_type(row: Row = ROW) -> type:
    """`Hit(rank, score, id, path, caption, labels, <the other hit columns>…, confidence, confident)`:
    the columns every table has first (no default), then those older tables lack (default "" or
    None), then the calibrated confidence (None: the index has no calibration)."""
    fields: list = [("rank", int), ("score", float)]
    for c in (row.by_name[n] for n in row.hit):
        name = "labels" if c.name == "labels_json" else c.name  # decoded: the labels dict
        typ = dict if name == "labels" else PY_TYPES.get(c.kind, str)
        if not c.optional:
            fields.append((name, typ))
        else:
            fields.append((name, typ, dataclasses.field(default="" if typ is str else None)))
    fields += [("confidence", float | None, dataclasses.field(default=None)), ("confident", bool, False)]
    doc = "One search result (carsearch.core.columns' `hit` columns); `labels` is the row's labels dict."
    return dataclasses.make_dataclass("Hit", fields, namespace={"__doc__": doc, "__module__": __name__})


Hit = hit_type()


def make_hit(rank: int, r: dict, row: Row = ROW, cls: type = Hit):
    """A result row (a dict of table columns + `score`, `confidence`, `confident`) as a `Hit`."""
    extra = {c: r[c] for c in row.hit if c in row.optional and r.get(c) is not None}
    base = {c: r[c] for c in row.hit if c not in row.optional and c != "labels_json"}
    return cls(
        rank=rank,
        score=r["score"],
        labels=json.loads(r["labels_json"]),
        confidence=r.get("confidence"),
        confident=bool(r.get("confident")),
        **base,
        **extra,
    )


def csv_header(row: Row = ROW, extra: tuple[str, ...] = ()) -> list[str]:
    head = ["rank", "score", "confidence", "confident"]
    for c in row.csv:
        head += ["x1", "y1", "x2", "y2"] if c.kind == "box" else [c.csv]
    return head + list(extra)


def _cell(c, h: dict) -> list:
    v = h.get(c.name)
    if c.kind == "box":
        return [f"{x:.1f}" for x in v] if v is not None else ["", "", "", ""]
    if c.kind == "time":
        return [iso(v) if isinstance(v, (int, float)) else (v or "")]
    if c.kind == "float":
        return ["" if v is None else f"{float(v):.4f}"]
    # a vehicle column a whole image lacks falls back to the image's own: its path, its id
    return [v or (h.get("path") or "" if c.kind == "path" else h.get("id", "") if c.kind == "id" else "")]


def hits_csv(hits: list[dict], row: Row = ROW, extra: tuple[str, ...] = ()) -> str:
    """A result list as CSV (one row per hit: score (empty for a hit chosen by id, not searched
    for), calibrated confidence and whether it is a confident match (empty without a calibration),
    then the columns with a `csv` header: file, frame, box, camera, time, caption, then the `extra`
    keys of each hit as they are), from `Hit`s as dicts (`dataclasses.asdict`) or the API's hits;
    times as ISO 8601."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(csv_header(row, extra))
    for h in hits:
        conf, score = h.get("confidence"), h.get("score")
        lead = [h["rank"], "" if score is None else f"{float(score):.4f}", "" if conf is None else f"{float(conf):.4f}"]
        lead.append("" if conf is None else str(bool(h.get("confident"))).lower())
        w.writerow([*lead, *(x for c in row.csv for x in _cell(c, h)), *(h.get(k, "") for k in extra)])
    return buf.getvalue()


def hit_record(h: dict, row: Row = ROW) -> dict:
    """One hit as JSON, keyed as the CSV's header is (`csv_header`): the same columns, typed (a
    number stays a number, the box a list, times ISO 8601)."""
    out = {"rank": h["rank"], "score": h.get("score"), "confidence": h.get("confidence")}
    out["confident"] = None if h.get("confidence") is None else bool(h.get("confident"))
    for c in row.csv:
        v = h.get(c.name)
        if c.kind == "time":
            out[c.csv] = iso(v) if isinstance(v, (int, float)) else (v or None)
        elif c.kind in ("box", "float"):
            out[c.csv] = None if v is None else ([float(x) for x in v] if c.kind == "box" else float(v))
        else:
            out[c.csv] = _cell(c, h)[0] or None
    return out
