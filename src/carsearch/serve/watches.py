"""`/api/v1/watches` and `/api/v1/alerts` (issue 33): the watchlist (conf/watchlists.yaml, typed by
`index.watches`) listed, added to and removed from, and the alerts per watch with the unseen count
the page's badge shows. Behind serve.guards' token gate beyond loopback, as every /api/ route."""

from __future__ import annotations

from fastapi import APIRouter

from carsearch.index import alert_files, watches
from carsearch.serve.service import ApiError


def _load(root):
    try:
        wl = watches.load(root)
    except watches.WatchError as e:
        raise ApiError(500, "bad_watchlist", str(e)) from None
    if wl is None:
        raise ApiError(404, "no_watchlist", f"{watches.WATCHLIST_FILE}: no watchlist file in this repo")
    return wl


def watch_router(svc) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["watchlists"])

    @r.get("/watches")
    def list_watches():
        """The watches, each with its alert count and how many of them are unseen."""
        wl = _load(svc.root)
        st = alert_files.status(svc.root, wl)
        return {
            "watches": [
                {**w.model_dump(), "kind": w.kind, "alerts": st["alerts"][w.name], "unseen": st["unseen"][w.name]}
                for w in wl.watches
            ],
            "total_unseen": st["total_unseen"],
        }

    @r.post("/watches", status_code=201)
    def add_watch(w: watches.Watch):
        """Save a watch: it runs on the new rows of every build and `carsearch index add`."""
        try:
            watches.add(svc.root, w)
        except watches.WatchError as e:
            raise ApiError(409 if "exists" in str(e) else 400, "bad_watch", str(e)) from None
        return {**w.model_dump(), "kind": w.kind}

    @r.delete("/watches/{name}")
    def remove_watch(name: str):
        """Remove a watch (its alert file stays)."""
        try:
            watches.remove(svc.root, name)
        except watches.WatchError as e:
            raise ApiError(404, "unknown_watch", str(e)) from None
        return {"removed": name}

    @r.get("/alerts")
    def list_alerts(watch: str | None = None, last: int = 20):
        """Alert counts per watch, the unseen total (the page's badge) and the `last` alerts of
        `watch` (or of every watch)."""
        wl = _load(svc.root)
        names = [w.name for w in wl.watches if watch in (None, w.name)]
        if watch is not None and not names:
            raise ApiError(404, "unknown_watch", f"no watch named {watch!r}")
        adir = alert_files.alerts_dir(svc.root, wl)
        recent = sorted(
            (a for n in names for a in alert_files.read_alerts(alert_files.alert_file(adir, n), max(1, last))),
            key=lambda a: a.get("raised_at") or "",
        )[-max(1, last) :]
        return {**alert_files.status(svc.root, wl), "recent": recent}

    @r.post("/alerts/seen")
    def mark_seen():
        """Mark every alert seen (the badge goes to 0)."""
        return alert_files.mark_seen(svc.root, _load(svc.root))

    return r
