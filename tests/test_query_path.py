"""One query path: the CLI, the Python API and the HTTP service embed a text with the same encoder
and run it through the same query builder (`CarSearch.search`), so they return the same ids and
scores; and the path imports neither PyAV nor PIL's EXIF code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from _serve_helpers import SETTINGS, Server, shared_repo

SRC = str(Path(__file__).parents[1] / "src")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return shared_repo(tmp_path_factory)


def _cli_hits(root: Path, *args: str) -> list[tuple[str, float]]:
    from carsearch.cli import app

    old = os.environ.get("CARSEARCH_ROOT")
    os.environ["CARSEARCH_ROOT"] = str(root)
    try:
        r = CliRunner().invoke(app, ["search", *args])
    finally:
        os.environ.pop("CARSEARCH_ROOT") if old is None else os.environ.__setitem__("CARSEARCH_ROOT", old)
    assert r.exit_code == 0, r.output
    lines = [x.split("\t") for x in r.output.splitlines() if x.split("\t")[0].isdigit()]
    return [(x[2], float(x[1])) for x in lines]


def test_cli_python_and_http_give_the_same_ids_and_scores(root):
    """The same text and filters through `carsearch search`, `CarSearch.text` and GET /api/v1/search
    (real uvicorn): the same hits in the same order with the same scores (the service used to embed
    with torch and its own LRU, and build its own query)."""
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    text, k = "a red car seen from the front", 10
    filters = {"color": ["red", "blue"], "view": ["front", "rear", "side", "three-quarter"]}
    py = CarSearch(root=str(root)).text(text, k=k, filters=filters)  # a str root works as a Path
    assert len(py) == k and {h.labels["color"] for h in py} <= {"red", "blue"}

    cli_args = [text, "-k", str(k)] + [a for c, vs in filters.items() for v in vs for a in (f"--{c}", v)]
    cli = _cli_hits(root, *cli_args)

    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        params = [("q", text), ("limit", str(k)), ("facets", "false")]
        params += [(c, v) for c, vs in filters.items() for v in vs]
        body = httpx.get(server.url + "/api/v1/search", params=params, timeout=60).json()
        posted = httpx.post(
            server.url + "/api/v1/search", json={"q": text, "limit": k, "filters": filters}, timeout=60
        ).json()
    finally:
        server.stop()
    http = [(h["id"], h["score"]) for h in body["hits"]]

    assert [h.id for h in py] == [i for i, _ in cli] == [i for i, _ in http] == [h["id"] for h in posted["hits"]]
    assert [round(h.score, 6) for h in py] == [s for _, s in http] == [h["score"] for h in posted["hits"]]
    assert [round(h.score, 4) for h in py] == [s for _, s in cli]
    assert [h.confidence for h in py] == [h["confidence"] for h in body["hits"]]


def test_cli_offers_every_filter_the_page_offers(root):
    """The page's filters come from /api/v1/info (the index row's declaration); the CLI has an
    option for each, and the page's script names none of them itself."""
    from fastapi.testclient import TestClient

    from carsearch.cli import app
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    with TestClient(create_app(CarSearch(root=root), SETTINGS, root)) as tc:
        info = tc.get("/api/v1/info").json()
        script = tc.get("/static/app.js").text
    page = [f["name"] for f in info["filters"]]
    assert page == info["filter_columns"] and {"color", "scene", "camera"} <= set(page)
    assert {f["page"] for f in info["filters"]} == {"chips", "scope", "input"}
    helptext = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    for name in page:
        assert f"--{name.replace('_', '-')}" in helptext, name
    assert 'FILTERS = ["' not in script and "LABELS = {}" in script  # not restated in the page


def test_the_query_path_imports_neither_pyav_nor_exif_code(root):
    """`carsearch search "…"` (and the library it runs) formats times and frame names with
    core.when: PyAV and PIL.ExifTags stay unimported (a subprocess, so nothing is loaded before)."""
    code = (
        "import sys\nimport carsearch.search, carsearch.index.hits, carsearch.index.query\n"
        "from carsearch.cli import app\n"
        "try:\n    app(['search', 'a red car', '-k', '2', '--after', '2020-01-01T00:00'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED', sorted(m for m in ('av', 'PIL.ExifTags', 'carsearch.sources.capture',"
        " 'carsearch.detection.footage') if m in sys.modules))"
    )
    env = {**os.environ, "CARSEARCH_ROOT": str(root), "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "LOADED []", out.stdout


@pytest.mark.parametrize(
    ("typed", "text", "filters"),
    [
        ("white pickup heading north", "white pickup", {"compass": "north"}),
        ("a northbound bus", "a bus", {"compass": "north"}),
        ("a van driving away from the camera", "a van", {"direction": "away"}),
        ("a taxi approaching", "a taxi", {"direction": "towards"}),
        ("a red car going to the left", "a red car", {"direction": "left"}),
        ("a white car that is parked", "a white car", {"direction": "stopped"}),
        ("silver hatchback going west, parked", "silver hatchback", {"compass": "west", "direction": "stopped"}),
        ("parked", "parked", {"direction": "stopped"}),  # nothing else to embed: the words stay
        ("red pickup seen from behind", "red pickup seen from behind", {}),  # a view, not a motion
        ("a black car on the left", "a black car on the left", {}),  # where it is, not where it goes
    ],
)
def test_motion_words_become_filters(typed, text, filters):
    """A picture shows no motion: the motion words of a text query are read as filters on the
    track's motion columns, and the rest is what the model embeds."""
    from carsearch.index.query import motion_words

    got, found, said = motion_words(typed)
    assert (got, found) == (text, filters)
    assert [s["column"] for s in said] == list(filters)
    assert motion_words(typed, set())[0] == " ".join(typed.split())  # no column asked: the text as typed
