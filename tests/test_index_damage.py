"""A damaged index version (a data file of the live table gone: a full disk, a stray `rm`): the
CLI says which version and the fix in one line; the search service falls back to the kept
previous version by itself, logs it, and follows the next build."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from _serve_helpers import rebuild, shared_repo


@pytest.fixture
def damaged(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("damage") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, symlinks=True)
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    rebuild(root)  # a second version: the first is kept (index.keep_versions: 2)
    index = root / "data/index"
    live = json.loads((index / "carsearch_index.json").read_text())["version"]
    versions = sorted(p.name for p in index.glob("v-*"))
    assert len(versions) == 2 and versions[-1] == live
    for f in (index / live / "cars.lance/data").glob("*.lance"):
        f.rename(root / f.name)  # moved out of the table
    return root, live, versions[0]


def test_cli_names_the_damaged_version_and_the_fix(damaged):
    from typer.testing import CliRunner

    from carsearch.cli import app

    root, live, previous = damaged
    r = CliRunner().invoke(app, ["search", "a red car", "-k", "3"])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"error: car index version {live} (") and "is damaged: Not found" in line
    assert "dvc repro -f -s build_index" in line and previous in line
    assert ".rs:" not in r.output and "Traceback" not in r.output


def test_service_falls_back_to_the_previous_version_and_logs_it(damaged):
    from fastapi.testclient import TestClient

    from carsearch.serve import create_app

    root, live, previous = damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TestClient(create_app(root=root)) as tc:
            r = tc.get("/api/v1/search", params={"q": "a red car", "limit": 3, "facets": False})
            assert r.status_code == 200, r.text
            assert len(r.json()["hits"]) == 3 and r.json()["index_version"] == previous
            assert tc.get("/api/v1/info").json()["index_version"] == previous
            said = [str(w.message) for w in caught]
            assert any(live in m and f"serving the previous version {previous}" in m for m in said), said
            # the next build is picked up again
            rebuild(root)
            now = json.loads((root / "data/index/carsearch_index.json").read_text())["version"]
            assert tc.get("/api/v1/search", params={"q": "a red car", "limit": 3}).status_code == 200
            assert tc.get("/api/v1/info").json()["index_version"] == now not in (live, previous)
