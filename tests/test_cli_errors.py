"""`carsearch search` on bad input and on a stale index: one line, exit code 1, never a traceback;
results whose image is gone are printed, marked, and drawn as a placeholder."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from testkit import write_pairs, write_params


@pytest.fixture(scope="module")
def index_root(tmp_path_factory):
    """A tiny index built by the build_index stage with the (untrained) base model: no training."""
    root = tmp_path_factory.mktemp("cli")
    write_pairs(root, {"train": 8, "val": 4, "test": 8}, size=40)
    write_params(root, index={"promote": {"metric": "text_to_image.recall@5", "min_gain": 5.0}})
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/eval.json").write_text(
        json.dumps({"base": {"text_to_image": {"recall@5": 0.5}}, "finetuned": {"text_to_image": {"recall@5": 0.1}}})
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("CARSEARCH_ROOT", str(root))
    from carsearch.stages import build_index

    build_index.main()
    mp.undo()
    return root


@pytest.fixture
def cli(index_root, monkeypatch):
    monkeypatch.setenv("CARSEARCH_ROOT", str(index_root))
    from carsearch.cli import app

    def invoke(*args):
        r = CliRunner().invoke(app, ["search", *args])
        assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
        return r

    return invoke


def _one_error(r, *needles):
    assert r.exit_code == 1, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], r.output
    return lines[0]


def test_not_an_image(cli, tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello, I am text")
    _one_error(cli("--image", str(bad)), "not_an_image.jpg: not an image (")
    _one_error(cli("--image", str(tmp_path / "nope.jpg")), "nope.jpg: no such image file")


@pytest.mark.parametrize(
    "args,needle",
    [
        ([""], "empty text query"),
        (["   \t "], "empty text query"),
        ([], "nothing to search for"),
        (["red car", "--image", "x.jpg"], "not both"),
    ],
)
def test_query_refused(cli, args, needle):
    _one_error(cli(*args), needle)


@pytest.mark.parametrize(
    "where,needle",
    [
        ("color = 'blue' garbage", "'garbage'"),
        ("colour = 'blue'", "unknown column 'colour'"),
        ("color = blue", "expected a quoted string"),
        ("color = 'blue'; DROP TABLE cars", "';'"),
        ("  ", "empty filter"),
    ],
)
def test_bad_where_refused(cli, where, needle):
    _one_error(cli("a red car", "--where", where), "--where", needle)


def test_filters(cli):
    r = cli("a car", "-k", "20", "--where", "color = 'red' OR color = 'blue'")
    rows = [x.split("\t") for x in r.output.splitlines() if x.split("\t")[0].isdigit()]
    assert r.exit_code == 0 and rows
    r2 = cli("a car", "-k", "20", "--color", "red", "--color", "blue")

    def hits(out: str) -> list[str]:  # the result lines (not the saved list's query id, which names the query)
        return [x for x in out.splitlines() if not x.startswith("query id ")]

    assert r2.exit_code == 0 and hits(r2.output) == hits(r.output)
    r3 = cli("a car", "--color", "o'brien")  # escaped, not injected: simply nothing matches
    assert r3.exit_code == 0 and "no results" in r3.output


def test_stale_index_marks_missing_files(cli, index_root, tmp_path):
    from carsearch.index.search import CarSearch

    hits = CarSearch(root=index_root).text("a car", k=3)
    gone = index_root / hits[0].path
    backup = tmp_path / "backup.jpg"
    shutil.copy(gone, backup)
    gone.unlink()
    try:
        png = tmp_path / "out.png"
        r = cli("a car", "-k", "3", "--png", str(png))
        assert r.exit_code == 0, r.output
        marked = [x for x in r.output.splitlines() if x.endswith("\t[missing file]")]
        assert len(marked) == 1 and hits[0].id in marked[0]
        assert "warning: 1 of 3 results point to missing files" in r.output and "dvc repro build_index" in r.output
        assert png.read_bytes()[:4] == b"\x89PNG"
    finally:
        shutil.copy(backup, gone)


def test_python_api_refuses_bad_queries(index_root):
    from carsearch.index.query import QueryError
    from carsearch.index.search import CarSearch

    s = CarSearch(root=index_root)
    with pytest.raises(QueryError, match="empty text query"):
        s.text("  ")
    with pytest.raises(QueryError, match="'garbage'"):
        s.text("red car", where="color = 'red' garbage")
    assert len(s.text("red car", k=2, where="color = 'red'")) == 2
