"""Caches survive their own damage: a torn embedding-cache part is moved aside and its images are
embedded again (the build says so in one line, every later build works); a torn thumbnail is made
again. (A torn caption-cache line: tests/test_caption_cache.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np

from _serve_helpers import SETTINGS, rebuild, shared_repo


def test_torn_part_is_moved_aside_and_re_embedded(tmp_path):
    from carsearch.index.embed_cache import EmbedCache, damage_note, embed_with_cache

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
    vecs, stats = embed_with_cache(
        ["a", "b", "c"], ["pa", "pb", "pc"], again, lambda ps: (calls.append(ps), np.zeros((len(ps), 4), np.float32))[1]
    )
    assert calls == [["pa", "pb"]] and stats["embedded"] == 2 and stats["cached"] == 1 and vecs.shape == (3, 4)
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
