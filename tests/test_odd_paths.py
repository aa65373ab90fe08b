"""Paths people have: spaces and non-ASCII letters. `-S index.corpus_path=…` goes through Hydra's
override grammar (quote the value, as the README shows); the CLI takes such paths as they are."""

from __future__ import annotations

import shutil

import pytest
import yaml

from _serve_helpers import shared_repo

ODD = "my cars/été 2024"


def test_quoted_override_with_spaces_and_accents_reaches_params(tmp_path):
    from dvc.utils.hydra import compose_and_dump

    from conftest import REPO

    out = tmp_path / "params.yaml"
    where = f"/photos/{ODD}"
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(REPO), [f"index.corpus_path='{where}'"])
    assert yaml.safe_load(out.read_text())["index"]["corpus_path"] == where
    with pytest.raises(
        Exception, match="LexerNoViableAltException|mismatched|no viable"
    ):  # unquoted: why the README quotes
        compose_and_dump(
            tmp_path / "p2.yaml", str(REPO / "conf"), None, "config", str(REPO), [f"index.corpus_path={where}"]
        )


def test_cli_search_and_index_add_take_odd_paths(tmp_path_factory, monkeypatch):
    from typer.testing import CliRunner

    from carsearch.cli import app

    root = shared_repo(tmp_path_factory)
    work = tmp_path_factory.mktemp("odd")
    repo = work / "repo"
    shutil.copytree(root, repo, symlinks=True)
    monkeypatch.setenv("CARSEARCH_ROOT", str(repo))
    folder = work / ODD
    folder.mkdir(parents=True)
    src = sorted((repo / "data/raw/images").glob("*.jpg"))[0]
    query = folder / "voiture rouge é.jpg"
    shutil.copy(src, query)
    r = CliRunner().invoke(app, ["search", "--image", str(query), "-k", "3"])
    assert r.exit_code == 0, r.output
    assert src.stem in r.output  # the same picture is the first hit
    new = folder / "red" / "nouvelle photo ü.png"
    new.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 48), (210, 20, 20)).save(new)
    r = CliRunner().invoke(app, ["index", "add", str(folder / "red")])
    assert r.exit_code == 0, r.output
    assert "1 added" in r.output
