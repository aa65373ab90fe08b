"""Running the watches (issue 33) on the rows that are new: after build_index (ids not in the
previous version) and `carsearch index add` (the ids appended). Each watch is one query through the
one query path (`CarSearch.plan` + `CarSearch.search`, or `plate_rows` for a plate alone), restricted
to the new ids and scanned flat (`Plan.exact`: every new row is scored, no ANN partition skipped),
so its cost follows what is new, not the index size.

A hit becomes an alert only when the index's calibration calls it confident (the kind's threshold,
or the watch's `min_confidence`), or when its plate matches the watch's plate exactly. Alerts are
appended to `<alerts_dir>/<watch>.jsonl` (one locked O_APPEND write per watch and run); a watch with
a `url` also queues them for its webhook (`index.webhooks`), sent at the end of the run."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from carsearch.core.columns import ROW
from carsearch.core.io import append_locked
from carsearch.core.when import iso
from carsearch.index import watches, webhooks
from carsearch.index.alert_files import alert_file, alerts_dir
from carsearch.index.query import combine, quote
from carsearch.index.search import CarSearch

log = logging.getLogger("carsearch.alerts")
CHUNK = 2000  # new ids per query: the id IN (...) list stays small however much is new
# what an alert says about its row (the API's hit columns)
FIELDS = tuple(c for c in ROW.api if c != "caption") + ("caption", "track_id")


def text_vectors(s, wl: watches.Watchlist) -> dict:
    """The vectors of every text watch, in one batch (one forward pass for all the watches' texts)."""
    texts = sorted({w.text for w in wl.watches if w.text})
    if not texts:
        return {}
    if not s.encoder.model_loaded:  # the model not loaded (after a build): the NumPy text tower, no torch
        return {t: s.encoder.text(t) for t in texts}
    return dict(zip(texts, s.embed_texts(texts)))


def query_vector(s, w: watches.Watch, root: Path, texts: dict | None = None):
    """The watch's query vector (None: a plate alone). An image is a file (relative to the repo root)
    or the id of an indexed image (its stored vector)."""
    if w.text:
        return texts[w.text] if texts and w.text in texts else s.embed_texts([w.text])[0]
    if w.image:
        p = Path(w.image) if Path(w.image).is_absolute() else Path(root) / w.image
        if p.is_file():
            return s.embed_images([p])[0]
        row = s.get_row(w.image, vector=True)
        if row is None:
            raise watches.WatchError(f"watch {w.name!r}: image {w.image!r} is neither a file nor an indexed id")
        return row["vector"]
    return None


def reason(w: watches.Watch, row: dict, plates: dict | None) -> str | None:
    """Why a hit alerts (None: it does not): an exact plate match, or a confident hit."""
    if w.plate and plates and row.get("plate") is not None and plates.get(row["plate"]) == 0:
        return "plate"
    c = row.get("confidence")
    if c is None:
        return None
    if w.min_confidence is None:
        return "confident" if row.get("confident") else None
    return "min_confidence" if c >= w.min_confidence else None


def matches(s, w: watches.Watch, vec, ids: list[str]) -> list[tuple[dict, str]]:
    """(row, reason) of the new rows `ids` the watch alerts on, best first."""
    plan = s.plan(w.search_filters(), w.where, kind=w.kind)
    out = []
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        p = replace(plan, where=combine(plan.where, f"id IN ({', '.join(quote(x) for x in part)})"), exact=True)
        rows = s.plate_rows(len(part), p) if vec is None else s.search(vec, len(part), plan=p)
        out += [(r, why) for r in rows if (why := reason(w, r, p.plates))]
    return out


def make_alert(w: watches.Watch, row: dict, why: str, version: str | None, now: float) -> dict:
    fields = {c: row.get(c) for c in FIELDS if row.get(c) is not None}
    if fields.get("time") is not None:
        fields["time"] = iso(fields["time"])
    digest = hashlib.sha256(f"{w.name}\0{row['id']}".encode()).hexdigest()[:16]
    return {
        "alert_id": digest,
        "watch": w.name,
        "reason": why,
        "score": round(float(row["score"]), 4),
        "confidence": row.get("confidence"),
        "index_version": version,
        "raised_at": iso(now),
        "query": {k: v for k, v in (("text", w.text), ("image", w.image), ("plate", w.plate)) if v},
        **fields,
    }


def _append(path: Path, alerts: list[dict]) -> None:
    if alerts:
        data = b"".join((json.dumps(a, ensure_ascii=False, default=float) + "\n").encode() for a in alerts)
        append_locked(path, data)


def run_watches(s, root: Path, new_ids: list[str] | None, wl: watches.Watchlist | None = None) -> dict:
    """Run every watch of the repo's watchlist on `new_ids` (None: every row of the index, e.g. a
    first build), append its alerts, queue and send its webhooks. One watch that fails (an image
    gone) is one problem line; the others still run."""
    t0 = time.perf_counter()
    wl = wl if wl is not None else watches.load(root)
    report = {"watches": 0, "new_rows": 0, "alerts": 0, "by_watch": {}, "problems": []}
    if wl is None or not wl.watches or new_ids == []:
        return report
    if new_ids is None:
        new_ids = s.table.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist()
    adir, version, now, hooks = alerts_dir(root, wl), s.meta.get("version"), time.time(), []
    report.update(watches=len(wl.watches), new_rows=len(new_ids))
    texts = text_vectors(s, wl)
    for w in wl.watches:
        try:
            found = matches(s, w, query_vector(s, w, root, texts), new_ids)
        except ValueError as e:  # WatchError, QueryError: one line, the other watches go on
            report["problems"].append(f"watch {w.name!r}: {str(e).splitlines()[0]}")
            continue
        alerts = [make_alert(w, r, why, version, now) for r, why in found]
        _append(alert_file(adir, w.name), alerts)
        hooks += [{"url": w.url, "watch": w.name, "alert": a} for a in alerts if w.url]
        report["by_watch"][w.name] = len(alerts)
        report["alerts"] += len(alerts)
    report["seconds_matching"] = round(time.perf_counter() - t0, 3)
    webhooks.enqueue(adir, hooks)
    if webhooks.queued(adir):
        report["webhooks"] = webhooks.flush(adir, wl.delivery)
    return report


def after_build(root: Path, index_dir: Path, new_ids: list[str] | None, plate_search=None) -> dict | None:
    """The watches on the rows a build added (None: no watch to run, nothing opened); `plate_search`:
    `index.plate_search` of the config."""
    wl = watches.load(root)
    if wl is None or not wl.watches:
        return None
    return run_watches(CarSearch(index_dir, root=root, plate_search=plate_search), root, new_ids, wl)


def summary_line(what: str, report: dict) -> str:
    line = (
        f"{what}: watches: {report['alerts']} alert(s) from {report['watches']} watch(es) "
        f"on {report['new_rows']} new row(s)"
    )
    if hooks := report.get("webhooks"):
        line += f"; webhooks: {hooks['delivered']} delivered, {hooks['queued']} queued"
    return line + "".join(f"\n{what}: {p}" for p in report["problems"])
