"""`carsearch serve` beyond loopback: an access token on every /api route (header or the page's
cookie, compared in constant time), a per-client limit on image uploads, and a refusal to bind a
non-loopback address without a token unless --insecure. Over real HTTP (uvicorn on 127.0.0.1) and,
for the page's token prompt, in a real browser."""

from __future__ import annotations

import io
import shutil

import httpx
import pytest
from PIL import Image

from _serve_helpers import SETTINGS, Server, shared_repo

TOKEN = "s3cret-Token-42"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root = shared_repo(tmp_path_factory)
    app = create_app(
        CarSearch(root=root), SETTINGS.model_copy(update={"token": TOKEN, "upload_rate_per_minute": 3}), root
    )
    app.state.service.warm()  # as `carsearch serve` does before it opens the port
    server = Server(app)
    yield {"url": server.url, "root": root}
    server.stop()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _calls(client: httpx.Client, image_id: str) -> dict[str, httpx.Response]:
    return {
        "health": client.get("/api/v1/health"),
        "info": client.get("/api/v1/info"),
        "search": client.get("/api/v1/search", params={"q": "a red car", "facets": False}),
        "search_post": client.post("/api/v1/search", json={"q": "a red car"}),
        "image": client.get(f"/api/v1/images/{image_id}"),
        "thumb": client.get(f"/api/v1/thumbs/{image_id}"),
    }


def test_every_api_and_image_route_needs_the_token(guarded):
    url = guarded["url"]
    image_id = "img0001"
    with httpx.Client(base_url=url, timeout=30) as anon:
        for name, r in _calls(anon, image_id).items():
            assert r.status_code == 401, (name, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/").status_code == 200  # the page itself opens: it asks for the token
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer wrong-token"}) as wrong:
        assert {n: r.status_code for n, r in _calls(wrong, image_id).items()} == dict.fromkeys(
            _calls(wrong, image_id), 401
        )
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as ok:
        got = _calls(ok, image_id)
        assert {n: r.status_code for n, r in got.items()} == dict.fromkeys(got, 200), {
            n: r.text[:80] for n, r in got.items()
        }
        assert got["thumb"].headers["content-type"] == "image/jpeg"
    # the page's cookie (what <img> requests carry) works too; the token is never in a URL
    with httpx.Client(base_url=url, timeout=30, cookies={"carsearch_token": TOKEN}) as page:
        assert page.get(f"/api/v1/thumbs/{image_id}").status_code == 200


def test_uploads_are_rate_limited_per_client(guarded):
    with httpx.Client(base_url=guarded["url"], timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        codes = [
            c.post("/api/v1/search/image", files={"image": ("q.png", _png(), "image/png")}).status_code
            for _ in range(4)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429, codes
        r = c.post("/api/v1/search/image", files={"image": ("q.png", _png(), "image/png")})
        assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        assert c.get("/api/v1/search", params={"q": "a red car"}).status_code == 200  # text queries are not uploads


def test_serve_refuses_a_public_address_without_a_token(tmp_path_factory, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from carsearch.cli import app as cli

    root = shared_repo(tmp_path_factory)
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    monkeypatch.delenv("CARSEARCH_TOKEN", raising=False)
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and not calls
    assert r.output.strip().splitlines()[-1].startswith("error: serve: binding 0.0.0.0 lets anyone on the network in")
    assert "--insecure" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure"])
    assert r.exit_code == 0 and calls[-1]["host"] == "0.0.0.0"
    monkeypatch.setenv("CARSEARCH_TOKEN", TOKEN)
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "9124"])
    assert r.exit_code == 0 and calls[-1]["port"] == 9124


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no system Chromium for the page test"
)
def test_page_asks_for_the_token_and_keeps_it_out_of_urls(guarded):
    pw = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            pg = browser.new_page()
            asked = []
            pg.on("dialog", lambda d: (asked.append(d.message), d.accept(TOKEN)))
            pg.goto(guarded["url"] + "/?q=a+red+car")
            pg.wait_for_function("document.querySelectorAll('#grid .card img').length > 0", timeout=20_000)
            pg.wait_for_function(
                "[...document.querySelectorAll('#grid .card img')].some(i => i.complete && i.naturalWidth > 0)",
                timeout=20_000,
            )  # thumbnails load: the cookie carries the token for <img>
            assert asked and "access token" in asked[0]
            assert TOKEN not in pg.url
            srcs = pg.eval_on_selector_all("#grid .card img", "is => is.map(i => i.src)")
            assert srcs and not any(TOKEN in s for s in srcs)
        finally:
            browser.close()
