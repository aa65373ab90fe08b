"""Index by reference (issue 22 item 1) and hits users recognise (issue 23 item 3): a folder or S3
corpus is not copied (rows point at the originals, only images that need normalising get a copy),
the service and the CLI read originals through one reader (local or S3), a moved or changed
original is reported as missing, `index add` follows the same rule; hits carry file and folder,
`search -f` prints existing paths, `--copy-to` copies the top k, the card shows the file name."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from _serve_helpers import SETTINGS, Server
from conftest_bedrock import aws_env, bucket, moto_url, s3  # noqa: F401  (pytest fixtures)
from test_index_corpus import _build, _photos, repo  # noqa: F401  (the repo fixture)


def _rotated(path: Path) -> None:
    """A JPEG with EXIF orientation 6 (a phone photo held upright): needs normalising."""
    im = Image.new("RGB", (80, 60), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, "JPEG", exif=exif.tobytes(), quality=90)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_folder_corpus_is_not_copied_and_moved_or_changed_files_are_missing(repo, monkeypatch):  # noqa: F811
    from carsearch.cli import app
    from carsearch.index.search import CarSearch

    photos = repo.parent / "photos"
    _photos(photos, 3)
    _rotated(photos / "red" / "upright.jpg")
    idx = _build(repo, corpus="folder", corpus_path=str(photos))
    assert idx["rows"] == 10 and idx["embedded"] == 10
    # only the rotated photo has a (normalised) copy; the others are their originals
    copies = _files(repo / "data/index/images")
    assert len(copies) == 1, copies
    t = CarSearch(root=repo).table.to_arrow()
    rows = {o: p for o, p in zip(t.column("origin").to_pylist(), t.column("path").to_pylist())}
    for origin, path in rows.items():
        if origin.endswith("upright.jpg"):
            assert path.startswith("data/index/images/")
        else:
            assert Path(path) == Path(origin) and Path(path).is_absolute()  # outside the repo: absolute

    monkeypatch.chdir(repo)
    run = lambda *a: CliRunner().invoke(app, ["search", *a])  # noqa: E731
    r = run("a car", "-k", "10", "-f")
    assert r.exit_code == 0, r.output
    listed = r.stdout.splitlines()
    assert len(set(listed)) == 10 and all(Path(p).is_file() for p in listed)
    assert str(photos / "red" / "upright.jpg") in listed  # the user's original, not the normalised copy

    out = repo.parent / "picked"
    r = run("a car", "-k", "3", "--copy-to", str(out))
    assert r.exit_code == 0 and "copied 3 original(s)" in r.stderr
    assert len(_files(out)) == 3 and all(p.name[:4] in ("001_", "002_", "003_") for p in _files(out))

    # one moved, one changed in place: both reported, neither served
    (photos / "blue" / "photo 0.jpg").rename(photos / "blue" / "moved.jpg")
    Image.new("RGB", (96, 72), (1, 2, 3)).save(photos / "white" / "photo 1.jpg", quality=90)
    r = run("a car", "-k", "10")
    assert r.exit_code == 0
    gone = [ln for ln in r.stdout.splitlines() if ln.endswith("[missing file]")]
    assert len(gone) == 2 and {Path(ln.split("\t")[4]).name for ln in gone} == {"photo 0.jpg", "photo 1.jpg"}
    assert "2 of 10 results point to missing files" in r.stderr
    assert len(run("a car", "-k", "10", "-f").stdout.splitlines()) == 8  # -f lists only files that are there

    from carsearch.serve import create_app

    server = Server(create_app(CarSearch(root=repo), SETTINGS, repo))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            hits = c.get("/api/v1/search", params={"q": "a car", "limit": 10}).json()["hits"]
            by_file = {(h["folder"].rsplit("/", 1)[-1], h["file"]): h for h in hits}
            ok = by_file[("red", "photo 2.jpg")]
            assert ok["origin"] == str(photos / "red" / "photo 2.jpg") and ok["folder"] == str(photos / "red")
            img = c.get(ok["image_url"])
            assert img.status_code == 200 and img.content == (photos / "red" / "photo 2.jpg").read_bytes()
            assert c.get(ok["thumb_url"]).status_code == 200
            for name in (("blue", "photo 0.jpg"), ("white", "photo 1.jpg")):
                r = c.get(by_file[name]["image_url"])
                assert r.status_code == 404 and r.json()["error"]["code"] == "missing_file"
    finally:
        server.stop()


def test_index_add_follows_the_same_rule(repo):  # noqa: F811

    from carsearch.core.params import load_config
    from carsearch.index.append import add_images
    from carsearch.index.search import CarSearch
    from testkit import composed_params  # noqa: F401

    photos = repo.parent / "photos"
    _photos(photos, 1)
    _build(repo, corpus="folder", corpus_path=str(photos))
    extra = repo.parent / "extra"
    _photos(extra, 2, colors=("blue",), start=50)
    _rotated(extra / "blue" / "turned.jpg")
    before = len(_files(repo / "data/index/images"))
    res = add_images([extra], load_config(repo / "params.yaml"), repo)
    assert res["added"] == 3 and res["outside_corpus"] == 3
    assert len(_files(repo / "data/index/images")) == before + 1  # only the rotated one is copied
    t = CarSearch(root=repo).table.to_arrow()
    paths = [p for p, o in zip(t.column("path").to_pylist(), t.column("origin").to_pylist()) if "extra" in o]
    assert sorted(Path(p).name for p in paths if Path(p).is_absolute()) == ["photo 50.jpg", "photo 51.jpg"]


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_s3_corpus_rows_are_uris_read_through_the_one_reader(repo, s3, bucket):  # noqa: F811
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    for i, c in enumerate([(200, 0, 0), (0, 0, 200), (0, 200, 0)]):
        s3.put_object(Bucket=bucket, Key=f"cams/{'red' if i == 0 else 'other'}/{i}.jpg", Body=_jpeg(c))
    idx = _build(repo, corpus="s3", corpus_path=f"s3://{bucket}/cams/")
    assert idx["rows"] == 3 and not _files(repo / "data/index/images")  # nothing downloaded and kept
    s = CarSearch(root=repo)
    assert all(p.startswith(f"s3://{bucket}/cams/") for p in s.table.to_arrow().column("path").to_pylist())
    server = Server(create_app(s, SETTINGS, repo))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            hits = c.get("/api/v1/search", params={"q": "a car", "limit": 3}).json()["hits"]
            h = next(h for h in hits if h["file"] == "0.jpg")
            assert h["folder"] == f"s3://{bucket}/cams/red"
            r = c.get(h["image_url"])  # proxied from the bucket
            assert r.status_code == 200 and r.content == _jpeg((200, 0, 0))
            assert c.get(h["thumb_url"]).status_code == 200
            s3.put_object(Bucket=bucket, Key="cams/red/0.jpg", Body=_jpeg((9, 9, 9)))  # changed since the build
            assert c.get(h["image_url"]).json()["error"]["code"] == "missing_file"
    finally:
        server.stop()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium for the browser test")
def test_card_shows_the_original_file_name_not_a_hash(repo):  # noqa: F811
    pw = pytest.importorskip("playwright.sync_api")
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    photos = repo.parent / "photos"
    _photos(photos, 1, colors=("red",))
    _build(repo, corpus="folder", corpus_path=str(photos))
    server = Server(create_app(CarSearch(root=repo), SETTINGS, repo))
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            pg = browser.new_page()
            pg.set_default_timeout(15_000)
            pg.goto(server.url + "/")
            pg.wait_for_function("document.querySelector('#model .tag') !== null")
            pg.fill("#q", "a car")
            pg.press("#q", "Enter")
            pg.wait_for_selector("#grid .card")
            card = pg.inner_text("#grid .card")
            browser.close()
    finally:
        server.stop()
    assert "photo 0.jpg" in card and "red/photo 0.jpg" in card and "(no caption)" not in card, card
    # printable text: no replacement character, no control character but line breaks
    assert "\ufffd" not in card and all(c.isprintable() or c in "\n\t" for c in card), repr(card)
