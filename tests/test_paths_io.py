import json

import pytest

from carsearch.core import io, paths


def test_repo_root_and_shared_root_inside_dvc_temp_experiment(tmp_path, monkeypatch):
    monkeypatch.delenv("CARSEARCH_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    exp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (exp / "src").mkdir(parents=True)
    (exp / "dvc.yaml").write_text("stages: {}\n")
    assert paths.repo_root(exp / "src") == exp
    assert paths.shared_root(exp / "src") == tmp_path
    assert paths.shared_root(tmp_path) == tmp_path
    monkeypatch.chdir(exp)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert paths.mlflow_uri("sqlite:///mlruns.db") == f"sqlite:///{tmp_path}/mlruns.db"
    assert paths.resolve("data/raw") == exp / "data/raw"


def test_repo_root_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("CARSEARCH_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="dvc.yaml"):
        paths.repo_root(tmp_path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="^killed$"):  # the error goes through unchanged
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_swaps_in_complete_output_and_keeps_old_on_failure(tmp_path):
    out = tmp_path / "pairs"
    with io.atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".pairs.tmp-") and not out.exists()
        (tmp / "train.jsonl").write_text("1\n")
    assert (out / "train.jsonl").read_text() == "1\n"
    with pytest.raises(RuntimeError, match="^killed$"):
        with io.atomic_dir(out) as tmp:
            (tmp / "train.jsonl").write_text("half")
            raise RuntimeError("killed")
    assert (out / "train.jsonl").read_text() == "1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]


def test_atomic_dir_cleans_leftovers_of_a_killed_run(tmp_path):
    out = tmp_path / "model"
    (tmp_path / ".model.tmp-dead1").mkdir()  # killed while writing
    (tmp_path / ".model.tmp-dead1" / "half.bin").write_bytes(b"x")
    (tmp_path / ".model.old-dead2").mkdir()  # killed between the two renames: the old one is all there is
    (tmp_path / ".model.old-dead2" / "w.bin").write_bytes(b"old")
    io.clean_stale(out)
    assert (out / "w.bin").read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model"]
    (tmp_path / ".model.tmp-dead3").mkdir()
    (tmp_path / ".model.old-dead4").mkdir()  # a complete output exists: the aside copy is stale
    with io.atomic_dir(out) as tmp:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", tmp.name])
        (tmp / "w.bin").write_bytes(b"new")
    assert (out / "w.bin").read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n')
    it = io.read_jsonl(p)
    assert next(it) == {"a": 1}
    with pytest.raises(ValueError, match=r"x.jsonl:3: malformed JSON"):
        next(it)
