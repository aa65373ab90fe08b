"""`carsearch serve`: the JSON API over a small real index, through httpx against uvicorn on a free
127.0.0.1 port. Every endpoint, every client mistake as a clear 4xx (never a 500), traversal
attempts, SQL-looking filter values taken literally, and a rebuild while serving."""

from __future__ import annotations

import http.client
import io
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from _serve_helpers import SETTINGS, Server, rebuild, shared_repo


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root = shared_repo(tmp_path_factory)
    searcher = CarSearch(root=root)
    app = create_app(searcher, SETTINGS, root)
    server = Server(app)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield {"root": root, "client": client, "url": server.url, "searcher": searcher, "service": app.state.service}
    server.stop()


def _err(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    assert "Traceback" not in r.text
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def _jpeg(root: Path, image_id: str) -> bytes:
    return (root / "data/raw/images" / f"{image_id}.jpg").read_bytes()


# ------------------------------------------------------------------ health, info, docs, page
def test_health_over_http_says_starting_then_ready(env):
    """/api/v1/health for load balancers: 503 "starting" until the model is warm, then 200 "ready"
    with the index version it serves."""
    svc, c = env["service"], env["client"]
    svc.ready = False
    try:
        r = c.get("/api/v1/health")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        cache = svc.s.encoder._cache  # the one query encoder's text LRU (index.encoder)
        cache.clear()
        seconds = svc.warm()
        # warm ran a real query through the model (its text vector is cached now) and took real time
        assert svc.ready and 0 < seconds < 300 and any(text == "a car" for _, text in cache), seconds
        r = c.get("/api/v1/health")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        assert r.json()["index_version"] == c.get("/api/v1/info").json()["index_version"]
    finally:
        svc.ready = True


# ------------------------------------------------------------------ info, docs, page
def test_info_says_which_model_and_version(env):
    info = env["client"].get("/api/v1/info").json()
    meta = env["searcher"].meta
    assert info["rows"] == 36 and info["model"] == "finetuned" and info["model_ref"] == meta["model_ref"]
    assert info["index_version"] == meta["version"] and info["built_at"].endswith("+00:00")
    assert info["promotion"]["use"] == "finetuned" and "registered_model" in info
    assert info["limits"]["max_page_size"] == 20 and info["limits"]["max_upload_bytes"] == 200_000
    assert set(info["filter_columns"]) == {
        "make",
        "model",
        "body_type",
        "color",
        "view",
        "scene",
        "split",
        "camera",
        "direction",
        "compass",
        "plate",
    }


def test_openapi_docs_and_page(env):
    c = env["client"]
    docs = c.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    import re

    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text)
    assert assets and not [a for a in assets if a.startswith(("http://", "https://", "//"))], assets  # offline
    assert all(c.get(a).status_code == 200 for a in assets)
    paths = c.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/search",
        "/api/v1/search/image",
        "/api/v1/info",
        "/api/v1/images/{image_id}",
        "/api/v1/thumbs/{image_id}",
    } <= set(paths)
    page = c.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "cdn" not in page.text.lower()
    for f in ("app.js", "app.css"):
        r = c.get(f"/static/{f}")
        assert r.status_code == 200 and len(r.content) > 1000 and "http://" not in r.text and "https://" not in r.text


# ------------------------------------------------------------------ search
def test_text_search_pages_scores_facets_and_why(env):
    c = env["client"]
    r = c.get("/api/v1/search", params={"q": "a red sedan seen from behind"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["limit"] == 12 and len(d["hits"]) == 12 and d["candidates"] == 36 and d["has_more"]
    scores = [h["score"] for h in d["hits"]]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in d["hits"]] == list(range(1, 13))
    assert all(h["thumb_url"] == f"/api/v1/thumbs/{h['id']}" for h in d["hits"])
    # facets: over the candidates, one count per value
    assert sum(f["count"] for f in d["facets"]["color"]) == d["candidates"]
    assert {f["value"] for f in d["facets"]["color"]} == {"red", "blue", "green"}
    # why this match: the words of the query that name the hit's attributes ("behind" = rear)
    for h in d["hits"]:
        named = {(m["attribute"], m["value"]) for m in h["why"] if m["source"] == "text"}
        assert (("color", "red") in named) == (h["color"] == "red")
        assert (("view", "rear") in named) == (h["view"] == "rear")
        assert (("body_type", "sedan") in named) == (h["body_type"] == "sedan")
    # the next page continues the ranking; the page size is capped
    p2 = c.get("/api/v1/search", params={"q": "a red sedan seen from behind", "offset": 12, "limit": 12}).json()
    assert [h["rank"] for h in p2["hits"]] == list(range(13, 25))
    assert not {h["id"] for h in p2["hits"]} & {h["id"] for h in d["hits"]}
    assert len(c.get("/api/v1/search", params={"q": "car", "limit": 500}).json()["hits"]) == 20
    # POST with a JSON body is the same search
    post = c.post("/api/v1/search", json={"q": "a red sedan seen from behind", "limit": 12}).json()
    assert [h["id"] for h in post["hits"]] == [h["id"] for h in d["hits"]]


def test_filters_narrow_the_hits_and_the_facets(env):
    c = env["client"]
    d = c.get("/api/v1/search", params={"q": "a car", "color": "red", "view": ["front", "rear"]}).json()
    assert d["hits"] and all(h["color"] == "red" and h["view"] in ("front", "rear") for h in d["hits"])
    assert [f["value"] for f in d["facets"]["color"]] == ["red"]
    assert d["query"]["filters"] == {"color": ["red"], "view": ["front", "rear"]}
    j = c.post("/api/v1/search", json={"q": "a car", "filters": {"color": ["blue"]}}).json()
    assert j["hits"] and all(h["color"] == "blue" for h in j["hits"])


@pytest.mark.parametrize(
    "value",
    [
        "red' OR '1'='1",
        "red'; DROP TABLE cars; --",
        "' OR 1=1 --",
        'red" OR "1"="1',
        "x') OR (color = 'red",
        "%",
        "red%",
        "NULL",
        "\\'",
    ],
)
def test_sql_looking_filter_values_are_literal(env, value):
    r = env["client"].get("/api/v1/search", params={"q": "a red car", "color": value})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["hits"] == [] and d["candidates"] == 0 and d["query"]["filters"] == {"color": [value]}
    assert env["searcher"].table.count_rows() == 36  # nothing dropped


def test_client_mistakes_are_clear_4xx(env):
    c = env["client"]
    _err(c.get("/api/v1/search"), 400, "empty_query")
    _err(c.get("/api/v1/search", params={"q": "   "}), 400, "empty_query")
    assert (
        "negative text alone" in _err(c.get("/api/v1/search", params={"neg": "a taxi"}), 400, "empty_query")["message"]
    )
    _err(c.post("/api/v1/search", json={}), 400, "empty_query")
    _err(c.get("/api/v1/search", params={"q": "x" * 1001}), 422, "invalid_request")
    _err(c.get("/api/v1/search", params={"q": "car", "color": ""}), 422, "invalid_request")
    _err(c.get("/api/v1/search", params={"q": "car", "color": " "}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "color": "x" * 201}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "color": ["red"] * 21}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "color": "red\x00"}), 422)
    _err(c.post("/api/v1/search", json={"q": "car", "filters": {"caption": ["x"]}}), 422)  # not a filter column
    _err(c.post("/api/v1/search", json={"q": "car", "where": "1=1"}), 422)  # no raw SQL field
    _err(c.post("/api/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "limit": 0}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "offset": -1}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "offset": 95, "limit": 10}), 400, "bad_page")
    _err(c.get("/api/v1/search", params={"q": "car", "w_text": "abc"}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "w_text": -1}), 422)
    _err(c.get("/api/v1/search", params={"q": "car", "w_text": 0}), 400, "bad_weights")
    _err(c.get("/api/v1/search", params={"like": "nope"}), 404, "unknown_id")
    _err(c.get("/api/v1/search", params={"like": "../img0001"}), 422)
    _err(c.get("/api/v1/nothing"), 404, "not_found")
    _err(c.delete("/api/v1/search"), 405)


def test_more_like_this_and_combined_queries(env):
    c, svc = env["client"], env["service"]
    d = c.get("/api/v1/search", params={"like": "img0001", "limit": 20}).json()
    assert d["hits"] and "img0001" not in [h["id"] for h in d["hits"]]  # not the image itself
    ref = env["searcher"].get_row("img0001")
    for h in d["hits"]:  # why: the attributes it shares with the query image
        assert {m["attribute"] for m in h["why"] if m["source"] == "image"} == {
            a for a in ("color", "body_type", "view", "make", "model", "scene") if h[a] and h[a] == ref[a]
        }
    ids = lambda **p: [h["id"] for h in c.get("/api/v1/search", params={"limit": 20, **p}).json()["hits"]]  # noqa: E731
    # weights: an image weight of 0 is the text search; a text weight of 0 the image search
    assert (
        ids(q="a blue van", like="img0001", w_image=0)
        == [i for i in ids(q="a blue van", limit=20 + 1) if i != "img0001"][:20]
    )
    assert ids(q="a blue van", like="img0001", w_text=0) == ids(like="img0001")
    # the combination is w_text*t + w_image*i - w_neg*n of normalised vectors, renormalised
    t, n = svc.text_vector("a blue van"), svc.text_vector("a red car")
    i = np.asarray(env["searcher"].get_row("img0001", vector=True)["vector"], np.float32)
    v = 0.7 * t + 1.3 * i / np.linalg.norm(i) - 0.4 * n
    want = [r["id"] for r in env["searcher"].search(v / np.linalg.norm(v), 20, exclude="img0001")]
    got = c.get(
        "/api/v1/search",
        params={
            "q": "a blue van",
            "like": "img0001",
            "neg": "a red car",
            "w_text": 0.7,
            "w_image": 1.3,
            "w_neg": 0.4,
            "limit": 20,
        },
    ).json()
    assert [h["id"] for h in got["hits"]] == want
    # a negative text that names a hit's attribute is shown as a conflict
    neg = c.get("/api/v1/search", params={"q": "a car", "neg": "red", "limit": 20}).json()
    for h in neg["hits"]:
        assert any(m["source"] == "negative" for m in h["why"]) == (h["color"] == "red")
    assert ids(q="a car", neg="red", w_neg=2) != ids(q="a car")


def test_image_upload(env):
    c, root = env["client"], env["root"]
    r = c.post("/api/v1/search/image", files={"image": ("q.jpg", _jpeg(root, "img0003"), "image/jpeg")})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["hits"][0]["id"] == "img0003" and d["hits"][0]["score"] > 0.999 and d["query"]["image"] is True
    # a PNG of it, with a text and a filter
    buf = io.BytesIO()
    Image.open(io.BytesIO(_jpeg(root, "img0003"))).save(buf, "PNG")
    r = c.post(
        "/api/v1/search/image",
        files={"image": ("q.png", buf.getvalue(), "image/png")},
        data={"q": "a blue car", "w_text": "0.5", "color": ["blue", "green"], "limit": "5"},
    )
    assert r.status_code == 200, r.text
    assert all(h["color"] in ("blue", "green") for h in r.json()["hits"]) and len(r.json()["hits"]) == 5
    _err(
        c.post("/api/v1/search/image", files={"image": ("x.jpg", b"GIF89a not really", "image/jpeg")}), 400, "bad_image"
    )
    _err(c.post("/api/v1/search/image", files={"image": ("x.jpg", b"", "image/jpeg")}), 400, "bad_image")
    _err(
        c.post("/api/v1/search/image", files={"image": ("x.jpg", _jpeg(root, "img0003")[:200], "image/jpeg")}),
        400,
        "bad_image",
    )
    _err(c.post("/api/v1/search/image", data={"q": "car"}), 422)  # no image part
    # over the upload limit (200 kB here): refused from Content-Length, and a chunked body is cut off
    big = b"\xff\xd8" + os.urandom(400_000)
    _err(c.post("/api/v1/search/image", files={"image": ("big.jpg", big, "image/jpeg")}), 413, "too_large")
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(40):
            yield b"\0" * 16_384
        yield f"\r\n--{boundary}--\r\n".encode()

    r = c.post(
        "/api/v1/search/image", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    _err(r, 413, "too_large")
    # the service still answers
    assert c.get("/api/v1/search", params={"q": "a car"}).status_code == 200


# ------------------------------------------------------------------ files by id only
def test_images_and_cached_thumbnails(env):
    c, root, svc = env["client"], env["root"], env["service"]
    r = c.get("/api/v1/images/img0002")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == _jpeg(root, "img0002")
    t = c.get("/api/v1/thumbs/img0002")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(t.content))
    assert im.format == "JPEG" and max(im.size) <= 64
    cached = svc.thumb_dir / "im" / "img0002.jpg"
    assert cached.is_file() and str(cached).startswith(str(root / ".carsearch" / "thumbs"))
    mtime = cached.stat().st_mtime_ns
    assert c.get("/api/v1/thumbs/img0002").content == t.content and cached.stat().st_mtime_ns == mtime  # generated once
    _err(c.get("/api/v1/images/nope"), 404, "unknown_id")
    _err(c.get("/api/v1/thumbs/nope"), 404, "unknown_id")


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (httpx would normalise dot segments)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_traversal_is_impossible(env, tmp_path):
    url, root = env["url"], env["root"]
    secret = b"top secret params"
    (root / "secret.jpg").write_bytes(secret)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(secret)
    attempts = [
        "/api/v1/images/../../params.yaml",
        "/api/v1/images/..%2F..%2Fparams.yaml",
        "/api/v1/images/%2e%2e%2fsecret",
        "/api/v1/images/%2Fetc%2Fpasswd",
        "/api/v1/images//etc/passwd",
        "/api/v1/thumbs/..%2Fsecret",
        "/api/v1/images/secret.jpg",
        "/api/v1/images/..",
        "/api/v1/images/img0001%00.jpg",
        "/api/v1/images/img0001%2F..%2F..%2Fsecret",
        f"/api/v1/images/{outside}",
        "/api/v1/images/%252e%252e%252fsecret",
        "/static/../params.yaml",
        "/static/..%2F..%2F..%2Fparams.yaml",
        "/static/%2e%2e/%2e%2e/secret.jpg",
        "/api/v1/images/img0001/../../../secret.jpg",
        "/api/v1/images/C:%5Cwindows%5Cwin.ini",
    ]
    for path in attempts:
        status, body = _raw_get(url, path)
        assert 400 <= status < 500, (path, status)
        assert secret not in body and b"root:" not in body and b"paths:" not in body, path
    # a symlink named like an id in the images folder is not in the table: not served
    (root / "data/raw/images/evil.jpg").symlink_to(outside)
    _err(env["client"].get("/api/v1/images/evil"), 404, "unknown_id")
    # an indexed image whose file became a symlink to outside the repo is not served either
    img = root / "data/raw/images/img0005.jpg"
    keep = img.read_bytes()
    img.unlink()
    img.symlink_to(outside)
    try:
        _err(env["client"].get("/api/v1/images/img0005"), 404, "missing_file")
        _err(env["client"].get("/api/v1/thumbs/img0005"), 404, "missing_file")
    finally:
        img.unlink()
        img.write_bytes(keep)
        (root / "data/raw/images/evil.jpg").unlink()


def test_garbage_never_gives_500(env):
    c = env["client"]
    for params in (
        {"q": "\x00\x01"},
        {"q": "🚗" * 300},
        {"q": "car", "limit": "1e9"},
        {"q": "car", "offset": "999999999999"},
        {"q": "car", "facets": "maybe"},
        {"like": "a" * 129},
        {"q": "car", "split": "'"},
        {"q": "'); --"},
    ):
        r = c.get("/api/v1/search", params=params)
        assert r.status_code < 500, (params, r.text)
    for body in (
        [],
        "text",
        {"q": 5},
        {"q": "car", "limit": "many"},
        {"q": "car", "filters": {"color": "red"}},
        {"q": None},
    ):
        r = c.post("/api/v1/search", json=body)
        assert 400 <= r.status_code < 500, (body, r.text)


# ------------------------------------------------------------------ the CLI, and a rebuild while serving
def test_carsearch_serve_binds_loopback_and_loads_once(env, monkeypatch):
    """`carsearch serve` reads params.yaml's serve section, loads one CarSearch and runs uvicorn on
    127.0.0.1 unless told otherwise (uvicorn.run is stubbed: the app it gets is checked in-process)."""
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from carsearch.cli import app as cli
    from carsearch.index import search as search_mod

    calls, opened = [], []
    monkeypatch.setenv("CARSEARCH_ROOT", str(env["root"]))
    # what the app holds when uvicorn would open the port: the model is loaded already
    monkeypatch.setattr(
        uvicorn, "run", lambda app, **kw: calls.append((app, {**kw, "loaded": app.state.service.s.encoder.loaded}))
    )
    real_init = search_mod.CarSearch.__init__
    monkeypatch.setattr(
        search_mod.CarSearch, "__init__", lambda self, *a, **k: (opened.append(1), real_init(self, *a, **k))[1]
    )
    res = CliRunner().invoke(cli, ["serve", "--no-access-log"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000 and kw["access_log"] is False and len(opened) == 1
    assert kw["loaded"], "the model loads before the port opens, not on the first request"
    with TestClient(app) as tc:
        health = tc.get("/api/v1/health")
        assert health.status_code == 200 and health.json() == {
            "status": "ready",
            "index_version": tc.get("/api/v1/info").json()["index_version"],
            "rows": 36,
        }
        assert tc.get("/api/v1/info").json()["rows"] == 36
        assert tc.get("/api/v1/search", params={"q": "a red car"}).status_code == 200
    assert len(opened) == 1  # the model and table are loaded once, not per request
    CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "9123", "--insecure"], catch_exceptions=False)
    assert calls[-1][1]["host"] == "0.0.0.0" and calls[-1][1]["port"] == 9123


def test_rebuild_while_serving_has_zero_errors(env):
    c, root = env["client"], env["root"]
    v1 = c.get("/api/v1/info").json()["index_version"]
    errors, done, n = [], threading.Event(), [0]

    def hammer(i):
        with httpx.Client(base_url=env["url"], timeout=30) as cl:
            while not done.is_set():
                for req in (
                    lambda: cl.get("/api/v1/search", params={"q": f"a red car {i}", "color": "red"}),
                    lambda: cl.get("/api/v1/search", params={"like": "img0001"}),
                    lambda: cl.get("/api/v1/thumbs/img0007"),
                    lambda: cl.get("/api/v1/info"),
                ):
                    try:
                        r = req()
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                        n[0] += 1
                    except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                        errors.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        versions = [rebuild(root)["rows"] for _ in range(2)]
    finally:
        done.set()
        for t in threads:
            t.join()
    assert versions == [36, 36] and n[0] > 0 and not errors, errors[:3]
    info = c.get("/api/v1/info").json()
    live = (root / "data/index/carsearch_index.json").read_text()
    assert info["index_version"] != v1 and info["index_version"] in live
    assert c.get("/api/v1/search", params={"q": "a red car"}).json()["index_version"] == info["index_version"]
