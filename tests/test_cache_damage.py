"""Caches survive their own damage: a torn embedding-cache part is moved aside and its images are
embedded again (the build says so in one line, every later build works); a torn thumbnail is made
again. (A torn caption-cache line: tests/test_caption_cache.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np

from _serve_helpers import SETTINGS, rebuild, shared_repo


def test_torn_part_is_moved_aside_and_re_embedded(tmp_path):
    from carsearch.index.embed_cache import EmbedCache, damage_note, embed_missing

    cache = EmbedCache(tmp_path, "m1")
    cache.put(["a", "b"], np.ones((2, 4), np.float32))
    cache.put(["c"], np.full((1, 4), 2, np.float32))
    parts = sorted((tmp_path / "m1").glob("part-*.parquet"))
    assert len(parts) == 2
    parts[0].write_bytes(parts[0].read_bytes()[:37])  # what a full disk leaves
    again = EmbedCache(tmp_path, "m1")
    assert "c" in again and "a" not in again and "b" not in again
    assert [n for n, _ in again.damaged] == [parts[0].name] and (tmp_path / "m1" / f"{parts[0].name}.damaged").is_file()
    note = damage_note(again, "build_index")
    assert note.startswith("build_index: embedding cache ") and "1 damaged part(s)" in note and "embedded again" in note
    calls = []
    stats = embed_missing(
        ["a", "b", "c"], ["pa", "pb", "pc"], again, lambda ps: (calls.append(ps), np.zeros((len(ps), 4), np.float32))[1]
    )
    assert calls == [["pa", "pb"]] and stats["embedded"] == 2 and stats["cached"] == 1
    assert again.get(["a", "b", "c"]).shape == (3, 4)
    assert EmbedCache(tmp_path, "m1").damaged == []  # healed: the next open finds nothing wrong
    assert damage_note(EmbedCache(tmp_path, "m1"), "x") is None


def test_build_index_survives_a_torn_cache_part(tmp_path_factory, monkeypatch, capsys):
    root = tmp_path_factory.mktemp("torn") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, symlinks=True)
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    parts = sorted((root / ".carsearch/embed_cache").rglob("part-*.parquet"))
    assert parts, "the shared repo's build filled the embedding cache"
    for p in parts:
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    capsys.readouterr()

    def built() -> dict:
        rebuild(root)
        return json.loads((root / "data/index/carsearch_index.json").read_text())

    out = built()
    said = capsys.readouterr().out
    assert out["rows"] == 36 and out["embedded"] == 36 and out["cached"] == 0
    assert "build_index: embedding cache " in said and "damaged part(s) moved aside" in said
    out = built()  # and every later build works, from the healed cache
    assert out["embedded"] == 0 and out["cached"] == 36
    assert json.loads((root / "metrics/index.json").read_text())["rows"] == 36


def test_torn_thumbnail_is_made_again(tmp_path_factory):
    from carsearch.index.search import CarSearch
    from carsearch.serve.service import Service

    root = tmp_path_factory.mktemp("thumbs") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, symlinks=True)
    svc = Service(CarSearch(root=root), SETTINGS, root)
    first = svc.thumb_file("img0001")
    whole = first.read_bytes()
    first.write_bytes(whole[: len(whole) // 2])  # torn
    again = svc.thumb_file("img0001")
    assert again == first and again.read_bytes() == whole


def test_rebuild_says_which_added_rows_it_does_not_keep(tmp_path_factory, monkeypatch, capsys):
    """Rows `carsearch index add` put in from outside the corpus are not silently lost by the next build."""
    from PIL import Image
    from typer.testing import CliRunner

    from carsearch.cli import app

    root = tmp_path_factory.mktemp("added") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, symlinks=True)
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    extra = root.parent / "elsewhere" / "red"
    extra.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (60, 40), (200, 10 + 40 * i, 10)).save(extra / f"new{i}.png")
    r = CliRunner().invoke(app, ["index", "add", str(extra)])
    assert r.exit_code == 0 and "3 added" in r.output, r.output
    capsys.readouterr()
    rebuild(root)
    said = capsys.readouterr().out
    meta = json.loads((root / "data/index/carsearch_index.json").read_text())
    assert meta["rows"] == 36
    line = next(x for x in said.splitlines() if "rows of the previous index" in x)
    assert line.startswith("build_index: 3 rows of the previous index are not in the corpus") and "index add" in line
    listed = [
        json.loads(x) for x in (root / "data/index" / meta["version"] / "left_out.jsonl").read_text().splitlines()
    ]
    assert sorted(x["origin"] for x in listed) == sorted(str(extra / f"new{i}.png") for i in range(3))
    rebuild(root)
    assert "rows of the previous index" not in capsys.readouterr().out  # said once, for the build that left them out


def test_switching_the_corpus_says_the_old_rows_go_with_the_old_corpus(tmp_path_factory, capsys):
    """A build from another corpus than the live index's says so, rather than blaming `index add`."""
    import yaml
    from PIL import Image

    root = tmp_path_factory.mktemp("switched") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, symlinks=True)
    before = json.loads((root / "data/index/carsearch_index.json").read_text())
    photos = root.parent / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (60, 40), (20, 200, 10 + 90 * i)).save(photos / f"p{i}.png")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["index"].update(corpus="folder", corpus_path=str(photos))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    rebuild(root)
    said = capsys.readouterr().out
    line = next(x for x in said.splitlines() if "another corpus" in x)
    assert f"its {before['rows']} rows not in this corpus (folder {photos})" in line and "index add" not in line
    assert "rows of the previous index" not in said
