"""The alert files of the watchlists (issue 33), read without the query path: where they live
(`delivery.alerts_dir` of conf/watchlists.yaml), alerts per watch and how many are unseen (`seen.json`:
the count of each watch's alerts marked seen, by the page or the API). Written by `index.alerts`."""

from __future__ import annotations

import json
from pathlib import Path

from carsearch.core.io import write_json
from carsearch.core.paths import resolve
from carsearch.index import watches

SEEN = "seen.json"


def alerts_dir(root: Path, wl: watches.Watchlist) -> Path:
    return resolve(wl.delivery.alerts_dir, Path(root))


def alert_file(adir: Path, name: str) -> Path:
    return adir / f"{name}.jsonl"


def count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def read_alerts(path: Path, last: int | None = None) -> list[dict]:
    out = []
    for line in path.read_bytes().split(b"\n") if path.is_file() else []:
        try:
            out.append(json.loads(line)) if line.strip() else None
        except ValueError:  # a torn line a killed writer left: skipped
            continue
    return out[-last:] if last else out


def status(root: Path, wl: watches.Watchlist) -> dict:
    """Alerts per watch and how many are unseen (`seen.json`: the count marked seen per watch)."""
    adir = alerts_dir(root, wl)
    seen = _seen(adir)
    by = {w.name: count_lines(alert_file(adir, w.name)) for w in wl.watches}
    unseen = {n: max(0, c - seen.get(n, 0)) for n, c in by.items()}
    return {"alerts": by, "unseen": unseen, "total_unseen": sum(unseen.values())}


def _seen(adir: Path) -> dict:
    try:
        return json.loads((adir / SEEN).read_text())
    except (OSError, ValueError):
        return {}


def mark_seen(root: Path, wl: watches.Watchlist) -> dict:
    adir = alerts_dir(root, wl)
    write_json(adir / SEEN, {w.name: count_lines(alert_file(adir, w.name)) for w in wl.watches})
    return status(root, wl)
