"""The page's track strip against the real `track` field over HTTP: a real video (PyAV) indexed by
build_index into one row per car, served by uvicorn on 127.0.0.1, the page in the system Chromium
(Playwright). Each card's "seen ... N frames" line and its strip follow the track the API returns
(first/last seen, every member box, offsets, the member shown), with nothing faked in between."""

from __future__ import annotations

import shutil

import pytest

from test_serve_browser import page, wait_render  # noqa: F401  (the page fixture and its helpers)
from test_video import H, W

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium (apt-get install chromium) for the browser tests"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pw = pytest.importorskip("playwright.sync_api")
    import httpx

    from _serve_helpers import SETTINGS, Server
    from carsearch.index.search import CarSearch
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.serve import create_app
    from test_vehicles import index_street_video
    from testkit import TINY, write_pairs, write_params

    base = tmp_path_factory.mktemp("tracks_page")
    root = base / "repo"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        write_pairs(root, {"train": 8, "val": 4, "test": 8})
        save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
        write_params(
            root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 8}
        )
        mp.setenv("CARSEARCH_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
        m, _ = index_street_video(root, base / "clips")
        assert m["tracks"] == m["rows"] == 4, m
        server = Server(create_app(CarSearch(root=root), SETTINGS, root))
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                hits = c.get("/api/v1/search", params={"q": "a car", "limit": 10}).json()["hits"]
            with pw.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                yield {"url": server.url, "browser": browser, "hits": {h["id"]: h for h in hits}}
                browser.close()
        finally:
            server.stop()


def test_the_api_returns_a_track_for_each_video_vehicle(site):
    hits = list(site["hits"].values())
    assert len(hits) == 4 and all(h["track"] for h in hits)
    for h in hits:
        t = h["track"]
        assert t["first_seen"].startswith("2026-03-01T08:00:") and t["first_seen"] <= t["last_seen"]
        assert len(t["boxes"]) >= 2 and h["frame_id"] in [b["frame_id"] for b in t["boxes"]]
        assert all(len(b["box"]) == 4 and isinstance(b["offset"], float) for b in t["boxes"])


def test_each_card_shows_its_real_track_and_opens_its_strip(site, page):
    page.goto(f"{site['url']}/?q=a+car")
    wait_render(page, 0)
    cards = page.locator("#grid .card")
    assert cards.count() == 4 and page.locator("#grid .track").count() == 4
    for i in range(4):
        card = cards.nth(i)
        hit = site["hits"][card.get_attribute("data-id")]
        track = hit["track"]
        boxes = track["boxes"]
        a, b = track["first_seen"], track["last_seen"]
        assert card.locator(".track").get_attribute("data-track") == track["id"]
        toggle = card.locator(".track-toggle")
        assert toggle.inner_text() == f"seen {a[:10]} {a[11:19]} – {b[11:19]} UTC, {len(boxes)} frames"
        assert card.locator(".strip").is_hidden()
        toggle.click()
        strip = card.locator(".strip")
        assert strip.is_visible() and strip.locator(".member").count() == len(boxes)
        t0 = min(x["offset"] for x in boxes)
        assert strip.locator(".member .mt").all_inner_texts() == [f"+{x['offset'] - t0:.2f} s" for x in boxes]
        frames = strip.locator(".member").evaluate_all("ms => ms.map(m => m.dataset.frame)")
        assert frames == [x["frame_id"] for x in boxes]
        best = strip.locator(".member.best")
        assert best.count() == 1 and best.get_attribute("data-frame") == hit["frame_id"]
        # the boxes drawn in frame-shaped outlines, sized from the real frame the API links to
        page.wait_for_function("c => c.querySelector('.strip.drawn') !== null", arg=card.element_handle())
        mini = strip.locator(".member").nth(0).locator(".mini").bounding_box()
        mb = strip.locator(".member").nth(0).locator(".mbox").bounding_box()
        x1, y1, x2, _ = boxes[0]["box"]
        assert abs(mini["width"] / mini["height"] - W / H) < 0.1
        assert abs((mb["x"] - mini["x"]) - x1 / W * mini["width"]) <= 1.5
        assert abs(mb["width"] - (x2 - x1) / W * mini["width"]) <= 1.5


def test_each_track_card_shows_its_direction_arrow(site, page):
    """Issue 33: the card of a track shows the API's direction (an arrow) and speed with its unit."""
    page.goto(f"{site['url']}/?q=a+car")
    wait_render(page, 0)
    cards = page.locator("#grid .card")
    for i in range(cards.count()):
        card = cards.nth(i)
        hit = site["hits"][card.get_attribute("data-id")]
        assert hit["direction"] in ("left", "right", "towards", "away", "stopped") and hit["speed_unit"] == "px/s"
        arrow = card.locator(".motion")
        assert arrow.get_attribute("data-direction") == hit["direction"]
        assert arrow.inner_text().startswith(
            {"left": "←", "right": "→", "towards": "↓", "away": "↑", "stopped": "■"}[hit["direction"]]
        )
        assert f"{int(hit['speed'] + 0.5)} px/s" in arrow.inner_text()  # JS Math.round


def test_the_speed_inputs_narrow_the_page_to_faster_tracks(site, page):
    """Issue 33: `at least` in the Speed panel sends min_speed: only the tracks that fast stay, as the API says."""
    speeds = sorted(h["speed"] for h in site["hits"].values())
    cut = (speeds[0] + speeds[-1]) / 2
    assert speeds[0] < cut < speeds[-1]
    page.goto(f"{site['url']}/?q=a+car")
    wait_render(page, 0)
    page.fill("#min_speed", f"{cut:.2f}")
    page.dispatch_event("#min_speed", "change")
    wait_render(page, 1)
    ids = {
        page.locator("#grid .card").nth(i).get_attribute("data-id") for i in range(page.locator("#grid .card").count())
    }
    assert ids == {i for i, h in site["hits"].items() if h["speed"] >= cut} and "min_speed=" in page.url
