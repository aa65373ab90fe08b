import json

import pytest

from carsearch import io, paths


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
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n')
    it = io.read_jsonl(p)
    assert next(it) == {"a": 1}
    with pytest.raises(ValueError, match=r"x.jsonl:3: malformed JSON"):
        next(it)
