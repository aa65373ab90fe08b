"""`carsearch watch add|list|rm|flush|alerts` (issue 33): the watchlist in conf/watchlists.yaml
(`index.watches`) and its alerts (`index.alerts`, `index.webhooks`). Registered by cli.py."""

from __future__ import annotations

import json
import logging
from typing import Optional

import typer

from carsearch.core.columns import ROW
from carsearch.core.paths import repo_root
from carsearch.index import alert_files as alerts
from carsearch.index import watches, webhooks

watch_app = typer.Typer(no_args_is_help=True, help="Watchlists: saved searches that alert on new images.")


def _fail(e: Exception):
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


def _filters(pairs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in pairs:
        col, sep, value = p.partition("=")
        if not sep or not value:
            raise watches.WatchError(f"--filter {p!r}: expected COLUMN=VALUE (columns: {', '.join(ROW.filters)})")
        out.setdefault(col.strip(), []).append(value.strip())
    return out


@watch_app.command("add")
def add(
    name: str = typer.Argument(..., help="The watch's name (letters, digits, . _ -)."),
    text: Optional[str] = typer.Option(None, "--text", help='What to look for, e.g. "a white van".'),
    image: Optional[str] = typer.Option(None, "--image", help="An image file (from the repo root) or an indexed id."),
    plate: Optional[str] = typer.Option(None, "--plate", help="A number plate (* ? wildcards); exact matches alert."),
    filters: list[str] = typer.Option([], "--filter", help="COLUMN=VALUE, repeatable (camera=cam-1, color=white)."),
    min_speed: Optional[float] = typer.Option(None, "--min-speed", help="Only tracks at least this fast."),
    max_speed: Optional[float] = typer.Option(None, "--max-speed", help="Only tracks at most this fast."),
    where: Optional[str] = typer.Option(None, "--where", help="A --where filter, as for search."),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", help="Alert from this calibrated confidence (default: confident only)."
    ),
    url: Optional[str] = typer.Option(None, "--url", help="Webhook: POST each alert here (JSON)."),
) -> None:
    """Save a search as a watch: it runs on the new rows of every build and `index add`."""
    root = repo_root()
    ranges = {k: v for k, v in (("min_speed", min_speed), ("max_speed", max_speed)) if v is not None}
    try:
        w = watches.make_watch(
            name=name,
            text=text,
            image=image,
            plate=plate,
            filters=_filters(filters),
            ranges=ranges,
            where=where,
            min_confidence=min_confidence,
            url=url,
        )
        watches.add(root, w)
    except watches.WatchError as e:
        _fail(e)
    typer.echo(f"watch add: {name} saved in {watches.WATCHLIST_FILE}")


@watch_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the watches as JSON.")) -> None:
    """The watches and their alerts (unseen in brackets)."""
    root = repo_root()
    try:
        wl = watches.load(root)
    except watches.WatchError as e:
        _fail(e)
    if wl is None or not wl.watches:
        typer.echo("no watches" if not as_json else "[]")
        return
    st = alerts.status(root, wl)
    if as_json:
        typer.echo(
            json.dumps([{**w.model_dump(exclude_none=True), "alerts": st["alerts"][w.name]} for w in wl.watches])
        )
        return
    for w in wl.watches:
        what = w.text or w.image or ""
        rule = "confident" if w.min_confidence is None else f"confidence >= {w.min_confidence}"
        extra = [f"plate {w.plate}"] if w.plate else []
        extra += [f"{k}={','.join(v)}" for k, v in w.filters.items()] + [f"{k}={v}" for k, v in w.ranges.items()]
        extra += [f"where {w.where}"] if w.where else []
        extra += [f"-> {w.url}"] if w.url else []
        typer.echo(
            f"{w.name}\t{w.kind} {what!r}\t{rule}\t{' '.join(extra)}\t"
            f"{st['alerts'][w.name]} alerts ({st['unseen'][w.name]} unseen)"
        )


@watch_app.command("rm")
def rm(name: str = typer.Argument(..., help="The watch to remove (its alert file is kept).")) -> None:
    """Remove a watch (its alerts stay on disk)."""
    try:
        watches.remove(repo_root(), name)
    except watches.WatchError as e:
        _fail(e)
    typer.echo(f"watch rm: {name} removed")


@watch_app.command("flush")
def flush() -> None:
    """Send the queued webhook alerts (those a receiver was down for), in order, with retries."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = repo_root()
    try:
        wl = watches.load(root)
    except watches.WatchError as e:
        _fail(e)
    if wl is None:
        _fail(watches.WatchError(f"{watches.watchlist_path(root)}: no watchlist file"))
    res = webhooks.flush(alerts.alerts_dir(root, wl), wl.delivery)
    typer.echo(f"watch flush: {res['delivered']} delivered, {res['queued']} still queued")
    if res["queued"]:
        raise typer.Exit(1)
