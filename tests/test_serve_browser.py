"""The web page of `carsearch serve` in a real browser (Playwright driving the system Chromium) over
a small real index: text search with thumbnails, image upload and drop, facets, more like this, a
shared URL that reloads to the same results, keyboard navigation."""

from __future__ import annotations

import shutil

import pytest

from _serve_helpers import SETTINGS, Server, shared_repo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium (apt-get install chromium) for the browser tests"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pw = pytest.importorskip("playwright.sync_api")
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root = shared_repo(tmp_path_factory)
    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"url": server.url, "root": root, "browser": browser}
        browser.close()
    server.stop()


@pytest.fixture
def page(site):
    ctx = site["browser"].new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(15_000)
    yield pg
    ctx.close()
    assert not errors, errors


def renders(pg) -> int:
    return int(pg.evaluate("Number(document.body.dataset.renders || 0)"))


def wait_render(pg, before: int) -> None:
    pg.wait_for_function(f"Number(document.body.dataset.renders || 0) > {before}")


def ids(pg) -> list[str]:
    return pg.eval_on_selector_all("#grid .card", "cs => cs.map(c => c.dataset.id)")


def search(pg, url: str, q: str) -> None:
    pg.goto(url + "/")
    pg.wait_for_function("document.querySelector('#model .tag') !== null")  # index info loaded
    n = renders(pg)
    pg.fill("#q", q)
    pg.press("#q", "Enter")
    wait_render(pg, n)


def test_type_a_query_and_see_thumbnails(site, page):
    search(page, site["url"], "a red sedan")
    assert len(ids(page)) == 12 and "q=a+red+sedan" in page.url
    page.wait_for_function(
        "[...document.querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    first = page.locator("#grid .card").first
    assert first.locator(".score").inner_text().startswith("0.") or first.locator(".score").inner_text().startswith(
        "1."
    )
    assert first.locator(".caption").inner_text()
    # which model built the index is shown
    model = page.inner_text("#model")
    assert "finetuned" in model.lower() and "models/finetuned@" in model and "36 images" in model
    # "why this match": red hits say the query named their colour
    for card in page.locator("#grid .card[data-color=red]").all():
        assert "✓ red" in card.locator(".attrs").inner_text()


def test_upload_and_drop_an_image(site, page):
    page.goto(site["url"] + "/")
    page.wait_for_function("document.querySelector('#model .tag') !== null")
    n = renders(page)
    page.set_input_files("#file", str(site["root"] / "data/raw/images/img0003.jpg"))
    wait_render(page, n)
    assert ids(page)[0] == "img0003" and page.is_visible("#image-chip")
    assert float(page.locator("#grid .card .score").first.inner_text()) > 0.999
    # a synthetic drop of another image anywhere on the page
    n = renders(page)
    page.evaluate("""async () => {
        const blob = await (await fetch('/api/v1/images/img0004')).blob();
        const dt = new DataTransfer();
        dt.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
        document.body.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
        document.querySelector('#grid').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    wait_render(page, n)
    assert ids(page)[0] == "img0004" and page.is_hidden("#drop-overlay")
    # clearing the image returns to the empty page
    page.click("#image-clear")
    page.wait_for_function("document.querySelectorAll('#grid .card').length === 0")


def test_facet_click_filters_grid_and_counts(site, page):
    search(page, site["url"], "a car")
    colors = set(page.eval_on_selector_all("#grid .card", "cs => cs.map(c => c.dataset.color)"))
    assert len(colors) > 1
    chip = page.locator('#facets .chip[data-facet="color"][data-value="blue"]')
    blue_count = int(chip.locator(".n").inner_text())
    body_before = page.inner_text('#facets .facet[data-facet="body_type"]')
    n = renders(page)
    chip.click()
    wait_render(page, n)
    assert set(page.eval_on_selector_all("#grid .card", "cs => cs.map(c => c.dataset.color)")) == {"blue"}
    assert "color=blue" in page.url
    on = page.locator('#facets .chip.on[data-facet="color"]')
    assert on.count() == 1 and int(on.locator(".n").inner_text()) == blue_count
    assert page.locator('#facets .chip[data-facet="color"]').count() == 1
    assert page.inner_text('#facets .facet[data-facet="body_type"]') != body_before  # counts changed
    assert f"of the top {blue_count}" in page.inner_text("#status")
    # clicking it again removes the filter
    n = renders(page)
    page.locator('#facets .chip.on[data-facet="color"]').click()
    wait_render(page, n)
    assert "color=" not in page.url and page.locator('#facets .chip[data-facet="color"]').count() > 1


def test_more_like_this(site, page):
    search(page, site["url"], "a green van")
    target = ids(page)[2]
    n = renders(page)
    page.locator("#grid .card").nth(2).locator("button.more").click()
    wait_render(page, n)
    assert f"like={target}" in page.url and target not in ids(page) and len(ids(page)) == 12
    assert page.is_visible("#image-chip") and page.input_value("#q") == ""
    # back goes to the text search
    n = renders(page)
    page.go_back()
    wait_render(page, n)
    assert "q=a+green+van" in page.url and ids(page)[2] == target


def test_shared_url_reload_restores_the_results(site, page):
    search(page, site["url"], "a blue car from behind")
    n = renders(page)
    page.locator('#facets .chip[data-facet="split"][data-value="train"]').click()  # 16 of 36: two pages
    wait_render(page, n)
    n = renders(page)
    page.click("#next")
    wait_render(page, n)
    url, shown = page.url, ids(page)
    assert "page=2" in url and "split=train" in url and len(shown) == 4
    page.reload()
    page.wait_for_function("Number(document.body.dataset.renders || 0) > 0")
    assert ids(page) == shown and page.input_value("#q") == "a blue car from behind"
    assert page.locator("#facets .chip.on").count() == 1
    other = page.context.new_page()  # the link opened fresh
    other.goto(url)
    other.wait_for_function("Number(document.body.dataset.renders || 0) > 0")
    assert ids(other) == shown


def test_keyboard_navigation(site, page):
    search(page, site["url"], "a red pickup")
    cols = page.evaluate("""() => { const cs = [...document.querySelectorAll('#grid .card')];
                                    return cs.filter(c => c.offsetTop === cs[0].offsetTop).length; }""")
    assert cols > 1
    focused = lambda: page.evaluate("document.activeElement.dataset.index")  # noqa: E731
    page.focus("#q")
    page.keyboard.press("ArrowDown")
    assert focused() == "0"
    page.keyboard.press("ArrowRight")
    assert focused() == "1"
    page.keyboard.press("ArrowDown")
    assert focused() == str(1 + cols)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    assert focused() == "0"
    target = page.evaluate("document.activeElement.dataset.id")
    n = renders(page)
    page.keyboard.press("Enter")  # on a result: more like this
    wait_render(page, n)
    assert f"like={target}" in page.url
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
