"""Alert precision and recall of watchlists (issue 33) on a built index with ground-truth labels
(the street world's test cameras after `make repro`): the rows of `--split` (default test) or of
`--cameras` play the new rows; one text watch per (colour, body type) they hold at least
`--min-support` times ("a white van", confident only), and one plate watch per true plate
(`labels.plate` of the world's vehicles, up to `--plates`). Every watch runs through
`index.alerts.run_watches` as after an `index add` (alerts into a temporary folder). A text alert
is right when the row has the watch's colour and body type; a plate alert when the row's true plate
is the watch's. Prints precision and recall per kind (micro) as JSON.

    python scripts/watch_quality.py [--root .] [--split test | --cameras cam-3,cam-4]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _score(alerts: dict[str, list[dict]], truth: dict[str, set[str]]) -> dict:
    raised = sum(len(a) for a in alerts.values())
    right = sum(len({a["id"] for a in alerts[n]} & truth[n]) for n in alerts)
    relevant = sum(len(t) for t in truth.values())
    return {
        "watches": len(truth),
        "alerts": raised,
        "relevant_rows": relevant,
        "precision": round(right / raised, 4) if raised else None,
        "recall": round(right / relevant, 4) if relevant else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--split", default="test")
    ap.add_argument("--cameras", default=None)
    ap.add_argument("--min-support", type=int, default=3)
    ap.add_argument("--plates", type=int, default=30)
    a = ap.parse_args()
    from carsearch.core.params import load_config
    from carsearch.index import alert_files, alerts, watches
    from carsearch.index.search import CarSearch

    root = a.root.resolve()
    s = CarSearch(root=root, plate_search=load_config(root / "params.yaml").index.plate_search)
    cols = [c for c in ("id", "labels_json", "camera", "split", "color", "body_type") if c in s.table.schema.names]
    rows = s.table.search().select(cols).limit(None).to_arrow().to_pylist()
    cams = set(a.cameras.split(",")) if a.cameras else None
    new = [r for r in rows if (r.get("camera") in cams if cams else r.get("split") == a.split)]
    for r in new:
        r["labels"] = json.loads(r.get("labels_json") or "{}") or {}
    kinds = collections.Counter(
        (r.get("color"), r.get("body_type")) for r in new if r.get("color") and r.get("body_type")
    )
    ws, truth = [], {}
    for (c, b), n in sorted(kinds.items()):
        if n >= a.min_support:
            name = f"text-{c}-{b}".replace(" ", "_")
            ws.append(watches.make_watch(name=name, text=f"a {c} {b}"))
            truth[name] = {r["id"] for r in new if (r.get("color"), r.get("body_type")) == (c, b)}
    plates = sorted({r["labels"]["plate"] for r in new if r["labels"].get("plate")})[: a.plates]
    for i, p in enumerate(plates):
        ws.append(watches.make_watch(name=f"plate-{i}", plate=p))
        truth[f"plate-{i}"] = {r["id"] for r in new if r["labels"].get("plate") == p}
    with tempfile.TemporaryDirectory() as d:
        delivery = watches.Delivery(alerts_dir=d, attempts=1, wait_s=0, max_wait_s=0, timeout_s=1)
        wl = watches.Watchlist(version=1, delivery=delivery, watches=ws)
        report = alerts.run_watches(s, root, [r["id"] for r in new], wl)
        got = {w.name: alert_files.read_alerts(alert_files.alert_file(Path(d), w.name)) for w in ws}
    by_kind = {
        k: _score(
            {n: v for n, v in got.items() if n.startswith(k)}, {n: t for n, t in truth.items() if n.startswith(k)}
        )
        for k in ("text", "plate")
    }
    out = {
        "index_version": s.meta.get("version"),
        "new_rows": len(new),
        "calibrated": s.calibration is not None,
        "seconds": report.get("seconds_matching"),
        **by_kind,
        "problems": report["problems"][:5],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
