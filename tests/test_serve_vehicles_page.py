"""The web page over a vehicle index, in a real browser (Playwright driving the system Chromium, uvicorn
on 127.0.0.1): two traffic frames from two cameras, two vehicles each (labels.csv boxes, camera and
time from the file names). Cards show camera, time and file; the camera / after / sort controls go
into the request; the per-hour histogram; hovering a card draws its box on the whole frame; more
like this searches by the vehicle; a track opens as a strip of its boxes."""

from __future__ import annotations

import shutil

import pytest

from test_serve_browser import page, renders, wait_render  # noqa: F401  (the page fixture and its helpers)
from test_vehicles import index_two_cameras

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium (apt-get install chromium) for the browser tests"
)
CAMS = {"cam-a": "2026-03-01T08:00:00+00:00", "cam-b": "2026-03-01T09:30:00+00:00"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The `repo` of tests/test_index_corpus.py (module-wide here: one index, one server, one browser),
    indexed the way tests/test_vehicles.py indexes its traffic frames."""
    pw = pytest.importorskip("playwright.sync_api")
    import httpx

    from _serve_helpers import SETTINGS, Server
    from carsearch.index.search import CarSearch
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.serve import create_app
    from testkit import TINY, write_pairs, write_params

    base = tmp_path_factory.mktemp("vehicles_page")
    root, frames = base / "repo", base / "frames"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        write_pairs(root, {"train": 8, "val": 4, "test": 8})
        save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
        write_params(
            root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 8}
        )
        mp.setenv("CARSEARCH_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
        assert index_two_cameras(root, frames)["vehicles"] == 4
        server = Server(create_app(CarSearch(root=root), SETTINGS, root))
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                hits = c.get("/api/v1/search", params={"q": "a car", "limit": 10}).json()["hits"]
            assert len(hits) == 4
            with pw.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                yield {"url": server.url, "browser": browser, "hits": {h["id"]: h for h in hits}}
                browser.close()
        finally:
            server.stop()


def open_search(pg, url: str, query: str = "q=a+car") -> None:
    pg.goto(f"{url}/?{query}")
    wait_render(pg, 0)


def cards(pg, attr: str) -> list[str]:
    return pg.eval_on_selector_all("#grid .card", f"cs => cs.map(c => c.dataset.{attr})")


def bars(pg) -> list[tuple[str, int, str]]:
    return pg.eval_on_selector_all(
        "#hours .hbar", "bs => bs.map(b => [b.dataset.hour, Number(b.dataset.count), b.title])"
    )


def test_cards_show_camera_time_and_file_and_the_hour_histogram(site, page):
    open_search(page, site["url"])
    assert sorted(cards(page, "camera")) == ["cam-a", "cam-a", "cam-b", "cam-b"]
    for card in page.locator("#grid .card").all():
        hit = site["hits"][card.get_attribute("data-id")]
        cam = card.locator(".meta .cam").inner_text()
        assert cam == hit["camera"] and hit["time"] == CAMS[cam]
        assert card.locator(".meta .when").inner_text() == CAMS[cam][:10] + " " + CAMS[cam][11:19] + " UTC"
        stamp = {"cam-a": "20260301_080000.jpg", "cam-b": "20260301_093000.jpg"}[cam]
        origin = card.locator(".meta .origin").inner_text()  # folder/file of the original
        assert origin == f"{cam}/{stamp}" and card.locator(".in-frame").count() == 1
    # the crops load (thumbnails of image_url)
    page.wait_for_function(
        "[...document.querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    # one bar per hour, in time order, titled with its hour and count; the taller bar is the fuller hour
    got = bars(page)
    assert [(h, n) for h, n, _ in got] == [("2026-03-01T08:00", 2), ("2026-03-01T09:00", 2)]
    for hour, n, title in got:
        assert hour.replace("T", " ") in title and f"{n} vehicles" in title
    assert page.is_visible("#camera-facet") and page.is_visible("#after") and page.input_value("#sort") == "score"


def test_camera_filter_after_and_sort_narrow_the_request(site, page):
    open_search(page, site["url"])
    n = renders(page)
    page.check('#cameras input[data-camera="cam-a"]')
    wait_render(page, n)
    assert set(cards(page, "camera")) == {"cam-a"} and len(cards(page, "camera")) == 2 and "camera=cam-a" in page.url
    assert [(h, c) for h, c, _ in bars(page)] == [("2026-03-01T08:00", 2)]  # the histogram follows the filter
    assert page.is_checked('#cameras input[data-camera="cam-a"]')
    assert page.locator('#cameras input[data-camera="cam-b"]').count() == 1  # still offered, to add
    n = renders(page)
    page.uncheck('#cameras input[data-camera="cam-a"]')
    wait_render(page, n)
    assert len(cards(page, "camera")) == 4 and "camera=" not in page.url
    # after: only the vehicles seen from 09:00 on (cam-b at 09:30)
    n = renders(page)
    page.fill("#after", "2026-03-01T09:00")
    wait_render(page, n)
    assert set(cards(page, "camera")) == {"cam-b"} and len(cards(page, "camera")) == 2
    assert "after=2026-03-01T09%3A00" in page.url and all(t.startswith("2026-03-01T09:30") for t in cards(page, "time"))
    assert [(h, c) for h, c, _ in bars(page)] == [("2026-03-01T09:00", 2)]
    assert "after 2026-03-01 09:00 UTC" in page.inner_text("#active")
    # a reload keeps the range (the URL holds it) and the input shows it
    page.reload()
    wait_render(page, 0)
    assert page.input_value("#after") == "2026-03-01T09:00" and set(cards(page, "camera")) == {"cam-b"}
    n = renders(page)
    page.click('#active .chip[data-scope="after"]')
    wait_render(page, n)
    assert len(cards(page, "camera")) == 4 and page.input_value("#after") == ""
    # clicking an hour's bar: only that hour
    n = renders(page)
    page.click('#hours .hbar[data-hour="2026-03-01T08:00"]')
    wait_render(page, n)
    assert set(cards(page, "camera")) == {"cam-a"} and "before=2026-03-01T09%3A00" in page.url
    # sort by time: earliest first
    page.goto(f"{site['url']}/?q=a+car")
    wait_render(page, 0)
    n = renders(page)
    page.select_option("#sort", "time")
    wait_render(page, n)
    times = cards(page, "time")
    assert "sort=time" in page.url and times == sorted(times) and len(times) == 4


def test_hovering_a_card_shows_its_frame_with_the_box_in_place(site, page):
    open_search(page, site["url"])
    for i in (0, 3):
        card = page.locator("#grid .card").nth(i)
        hit = site["hits"][card.get_attribute("data-id")]
        card.locator(".thumb").hover()
        page.wait_for_function(
            f"""() => {{ const p = document.getElementById('frame-pop'), i = document.getElementById('frame-img');
                return !p.hidden && p.dataset.id === {hit["id"]!r} && i.complete && i.naturalWidth > 0
                       && !document.getElementById('frame-box').hidden; }}"""
        )
        natural = page.evaluate(
            "[document.getElementById('frame-img').naturalWidth, document.getElementById('frame-img').naturalHeight]"
        )
        assert natural == [320, 180]
        img = page.locator("#frame-img").bounding_box()
        box = page.locator("#frame-box").bounding_box()
        assert img["width"] > 320  # drawn larger than the frame: the box is scaled, not copied
        sx, sy = img["width"] / natural[0], img["height"] / natural[1]
        x1, y1, x2, y2 = hit["box"]
        want = (img["x"] + x1 * sx, img["y"] + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy)
        got = (box["x"], box["y"], box["width"], box["height"])
        assert all(abs(a - b) <= 2 for a, b in zip(got, want)), (got, want)
        assert hit["camera"] in page.inner_text("#frame-cap")
    # moving off the photo hides it; "In frame" pins it until closed
    page.mouse.move(5, 890)
    page.wait_for_selector("#frame-pop", state="hidden")
    page.locator("#grid .card").nth(1).locator(".in-frame").click()
    page.wait_for_selector("#frame-pop:not([hidden]) #frame-box:not([hidden])")
    page.mouse.move(5, 890)
    assert page.is_visible("#frame-pop")
    page.keyboard.press("Escape")
    page.wait_for_selector("#frame-pop", state="hidden")


def test_more_like_this_searches_by_the_vehicle(site, page):
    open_search(page, site["url"], "q=a+car&camera=cam-b")
    target = cards(page, "id")[0]
    n = renders(page)
    page.locator("#grid .card").first.locator("button.more").click()
    wait_render(page, n)
    got = cards(page, "id")
    assert f"like={target}" in page.url and target not in got and len(got) == 3  # the other three vehicles
    assert "camera=" not in page.url and set(cards(page, "camera")) == {"cam-a", "cam-b"}  # on any camera
    assert page.is_visible("#image-chip")


def test_a_track_shows_when_it_was_seen_and_opens_as_a_strip(site, page):
    """Track rendering, with a track put into the real response (the index here has no video)."""

    def with_track(route):
        resp = route.fetch()
        body = resp.json()
        h = body["hits"][0]
        h["track"] = {
            "id": f"{h['frame_id']}-0",
            "first_seen": "2026-03-01T08:00:00+00:00",
            "last_seen": "2026-03-01T08:00:02+00:00",
            "boxes": [
                {"frame_id": "f0", "box": [10, 60, 110, 120], "time": "2026-03-01T08:00:00+00:00", "offset": 0.0},
                {"frame_id": h["frame_id"], "box": h["box"], "time": "2026-03-01T08:00:01+00:00", "offset": 1.0},
                {"frame_id": "f2", "box": [40, 60, 140, 120], "time": "2026-03-01T08:00:02+00:00", "offset": 2.0},
            ],
        }
        route.fulfill(response=resp, json=body)

    page.route("**/api/v1/search?*", with_track)
    open_search(page, site["url"])
    card = page.locator("#grid .card").first
    toggle = card.locator(".track-toggle")
    assert toggle.inner_text().endswith("seen 2026-03-01 08:00:00 – 08:00:02 UTC, 3 frames")
    assert page.locator("#grid .track").count() == 1 and card.locator(".strip").is_hidden()
    toggle.click()
    strip = card.locator(".strip")
    assert strip.is_visible() and strip.locator(".member").count() == 3
    assert strip.locator(".member .mt").all_inner_texts() == ["+0.00 s", "+1.00 s", "+2.00 s"]
    assert strip.locator(".member.best").count() == 1 and "08:00:01" in strip.locator(".member.best").get_attribute(
        "title"
    )
    page.wait_for_selector("#grid .card .strip.drawn")  # the boxes drawn in frame-shaped outlines
    mini = strip.locator(".member").nth(0).locator(".mini").bounding_box()
    mb = strip.locator(".member").nth(0).locator(".mbox").bounding_box()
    assert (
        abs((mb["x"] - mini["x"]) - 10 / 320 * mini["width"]) <= 1.5
        and abs(mini["width"] / mini["height"] - 320 / 180) < 0.1
    )


def test_counts_chart_stacks_classes_per_hour_and_a_bar_keeps_its_hour(site, page, tmp_path):
    """The page's counts chart (counts.js) draws GET /api/v1/counts of the same search: one stacked
    bar per hour, one segment per vehicle class; clicking a bar keeps only that hour."""
    import os
    from pathlib import Path

    import httpx

    open_search(page, site["url"])
    page.wait_for_function("document.querySelector('#counts-chart .cbar') !== null")
    got = page.eval_on_selector_all(
        "#counts-chart .cbar",
        "bs => bs.map(b => [b.dataset.hour, Number(b.dataset.total),"
        " [...b.querySelectorAll('.cseg')].map(s => [s.dataset.class, Number(s.dataset.count)])])",
    )
    table = httpx.get(site["url"] + "/api/v1/counts", params={"q": "a car", "by": "hour,class"}).json()["counts"]
    want: dict = {}
    for r in table:
        want.setdefault(r["hour"], []).append([r["class"], r["count"]])
    assert [(h, n) for h, n, _ in got] == [("2026-03-01T08:00", 2), ("2026-03-01T09:00", 2)]
    assert {h: sorted(segs) for h, _, segs in got} == {h: sorted(v) for h, v in want.items()}
    assert "4 vehicles counted" in page.inner_text("#counts-note")
    assert page.locator(".counts-legend .ckey").count() == len({c for _, _, segs in got for c, _ in segs})
    keep = Path(os.environ.get("CARSEARCH_EVIDENCE_DIR") or tmp_path)  # a copy the note can cite
    keep.mkdir(parents=True, exist_ok=True)
    page.locator("#counts-panel").screenshot(path=str(keep / "counts_chart.png"))
    assert (keep / "counts_chart.png").stat().st_size > 1000
    # a bar keeps its hour: the results, the URL and the chart follow
    n = renders(page)
    page.click('#counts-chart .cbar[data-hour="2026-03-01T09:00"]')
    wait_render(page, n)
    assert set(cards(page, "camera")) == {"cam-b"} and "after=2026-03-01T09%3A00" in page.url
    page.wait_for_function(
        "[...document.querySelectorAll('#counts-chart .cbar')].map(b => b.dataset.hour).join() === '2026-03-01T09:00'"
    )
    assert page.locator('#counts-chart .cbar[data-hour="2026-03-01T09:00"].on').count() == 1
    # the CSV link is the same table
    href = page.get_attribute("#counts-csv", "href")
    csv = httpx.get(site["url"] + href).text
    assert "format=csv" in href and csv.splitlines()[0].startswith("hour,class")
