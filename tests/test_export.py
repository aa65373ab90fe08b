"""Issue 33: evidence bundles. A folder corpus of two real H.264 clips (coloured "cars" moving across a
road, PyAV) and their boxes is indexed by build_index (one row per track); `carsearch export` and
POST /api/v1/export (real uvicorn) write zips whose manifests match the hits, whose crops are the
boxes drawn on the frames, and whose clips decode back (PyAV) to the track's span plus margins,
frame for frame the source's. Bad ids are one reject line each; nothing is lost."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

W, H, FPS, N, SAMPLE = 160, 96, 8, 48, 2  # 6 s clips at 8 fps, sampled at 2 fps
CARS = {  # camera -> (colour, y, w, h, x0, px per frame)
    "cam-1": ((230, 30, 30), 30, 30, 18, 4, 2.5),
    "cam-2": ((30, 30, 230), 40, 26, 16, 150, -2.5),
}
START = "2026-03-01T08:00:00Z"


def _frame(cam: str, f: int) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    rgb, y, w, h, x0, v = CARS[cam]
    a = np.full((H, W, 3), (60, 70, 60), np.uint8)
    a[:, :, 0] = np.arange(W, dtype=np.uint8)[None, :]  # a ramp: every frame's place is visible
    x = round(x0 + v * f)
    x1, x2 = max(0, x), min(W, x + w)
    if x2 - x1 < 8:
        return a, None
    a[y : y + h, x1:x2] = rgb
    return a, (x1, y, x2, y + h)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The repo, its corpus folder and the index's rows (one per track)."""
    import yaml

    from carsearch.index.search import CarSearch
    from carsearch.model.clip import load_clip, save_clip
    from test_index_corpus import _build
    from testkit import TINY, write_pairs, write_params

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("export") / "repo"
    root.mkdir()
    write_pairs(root, {"train": 4, "val": 2, "test": 4})
    save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
    write_params(
        root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 8}
    )
    mp.setenv("CARSEARCH_ROOT", str(root))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    folder = root / "clips"
    lines = ["file,t,x1,y1,x2,y2,class"]
    for cam in CARS:
        (folder / cam).mkdir(parents=True)
        with av.open(str(folder / cam / "road.mp4"), "w") as c:
            c.metadata["creation_time"] = START
            s = c.add_stream("libx264", rate=FPS)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            for f in range(N):
                a, box = _frame(cam, f)
                for pk in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(pk)
                if box and f % (FPS // SAMPLE) == 0:
                    lines.append(f"{cam}/road.mp4,{f / FPS},{','.join(map(str, box))},car")
            for pk in s.encode():
                c.mux(pk)
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["video"] = {"fps": SAMPLE, "max_frames": None}
    params["data"]["capture"] = {"pattern": "{camera}/{*}.mp4", "timezone": "UTC", "track_gap_s": 60}
    params["curate"]["boxes"]["min_side"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(root, corpus="folder", corpus_path=str(folder), subfolder_key=None)
    assert m["tracks"] == 2, m
    search = CarSearch(root / "data/index")
    rows = sorted(search.table.to_arrow().to_pylist(), key=lambda r: r["camera"])
    yield root, folder, rows, search.meta["version"]
    mp.undo()


def _zip(data: bytes) -> tuple[zipfile.ZipFile, list[dict], dict, list[dict]]:
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.testzip() is None
    man = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode())))
    rejects = list(csv.DictReader(io.StringIO(z.read("rejects.csv").decode())))
    return z, man, json.loads(z.read("manifest.json")), rejects


def _decode(data: bytes) -> tuple[list[np.ndarray], float]:
    with av.open(io.BytesIO(data)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = float(c.streams.video[0].average_rate)
    return frames, rate


def _check_bundle(z, man, doc, rows, folder, margin):
    """Each hit's files are there and right: the frame, the crop with the box drawn, the clip (PyAV)."""
    from carsearch.core import originals

    by_id = {r["id"]: r for r in rows}
    for m, j in zip(man, doc["hits"]):
        r = by_id[m["id"]]
        assert j["id"] == m["id"] and m["camera"] == j["camera"] == r["camera"] and m["file"] == r["origin"]
        assert j["time"] == m["time"] and j["time"].startswith("2026-03-01T08:00")
        assert [float(m[k]) for k in ("x1", "y1", "x2", "y2")] == j["box"] == pytest.approx(r["box"])
        frame = Image.open(io.BytesIO(z.read(m["original"])))
        assert frame.size == (W, H)
        crop = np.asarray(Image.open(io.BytesIO(z.read(m["crop"]))).convert("RGB")).astype(int)
        x1, y1, x2, y2 = r["box"]
        assert x2 - x1 <= crop.shape[1] <= (x2 - x1) * 2 + 2  # the box and half its size each side (in the frame)
        red = crop[:, :, 0] - np.maximum(crop[:, :, 1], crop[:, :, 2]) > 120
        if r["camera"] == "cam-2":  # the drawn box (cam-2's car is blue, its road has no red)
            assert red.sum() >= 2 * (x2 - x1), red.sum()
        # the clip: first box - margin to last box + margin, every source frame of that span
        offs = [x["offset"] for x in json.loads(r["track_json"])]
        start, end = max(0.0, min(offs) - margin), min((N - 1) / FPS, max(offs) + margin)
        frames, rate = _decode(z.read(m["clip"]))
        assert rate == FPS and len(frames) == round((end - start) * FPS) + 1, (m["clip"], len(frames), start, end)
        assert float(m["clip_start_s"]) == pytest.approx(start) and float(m["clip_end_s"]) == pytest.approx(end)
        src, _ = _decode(originals.read(r["origin"].split("#")[0], folder.parent))
        first = round(start * FPS)
        for k in (0, len(frames) - 1):
            assert np.abs(frames[k].astype(int) - src[first + k].astype(int)).mean() < 4, (m["clip"], k)
        assert j["files"] == {k: m[k] for k in ("original", "crop", "clip", "clip_start_s", "clip_end_s")}


def test_export_chosen_ids_from_the_cli(built, tmp_path, monkeypatch):
    """`carsearch export --id … --ids-file …`: the hits in the order asked, each with its frame, its
    crop, its clip (decoded back), and the two bad ids one reject line each (none of them lost)."""
    from carsearch.cli import app

    root, folder, rows, version = built
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text(f"{rows[0]['id']}\nnot-indexed-id\n")
    out = tmp_path / "case.zip"
    args = [
        "export",
        "--id",
        rows[1]["id"],
        "--id",
        "bad id!",
        "--ids-file",
        "ids.txt",
        "--out",
        str(out),
        "--margin",
        "1",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "2 hits, 6 files, 2 rejects" in r.output
    z, man, doc, rejects = _zip(out.read_bytes())
    assert [m["id"] for m in man] == [rows[1]["id"], rows[0]["id"]] and [m["rank"] for m in man] == ["1", "2"]
    assert all(m["score"] == "" for m in man)  # chosen, not searched for
    assert [(x["id"], x["reason"]) for x in rejects] == [
        ("bad id!", "id 'bad id!': not an id (letters, digits, _ and -)"),
        ("not-indexed-id", "id 'not-indexed-id': no indexed hit with this id"),
    ]
    assert doc["rejects"] == [dict(x, rank="") for x in rejects] and doc["index_version"] == version
    assert doc["query"] == {"ids": [rows[1]["id"], "bad id!", rows[0]["id"], "not-indexed-id"]}
    assert "export: id 'bad id!': not an id" in r.output
    _check_bundle(z, man, doc, rows, folder, margin=1.0)


def test_export_a_search_and_a_gone_video(built, tmp_path, monkeypatch):
    """`carsearch export "a car" -k 5`: the manifest is the search's hits (ids, scores, the query);
    a hit whose video is gone keeps its row, its clip empty and one reject line naming the video."""
    import shutil

    from carsearch.cli import app
    from carsearch.index.search import CarSearch, search

    root, folder, rows, version = built
    monkeypatch.chdir(tmp_path)
    hits = search(query="a car", k=5, searcher=CarSearch(root / "data/index"), filters={"camera": ["cam-1", "cam-2"]})
    r = CliRunner().invoke(
        app, ["export", "a car", "-k", "5", "--out", "q.zip", "--camera", "cam-1", "--camera", "cam-2"]
    )
    assert r.exit_code == 0, r.output
    z, man, doc, rejects = _zip((tmp_path / "q.zip").read_bytes())
    assert [(m["id"], m["score"]) for m in man] == [(h.id, f"{h.score:.4f}") for h in hits] and not rejects
    assert doc["query"]["text"] == "a car" and doc["query"]["k"] == 5 and doc["index_version"] == version
    assert doc["query"]["filters"] == {"camera": ["cam-1", "cam-2"]}
    _check_bundle(z, man, doc, rows, folder, margin=2.0)  # serve.export_clip_margin_s

    gone = folder / "cam-2" / "road.mp4"
    shutil.move(gone, tmp_path / "road.mp4")
    try:
        r = CliRunner().invoke(app, ["export", "--id", rows[1]["id"], "--out", "g.zip"])
    finally:
        shutil.move(tmp_path / "road.mp4", gone)
    assert r.exit_code == 0, r.output
    _, man, doc, rejects = _zip((tmp_path / "g.zip").read_bytes())
    assert [m["id"] for m in man] == [rows[1]["id"]] and man[0]["clip"] == "" and man[0]["original"]
    assert len(rejects) == 1 and rejects[0]["reason"].startswith(f"id {rows[1]['id']}: clip of ")
    assert "road.mp4: video gone" in rejects[0]["reason"]


def test_export_over_http(built):
    """POST /api/v1/export (real uvicorn): ids or a search body; the zip as the CLI writes it."""
    from _serve_helpers import SETTINGS, Server
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root, folder, rows, version = built
    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        url = server.url + "/api/v1/export"
        got = httpx.post(url, json={"ids": [rows[0]["id"], "nope"], "margin_s": 0.5}, timeout=120)
        assert got.status_code == 200 and got.headers["content-type"] == "application/zip", got.text
        assert got.headers["x-export-rejects"] == "1"
        z, man, doc, rejects = _zip(got.content)
        assert [m["id"] for m in man] == [rows[0]["id"]] and [x["id"] for x in rejects] == ["nope"]
        _check_bundle(z, man, doc, rows, folder, margin=0.5)

        api = httpx.get(server.url + "/api/v1/search", params={"q": "a car", "limit": 5}, timeout=60).json()["hits"]
        got = httpx.post(url, json={"search": {"q": "a car", "filters": {"camera": ["cam-2"]}}}, timeout=120)
        z, man, doc, rejects = _zip(got.content)
        want = [(h["id"], f"{h['score']:.4f}") for h in api if h["camera"] == "cam-2"]
        assert [(m["id"], m["score"]) for m in man] == want and doc["query"]["search"]["q"] == "a car"

        bad = httpx.post(url, json={}, timeout=30)
        assert bad.status_code == 400 and "give `ids`" in bad.json()["error"]["message"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def site(built):
    """The built index served by uvicorn, and the system Chromium (Playwright)."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium (apt-get install chromium) for the browser tests")
    pw = pytest.importorskip("playwright.sync_api")
    from _serve_helpers import SETTINGS, Server
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root, folder, rows, _ = built
    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            yield {"url": server.url, "browser": browser, "rows": rows, "folder": folder}
            browser.close()
    finally:
        server.stop()


def test_the_page_exports_the_picked_hits(site, tmp_path):
    """Chromium: pick one card, "Export picked" downloads evidence.zip holding that hit (its clip
    decodes); "Export page" holds every card shown."""
    from test_serve_browser import wait_render

    ctx = site["browser"].new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    try:
        pg.goto(f"{site['url']}/?q=a+car")
        wait_render(pg, 0)
        cards = pg.locator("#grid .card")
        assert cards.count() == 2 and pg.locator("#export-picked").is_disabled()
        second = cards.nth(1).get_attribute("data-id")
        cards.nth(1).locator("input.pick").check()
        assert pg.locator("#export-picked").inner_text() == "Export picked (1)"
        with pg.expect_download() as dl:
            pg.click("#export-picked")
        path = tmp_path / "picked.zip"
        dl.value.save_as(path)
        assert dl.value.suggested_filename == "evidence.zip"
        z, man, doc, rejects = _zip(path.read_bytes())
        assert [m["id"] for m in man] == [second] and not rejects
        _check_bundle(z, man, doc, site["rows"], site["folder"], margin=2.0)
        pg.wait_for_function("document.body.dataset.exported === '1'")
        assert "Exported 1 hits" in pg.inner_text("#status")
        with pg.expect_download() as dl:
            pg.click("#export-page")
        dl.value.save_as(tmp_path / "page.zip")
        _, man, _, _ = _zip((tmp_path / "page.zip").read_bytes())
        assert [m["id"] for m in man] == [cards.nth(i).get_attribute("data-id") for i in range(2)]
        # "Export all": the search itself (its filters too), not the cards: every hit of the search
        with pg.expect_download() as dl:
            pg.click("#export-all")
        dl.value.save_as(tmp_path / "all.zip")
        _, man, doc, _ = _zip((tmp_path / "all.zip").read_bytes())
        assert sorted(m["id"] for m in man) == sorted(cards.nth(i).get_attribute("data-id") for i in range(2))
        assert doc["query"]["search"]["q"] == "a car"
        pg.wait_for_function("document.body.dataset.exported === '3'")
    finally:
        ctx.close()
    assert not errors, errors


def test_a_photo_bundle_and_a_gone_photo(tmp_path):
    """Photos (no index needed): the original copied as it is, the crop around its box with the box
    drawn, no clip; a photo that is gone keeps its manifest row and gets one reject line."""
    from carsearch.index.export import write_bundle

    im = Image.new("RGB", (120, 80), (20, 120, 20))
    (tmp_path / "photos").mkdir()
    im.save(tmp_path / "photos" / "kerb.jpg")
    base = {"caption": "a car", "labels": {}, "camera": "cam-9", "time": 1772352000.0, "plate": "AB12 CDE"}
    hits = [
        {
            **base,
            "rank": 1,
            "score": 0.5,
            "id": "a1",
            "path": "photos/kerb.jpg",
            "origin": "photos/kerb.jpg",
            "box": [30, 20, 70, 50],
        },
        {
            **base,
            "rank": 2,
            "score": 0.4,
            "id": "b2",
            "path": "photos/gone.jpg",
            "origin": "photos/gone.jpg",
            "box": None,
        },
    ]
    out = tmp_path / "out" / "p.zip"
    res = write_bundle(out, hits, root=tmp_path, query={"text": "a car"}, index_version="v9", margin_s=2.0)
    assert res["hits"] == 2 and res["files"] == 2 and not list(out.parent.glob(".*"))  # swapped in, no temp left
    z, man, doc, rejects = _zip(out.read_bytes())
    assert z.read(man[0]["original"]) == (tmp_path / "photos" / "kerb.jpg").read_bytes()
    crop = Image.open(io.BytesIO(z.read(man[0]["crop"])))
    assert crop.size == (81, 61) and man[0]["clip"] == "" and man[0]["plate"] == "AB12 CDE"
    assert np.asarray(crop.convert("RGB"))[15, 20:60, 0].min() > 180  # the box's top edge, drawn red
    assert (
        man[1]["original"] == man[1]["crop"] == ""
        and doc["hits"][1]["time"] == man[1]["time"] == "2026-03-01T08:00:00+00:00"
    )
    assert [(x["id"], x["rank"]) for x in rejects] == [("b2", "2")]
    assert rejects[0]["reason"].startswith("id b2: original photos/gone.jpg: gone (FileNotFoundError")
    assert doc["query"] == {"text": "a car"} and doc["index_version"] == "v9"
