"""Watchlists (issue 33): saved searches in conf/watchlists.yaml run on the NEW rows of every
`index add` and build_index (old rows never alert again); a hit alerts only when the index's
calibration calls it confident (or an exact plate match); alerts go to one JSONL per watch and to a
webhook on a real loopback HTTP receiver, retried with backoff (one fails twice, then accepts: order
kept, nothing lost), queued while the receiver is down and sent by `carsearch watch flush`. The CLI
and the API (real uvicorn, behind the token) edit the watchlist; the page (real Chromium) shows the
badge of unseen alerts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from _serve_helpers import SETTINGS, Server, _env, rebuild
from testkit import TINY, merge, write_pairs, write_params

REPO = Path(__file__).resolve().parents[1]
TOKEN = "watch-Token-3"


def _fit(s0: float, w: float) -> dict:
    """A calibration fit of the score alone: confidence = sigmoid(w * (score - s0)), confident from 0.5."""
    return {
        "coef": {"score": w},
        "mean": [0.0] * 8,
        "scale": [1.0] * 8,
        "intercept": -w * s0,
        "threshold": 0.5,
        "target_precision": 0.9,
    }


def _watchlist(root: Path, watches: list | None = None, **delivery) -> None:
    import yaml

    doc = yaml.safe_load((REPO / "conf/watchlists.yaml").read_text())
    doc["delivery"].update(delivery)
    doc["watches"] = watches or []
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf/watchlists.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A small indexed repo (demo drawings, the tiny CLIP) whose index ships a text and an image fit."""
    from carsearch.model.clip import load_clip, save_clip

    root = tmp_path_factory.mktemp("watch") / "repo"
    root.mkdir(parents=True)
    write_pairs(root, {"train": 8, "val": 4, "test": 8}, size=48)
    save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
    write_params(root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache"})
    # text: every hit confident from score 0 on (the tiny model's cosines are near 0); image: only a
    # near-identical image (the query image itself)
    cal = {"kinds": {"text": _fit(-1.0, 10.0), "image": _fit(0.9995, 4000.0)}}
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/calibration.json").write_text(json.dumps({"finetuned": cal}))
    rebuild(root)
    return root


def _photos(folder: Path, n: int, seed: str) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    out = []
    for i in range(n):
        arr = rng.integers(0, 255, (40 + i, 56, 3), dtype=np.uint8)
        p = folder / f"{seed}-{i}.png"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


def _add(root: Path, paths) -> dict:
    from carsearch.core.params import load_config
    from carsearch.index.append import add_images

    with _env(CARSEARCH_ROOT=str(root)):
        return add_images(list(paths), load_config(root / "params.yaml"), root)


def _alerts(root: Path, name: str) -> list[dict]:
    from carsearch.index.alert_files import read_alerts

    return read_alerts(root / "data/alerts" / f"{name}.jsonl")


def _ids(root: Path) -> set[str]:
    from carsearch.index.search import CarSearch

    return set(CarSearch(root=root).table.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist())


# ------------------------------------------------------------------ a real webhook receiver
class Receiver:
    """http.server on 127.0.0.1 in a thread: answers 503 to the first `fail_first` POSTs, then 200;
    keeps the bodies it accepted, in order."""

    def __init__(self, fail_first: int = 0, port: int = 0):
        self.fail_first, self.tries, self.got = fail_first, 0, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.tries += 1
                ok = outer.tries > outer.fail_first
                if ok:
                    outer.got.append(json.loads(body))
                self.send_response(200 if ok else 503)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_index_add_alerts_on_new_rows_only_and_a_confident_image_match(repo, tmp_path):
    first = _photos(tmp_path / "a", 4, "first")
    _watchlist(
        repo,
        [
            {"name": "anything", "text": "a car", "min_confidence": 0.0},  # every new row with a confidence
            {"name": "that-car", "image": str(first[2])},  # confident only: the image itself
            {"name": "red-only", "text": "a car", "filters": {"color": ["no-such-colour"]}},
        ],
    )
    old = _ids(repo)
    res = _add(repo, first)
    new = _ids(repo) - old
    assert res["added"] == 4 and len(new) == 4
    assert res["watches"]["new_rows"] == 4 and res["watches"]["by_watch"] == {
        "anything": 4,
        "that-car": 1,
        "red-only": 0,
    }
    got = _alerts(repo, "anything")
    assert {a["id"] for a in got} == new  # the new rows, none of the old ones
    assert all(a["reason"] == "min_confidence" and a["query"] == {"text": "a car"} for a in got)
    (same,) = _alerts(repo, "that-car")
    assert same["reason"] == "confident" and same["confidence"] >= 0.5 and same["origin"].endswith(first[2].name)

    # a second add: only its rows alert; the first add's rows never again, and re-adding them adds nothing
    second = _photos(tmp_path / "b", 3, "second")
    res = _add(repo, [*second, *first])
    assert res["added"] == 3 and res["already_indexed"] == 4
    newer = _ids(repo) - old - new
    got = _alerts(repo, "anything")
    assert len(got) == 7 and {a["id"] for a in got[4:]} == newer
    assert len(_alerts(repo, "that-car")) == 1

    # a rebuild: the corpus rows were all live, so nothing is new and nothing alerts again
    out = rebuild(repo)
    assert out["rows"] > 0 and len(_alerts(repo, "anything")) == 7 and len(_alerts(repo, "that-car")) == 1


def test_the_alert_rule_confident_or_an_exact_plate():
    from carsearch.index.alerts import reason
    from carsearch.index.watches import make_watch

    conf_only = make_watch(name="w", text="a van")
    cut = make_watch(name="c", text="a van", min_confidence=0.3)
    plate = make_watch(name="p", plate="AB12CDE")
    assert reason(conf_only, {"confidence": 0.9, "confident": True}, None) == "confident"
    assert reason(conf_only, {"confidence": 0.9, "confident": False}, None) is None  # the calibration's call
    assert reason(conf_only, {"confidence": None, "confident": False}, None) is None  # no calibration: no alert
    assert reason(cut, {"confidence": 0.31, "confident": False}, None) == "min_confidence"
    assert reason(cut, {"confidence": 0.29, "confident": False}, None) is None
    assert reason(plate, {"plate": "AB12CDE", "confidence": None}, {"AB12CDE": 0.0, "A812CDE": 0.5}) == "plate"
    assert reason(plate, {"plate": "A812CDE", "confidence": None}, {"AB12CDE": 0.0, "A812CDE": 0.5}) is None


def test_webhook_fails_twice_then_accepts_order_kept_nothing_lost(repo, tmp_path, caplog):
    from carsearch.index import alert_files, alerts, watches
    from carsearch.index.search import CarSearch

    rx = Receiver(fail_first=2)
    try:
        s = CarSearch(root=repo)
        ids = sorted(_ids(repo))[:5]
        w = watches.make_watch(name="hooked", text="a car", min_confidence=0.0, url=rx.url)
        wl = watches.Watchlist(
            version=1,
            delivery=watches.Delivery(
                alerts_dir=str(tmp_path / "alerts"), attempts=4, wait_s=0.01, max_wait_s=0.1, timeout_s=5
            ),
            watches=[w],
        )
        with caplog.at_level(logging.INFO, logger="carsearch.alerts"):
            report = alerts.run_watches(s, repo, ids, wl)
    finally:
        rx.stop()
    written = alert_files.read_alerts(tmp_path / "alerts/hooked.jsonl")
    assert report["alerts"] == 5 and report["webhooks"] == {"delivered": 5, "queued": 0, "receivers_down": []}
    assert rx.tries == 7 and [a["alert_id"] for a in rx.got] == [a["alert_id"] for a in written]  # in order, all
    assert (tmp_path / "alerts/outbox.jsonl").read_text() == ""
    retries = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(retries) == 2 and "try 1 failed" in retries[0] and "answered 503" in retries[0]
    assert "try 2 failed" in retries[1] and "retrying in" in retries[1]
    keep = Path(os.environ.get("CARSEARCH_EVIDENCE_DIR") or tmp_path)  # a copy the note can cite
    keep.mkdir(parents=True, exist_ok=True)
    log = keep / "webhook_retry.log"
    log.write_text("\n".join(r.getMessage() for r in caplog.records) + "\n")
    print(f"\nwebhook retry log: {log}\n{log.read_text()}")


def test_a_receiver_that_is_down_loses_nothing_and_flush_sends_the_queue_in_order(repo, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from carsearch.cli import app
    from carsearch.index import alert_files, alerts, watches
    from carsearch.index.search import CarSearch

    rx = Receiver(fail_first=10**6)  # down: 503 to everything
    port = rx.server.server_port
    root = tmp_path / "r"
    root.mkdir()
    shutil.copy(repo / "params.yaml", root / "params.yaml")
    _watchlist(root, [{"name": "down", "text": "a car", "min_confidence": 0.0, "url": rx.url}], attempts=2, wait_s=0.01)
    wl = watches.load(root)
    s = CarSearch(repo / "data/index", root=repo)
    ids = sorted(_ids(repo))
    r1 = alerts.run_watches(s, root, ids[:3], wl)
    r2 = alerts.run_watches(s, root, ids[3:6], wl)  # queued behind the first three
    rx.stop()
    assert r1["webhooks"]["queued"] == 3 and r2["webhooks"] == {"delivered": 0, "queued": 6, "receivers_down": [rx.url]}
    assert len(alert_files.read_alerts(root / "data/alerts/down.jsonl")) == 6  # the alert files have them all
    up = Receiver(port=port)  # the receiver is back, on the same port
    try:
        monkeypatch.setenv("CARSEARCH_ROOT", str(root))
        out = CliRunner().invoke(app, ["watch", "flush"])
    finally:
        up.stop()
    assert out.exit_code == 0 and "6 delivered, 0 still queued" in out.output, out.output
    written = alert_files.read_alerts(root / "data/alerts/down.jsonl")
    assert [a["alert_id"] for a in up.got] == [a["alert_id"] for a in written]  # the order they were raised in
    assert {a["id"] for a in up.got[:3]} == set(ids[:3]) and {a["id"] for a in up.got[3:]} == set(ids[3:6])
    assert (root / "data/alerts/outbox.jsonl").read_text() == ""


def test_cli_add_list_rm_round_trip_and_its_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from carsearch.cli import app

    _watchlist(tmp_path)
    monkeypatch.setenv("CARSEARCH_ROOT", str(tmp_path))
    cli = CliRunner()
    add = cli.invoke(
        app,
        [
            "watch",
            "add",
            "white-van",
            "--text",
            "a white van",
            "--filter",
            "camera=cam-2",
            "--filter",
            "color=white",
            "--min-confidence",
            "0.7",
            "--url",
            "http://127.0.0.1:9/x",
        ],
    )
    assert add.exit_code == 0, add.output
    assert cli.invoke(app, ["watch", "add", "plate-1", "--plate", "AB12 CDE"]).exit_code == 0
    listed = cli.invoke(app, ["watch", "list", "--json"])
    got = json.loads(listed.output)
    assert [w["name"] for w in got] == ["white-van", "plate-1"]
    assert got[0]["filters"] == {"camera": ["cam-2"], "color": ["white"]} and got[0]["min_confidence"] == 0.7
    text = cli.invoke(app, ["watch", "list"]).output
    assert (
        "white-van\ttext 'a white van'\tconfidence >= 0.7" in text
        and "plate-1\tplate ''\tconfident\tplate AB12 CDE" in text
    )
    import yaml

    doc = yaml.safe_load((tmp_path / "conf/watchlists.yaml").read_text())
    assert doc["version"] == 1 and doc["delivery"]["attempts"] == 5 and len(doc["watches"]) == 2

    dup = cli.invoke(app, ["watch", "add", "white-van", "--text", "x"])
    assert dup.exit_code == 1 and "watch 'white-van' exists already" in dup.output
    bad = cli.invoke(app, ["watch", "add", "x", "--text", "x", "--filter", "colour=red"])
    assert bad.exit_code == 1 and "unknown filter(s) ['colour']" in bad.output
    empty = cli.invoke(app, ["watch", "add", "x"])
    assert empty.exit_code == 1 and "a watch needs a text, an image or a plate" in empty.output
    assert cli.invoke(app, ["watch", "rm", "white-van"]).exit_code == 0
    gone = cli.invoke(app, ["watch", "rm", "white-van"])
    assert gone.exit_code == 1 and "no watch named 'white-van' (watches: plate-1)" in gone.output
    assert [w["name"] for w in json.loads(cli.invoke(app, ["watch", "list", "--json"]).output)] == ["plate-1"]


def _served_copy(repo: Path, tmp_path: Path) -> Path:
    """The repo's params and index, with a watchlist of its own and 3 unseen alerts."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(repo / "params.yaml", root / "params.yaml")
    for entry in repo.iterdir():  # the index and its images (thumbnails on the page); a watchlist of its own
        if entry.name not in ("conf", "params.yaml"):
            os.symlink(entry, root / entry.name)
    _watchlist(root, [{"name": "vans", "text": "a van", "min_confidence": 0.0}], alerts_dir="alerts")
    (root / "alerts").mkdir()
    (root / "alerts/vans.jsonl").write_text(
        "".join(
            json.dumps({"alert_id": f"a{i}", "watch": "vans", "id": f"row{i}", "reason": "confident"}) + "\n"
            for i in range(3)
        )
    )
    return root


def test_api_edits_watches_behind_the_token(repo, tmp_path):
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root = _served_copy(repo, tmp_path)
    server = Server(create_app(CarSearch(repo / "data/index", root=repo), merge(SETTINGS, {"token": TOKEN}), root))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as anon:
            r = anon.post("/api/v1/watches", json={"name": "x", "text": "a bus"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert c.get("/api/v1/alerts").json()["total_unseen"] == 3
            r = c.post("/api/v1/watches", json={"name": "bus", "text": "a bus", "filters": {"camera": ["cam-1"]}})
            assert r.status_code == 201 and r.json()["kind"] == "text"
            r = c.post("/api/v1/watches", json={"name": "bus", "text": "a bus"})
            assert r.status_code == 409 and "exists already" in r.json()["error"]["message"]
            r = c.post("/api/v1/watches", json={"name": "nothing"})
            assert r.status_code == 422
            assert [w["name"] for w in c.get("/api/v1/watches").json()["watches"]] == ["vans", "bus"]
            assert c.delete("/api/v1/watches/bus").json() == {"removed": "bus"}
            r = c.delete("/api/v1/watches/bus")
            assert r.status_code == 404 and "no watch named 'bus'" in r.json()["error"]["message"]
            seen = c.post("/api/v1/alerts/seen").json()
            assert seen["total_unseen"] == 0 and seen["alerts"] == {"vans": 3}
    finally:
        server.stop()


def test_the_page_shows_the_alert_badge_and_edits_watches(repo, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium (apt-get install chromium) for the browser tests")
    pw = pytest.importorskip("playwright.sync_api")
    from carsearch.index import watches
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root = _served_copy(repo, tmp_path)
    shot = tmp_path / "alert_badge.png"
    server = Server(create_app(CarSearch(repo / "data/index", root=repo), SETTINGS, root))
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            pg = browser.new_page(viewport={"width": 1100, "height": 700})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.set_default_timeout(15_000)
            pg.goto(server.url + "/?q=a+white+van")
            pg.wait_for_function("document.body.dataset.alertsLoaded === '1'")
            badge = pg.text_content("#alert-badge")
            visible = pg.is_visible("#alert-badge")
            pg.wait_for_function("[...document.images].every((i) => i.complete)")
            pg.screenshot(path=str(shot))
            pg.click("#watch-bell")  # opens the panel, marks the alerts seen
            pg.wait_for_function("document.body.dataset.unseen === '0'")
            hidden_after = not pg.is_visible("#alert-badge")
            pg.fill("#watch-form input[name=name]", "white-van")  # text: the current query
            pg.click("#watch-form button[type=submit]")
            pg.wait_for_function("document.body.dataset.watches === '2'")
            pg.screenshot(path=str(tmp_path / "watch_panel.png"))
            pg.click("#watch-list li[data-name=vans] .rm")
            pg.wait_for_function("document.body.dataset.watches === '1'")
            browser.close()
    finally:
        server.stop()
    assert not errors, errors
    assert badge == "3" and visible and hidden_after
    wl = watches.load(root)
    assert [(w.name, w.text) for w in wl.watches] == [("white-van", "a white van")]
    keep = Path(os.environ.get("CARSEARCH_EVIDENCE_DIR") or tmp_path)
    keep.mkdir(parents=True, exist_ok=True)
    if keep != tmp_path:
        shutil.copy(shot, keep / shot.name)
    print(f"\nalert badge screenshot: {keep / shot.name}")


def test_a_build_runs_the_watches_on_the_rows_the_live_version_lacks(repo, tmp_path):
    import pyarrow as pa

    from carsearch.index.store import ids_not_live

    live = sorted(_ids(repo))
    assert ids_not_live(repo / "data/index", pa.array([*live[:3], "brand-new-1", "brand-new-2"])) == [
        "brand-new-1",
        "brand-new-2",
    ]
    assert ids_not_live(tmp_path / "no-index", pa.array(live)) is None  # a first build: every row is new
