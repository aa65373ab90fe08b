"""Judgments (issue 34): a ✓/✗ on a hit is stored append-only in data/feedback/judgments.jsonl.
Real writers at once: two uvicorn servers (request threads) and the CLI (`carsearch judge`, its own
processes) append to one file; nothing is lost, no line is torn. The API route sits behind the
token beyond loopback like every /api/ route; a torn tail left by a killed writer is reported by the
reader and never glued to the next record."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from _serve_helpers import SETTINGS, Server, shared_repo

TOKEN = "judge-Token-7"


def _env(root: Path) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "CARSEARCH_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": src}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return shared_repo(tmp_path_factory)


def _ids(root: Path) -> list[str]:
    from carsearch.index.search import CarSearch

    return [r["id"] for r in CarSearch(root=root).table.search().select(["id"]).limit(8).to_list()]


def _lines(path: Path) -> list[dict]:
    from carsearch.feedback import store

    loaded = store.read(path)
    assert loaded.problems == []
    return [j.model_dump() for j in loaded.judgments]


def test_two_servers_and_the_cli_append_at_once_nothing_lost_nothing_torn(repo, tmp_path):
    from carsearch.feedback import results, store
    from carsearch.feedback.record import Query

    path = store.judgments_file(repo)
    path.unlink(missing_ok=True)
    ids = _ids(repo)
    # a saved result list for the CLI: what `carsearch search` leaves behind
    qid = results.save(
        repo, Query(kind="text", text="a red car"), [{"id": h, "rank": i + 1} for i, h in enumerate(ids)]
    )
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    env = _env(repo)
    # two servers (uvicorn, each its own app, searcher and worker threads) in this process: a
    # writer per request thread; the CLI writers below are processes of their own
    servers = [Server(create_app(CarSearch(root=repo), SETTINGS, repo)) for _ in range(2)]
    try:
        n = 40  # per server

        def post(k: int) -> int:
            url = servers[k % 2].url
            body = {"q": f"writer {k % 2} query {k // 2}", "hit_id": ids[k % len(ids)], "rank": 1 + k % len(ids)}
            return httpx.post(f"{url}/api/v1/judgments", json={**body, "verdict": "y"}, timeout=30).status_code

        cli = [sys.executable, "-m", "carsearch.cli", "judge", qid]
        walkers = [  # the interactive pass: one ✓/✗ per hit of the list, each process one append
            subprocess.Popen(
                cli, env=env, cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]

        def single(rv):
            return subprocess.run(cli + [str(rv[0]), rv[1]], env=env, cwd=repo, capture_output=True, text=True)

        with ThreadPoolExecutor(12) as pool:  # all at once: CLI processes while the servers take requests
            walks = [pool.submit(w.communicate, "y\nn\n\n-\nq\n".encode(), 60) for w in walkers]
            singles = list(pool.map(single, ((1, "✓"), (4, "n"))))
            codes = list(pool.map(post, range(2 * n)))
            walked = [w.result() for w in walks]
    finally:
        for server in servers:
            server.stop()
    assert codes == [201] * (2 * n)
    assert [s.returncode for s in singles] == [0] * 2, [s.stderr for s in singles]
    assert all(w.returncode == 0 for w in walkers), walked
    rows = _lines(path)  # every line parses: none torn, none glued to another
    api = [r for r in rows if r["source"] == "api"]
    assert sorted(r["query"]["text"] for r in api) == sorted(f"writer {k % 2} query {k // 2}" for k in range(2 * n))
    assert all(r["index_version"] and r["hit"]["path"] for r in api)  # the server filled them in
    cli_rows = [r for r in rows if r["source"] == "cli"]
    singles_seen = sorted((r["hit"]["rank"], r["verdict"]) for r in cli_rows)
    # 2 singles + 2 walks of (1 ✓, 2 ✗, 3 skipped, 4 ✗, then q)
    assert singles_seen == sorted([(1, True), (4, False)] + [(1, True), (2, False), (4, False)] * 2)
    assert {r["query_id"] for r in cli_rows} == {qid}
    assert len(rows) == 2 * n + 2 + 6


def test_judgment_route_needs_the_token_beyond_loopback_and_says_what_is_wrong(repo):
    from carsearch.feedback import store
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    path = store.judgments_file(repo)
    before = len(_lines(path))
    hit = _ids(repo)[0]
    app = create_app(CarSearch(root=repo), SETTINGS.model_copy(update={"token": TOKEN}), repo)
    server = Server(app)
    try:
        body = {"q": "a blue van", "filters": {"color": ["blue"]}, "hit_id": hit, "rank": 3, "verdict": "✗"}
        with httpx.Client(base_url=server.url, timeout=30) as anon:
            r = anon.post("/api/v1/judgments", json=body)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            ok = c.post("/api/v1/judgments", json=body)
            assert ok.status_code == 201, ok.text
            j = ok.json()
            assert j["verdict"] is False and j["query"]["kind"] == "text" and j["hit"]["rank"] == 3
            assert j["model_hash"] == CarSearch(root=repo).meta.get("content_hash")
            r = c.post("/api/v1/judgments", json={**body, "hit_id": "nope"})
            assert r.status_code == 404 and "no indexed image with id 'nope'" in r.json()["error"]["message"]
            r = c.post("/api/v1/judgments", json={**body, "verdict": "maybe"})
            assert r.status_code == 400 and "'maybe' is not ✓ or ✗" in r.json()["error"]["message"]
            r = c.post("/api/v1/judgments", json={**body, "q": " "})
            assert r.status_code == 400 and "needs the query it judges" in r.json()["error"]["message"]
            like = c.post("/api/v1/judgments", json={"like": hit, "hit_id": hit, "rank": 1, "verdict": True})
            assert like.status_code == 201 and like.json()["query"] == {
                "kind": "image",
                "text": None,
                "image_id": hit,
                "image_sha": None,
                "neg": None,
                "filters": {},
            }
    finally:
        server.stop()
    rows = _lines(path)
    assert len(rows) == before + 2 and rows[-2]["query_id"] == j["query_id"]


def test_a_torn_tail_is_reported_and_never_glued_to_the_next_record(tmp_path):
    from carsearch.feedback import store
    from carsearch.feedback.record import Hit, Judgment, Query

    path = tmp_path / "judgments.jsonl"
    j = Judgment.make(Query(kind="text", text="a taxi"), Hit(id="abc", rank=1), "y")
    store.append(path, j)
    with open(path, "ab") as f:  # a writer killed mid-line
        f.write(j.line()[:40])
    loaded = store.read(path)
    assert len(loaded.judgments) == 1
    assert loaded.problems == [f"{path}:2: skipped: torn last line (a writer was stopped mid-write)"]
    store.append(path, j)
    loaded = store.read(path)
    assert len(loaded.judgments) == 2 and len(loaded.problems) == 1
    assert loaded.problems[0].startswith(f"{path}:2: skipped: ") and "torn last line" not in loaded.problems[0]


def test_cli_judge_errors_name_what_is_known(repo):
    env = _env(repo)
    cli = [sys.executable, "-m", "carsearch.cli", "judge"]
    r = subprocess.run(cli + ["0123456789ab", "1", "y"], env=env, cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and "no saved result list '0123456789ab'" in r.stderr
    r = subprocess.run(cli + ["last", "99", "y"], env=env, cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and "has no hit at rank 99" in r.stderr
    r = subprocess.run(cli + ["last", "1", "perhaps"], env=env, cwd=repo, capture_output=True, text=True)
    assert r.returncode == 1 and "'perhaps' is not ✓ or ✗" in r.stderr


def test_judge_hits_on_the_page_by_click_and_keyboard(repo):
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium (apt-get install chromium) for the browser tests")
    pw = pytest.importorskip("playwright.sync_api")
    from carsearch.feedback import store
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    path = store.judgments_file(repo)
    before = len(_lines(path))
    server = Server(create_app(CarSearch(root=repo), SETTINGS, repo))
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            pg = browser.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.set_default_timeout(15_000)
            pg.goto(server.url + "/?q=a+white+van")
            pg.wait_for_function("Number(document.body.dataset.renders || 0) > 0")
            ids = pg.eval_on_selector_all("#grid .card", "cs => cs.map(c => c.dataset.id)")
            pg.click("#grid .card[data-index='0'] .judge.yes")  # ✓ by click
            pg.wait_for_function("Number(document.body.dataset.judged || 0) === 1")
            pg.focus("#grid .card[data-index='0']")
            pg.keyboard.press("j")  # next card
            pg.keyboard.press("n")  # ✗ by keyboard (then the focus moves on)
            pg.wait_for_function("Number(document.body.dataset.judged || 0) === 2")
            verdicts = pg.eval_on_selector_all("#grid .card", "cs => cs.slice(0, 2).map(c => c.dataset.verdict)")
            focused = pg.evaluate("document.activeElement.dataset.index")
            browser.close()
    finally:
        server.stop()
    assert not errors, errors
    assert verdicts == ["yes", "no"] and focused == "2"
    rows = _lines(path)[before:]
    assert [(r["query"]["text"], r["hit"]["id"], r["hit"]["rank"], r["verdict"], r["source"]) for r in rows] == [
        ("a white van", ids[0], 1, True, "page"),
        ("a white van", ids[1], 2, False, "page"),
    ]


def test_cli_search_saves_its_list_under_the_query_id_it_prints(repo, monkeypatch):
    from typer.testing import CliRunner

    from carsearch.cli import app
    from carsearch.feedback import results
    from carsearch.feedback.record import Query

    monkeypatch.setenv("CARSEARCH_ROOT", str(repo))
    res = CliRunner().invoke(app, ["search", "a  red car", "-k", "3", "--color", "red"])
    assert res.exit_code == 0, res.output
    qid = Query(kind="text", text="a red car", filters={"color": ["red"]}).id  # the same query, the same id
    assert f"query id {qid}: judge a hit with `carsearch judge {qid} RANK ✓|✗`" in res.output
    saved = results.load(repo, "last")
    assert saved["query_id"] == qid and [h["rank"] for h in saved["hits"]] == [1, 2, 3]
    assert all(h["path"] for h in saved["hits"]) and saved["index_version"]
    j = results.judgment(saved, 2, "-")
    assert j.verdict is False and j.hit.id == saved["hits"][1]["id"] and j.source == "cli"
