"""One declaration of the index row (carsearch.core.columns): a column added to it reaches the
table, the `--where` grammar, the Python `Hit`, the CSV export, the API (filters, hits, facets), the
CLI's options and the page's filter list, with no other edit. The stand-in is a `lane` column:
the diff it needs is its `Column(...)` line and a producer that puts `lane` into the vehicle dict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from _serve_helpers import shared_repo

TESTS = Path(__file__).parent
SRC = str(TESTS.parent / "src")

PLATE = (
    'Column("lane", pa.string(), optional=True, where=True, filter=True, facet=True, hit=True, api=True,'
    ' csv="lane", index="BITMAP", label="Lane", page="chips", help="Only this lane.")'
)


def _row_with_plate():
    from carsearch.core.columns import COLUMNS, Column, Row  # noqa: F401  (Column: used by PLATE)

    plate = eval(PLATE)  # noqa: S307  (the same line the subprocess adds)
    return Row((*COLUMNS[:-1], plate, COLUMNS[-1]))


def test_a_column_in_a_fixture_reaches_rows_hits_csv_and_the_api_models():
    from carsearch.curation.rows import row_table
    from carsearch.index.results import hit_type, hits_csv, make_hit
    from carsearch.serve.schemas import api_fields, models

    row = _row_with_plate()
    assert "lane" in row.vehicle and "lane" in row.where and row.indexed["lane"] == "BITMAP"
    t = row_table([{"id": "a", "path": "p.jpg", "lane": "AB-12"}, {"id": "b", "path": "q.jpg"}], row)
    assert t.schema.field("lane").type == pa.string() and t.column("lane").to_pylist() == ["AB-12", ""]
    Hit = hit_type(row)
    r = {**t.to_pylist()[0], "score": 0.5, "confidence": None, "confident": False}
    h = make_hit(1, r, row, Hit)
    assert h.lane == "AB-12" and h.labels == {}
    from dataclasses import asdict

    text = hits_csv([asdict(h)], row).splitlines()
    assert text[0].split(",")[-2:] == ["lane", "caption"] and text[1].split(",")[-2] == "AB-12"
    filters, request, form = models(row)
    assert filters(lane=["AB-12"]).active() == {"lane": ["AB-12"]}
    assert request(q="x", filters={"lane": ["AB-12"]}).filters.lane == ["AB-12"]
    assert form(q="x", lane=["AB-12"]).request().filters.active() == {"lane": ["AB-12"]}
    assert "lane" in api_fields(row)
    assert {"name": "lane", "label": "Lane", "page": "chips"} in row.page_filters()


SCRIPT = r"""
import json, os, sys
import pyarrow as pa
import carsearch.core.columns as cols
from carsearch.core.columns import Column

plate = {PLATE}
cols.COLUMNS = (*cols.COLUMNS[:-1], plate, cols.COLUMNS[-1])  # the one edit: the schema
cols.ROW = cols.Row(cols.COLUMNS)

sys.path.insert(0, {tests!r})
from _serve_helpers import SETTINGS, rebuild
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carsearch.cli import app as cli
from carsearch.index.search import CarSearch
from carsearch.serve import create_app

root = os.environ["CARSEARCH_ROOT"]
rebuild(__import__("pathlib").Path(root))
s = CarSearch(root=__import__("pathlib").Path(root))
out = {{"columns": s.table.schema.names}}
out["python"] = [h.lane for h in s.text("a car", k=40, filters={{"lane": ["AB-12"]}})]
out["where"] = [h.lane for h in s.text("a car", k=40, where="lane = 'XY-99'")]
with TestClient(create_app(s, SETTINGS, __import__("pathlib").Path(root))) as tc:
    out["info"] = tc.get("/api/v1/info").json()["filters"]
    body = tc.get("/api/v1/search", params={{"q": "a car", "lane": "AB-12", "limit": 20}}).json()
    out["api"] = [h["lane"] for h in body["hits"]]
    out["facets"] = body["facets"]["lane"]
    out["post"] = [h["lane"] for h in tc.post("/api/v1/search", json={{"q": "a car", "limit": 20, "filters": {{"lane": ["AB-12"]}}}}).json()["hits"]]
    out["csv"] = tc.get("/api/v1/search", params={{"q": "a car", "lane": "AB-12", "format": "csv"}}).text.splitlines()[:2]
    out["openapi"] = [p["name"] for p in tc.get("/openapi.json").json()["paths"]["/api/v1/search"]["get"]["parameters"]]
r = CliRunner().invoke(cli, ["search", "a car", "-k", "40", "--lane", "AB-12", "--csv", root + "/hits.csv"])
out["cli"] = [ln for ln in r.output.splitlines() if ln.split("\t")[0].isdigit()]
out["cli_csv"] = open(root + "/hits.csv").read().splitlines()[0]
print("RESULT", json.dumps(out))
"""


def test_a_plate_column_added_to_the_schema_reaches_api_csv_cli_and_page(tmp_path_factory, tmp_path):
    """In a fresh interpreter: one Column added to carsearch.core.columns, and `plate` written into
    the ingested frames' manifest rows (its producer); build_index as the pipeline runs it, then the
    Python API, `--where`, GET/POST /api/v1/search (filter, hits, facets, CSV, OpenAPI), /api/v1/info
    (what the page reads) and the CLI (`--lane`, `--csv`) all know the column."""
    repo = tmp_path / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), repo, ignore=shutil.ignore_patterns("mlruns*", ".carsearch"))
    manifest = repo / "data/raw/manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for i, m in enumerate(rows):
        m["lane"] = "AB-12" if i < 5 else "XY-99"  # the producer: a plate reader would set this key
    manifest.write_text("".join(json.dumps(m) + "\n" for m in rows))
    env = {**os.environ, "CARSEARCH_ROOT": str(repo), "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    code = SCRIPT.format(PLATE=PLATE, tests=str(TESTS))
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert "lane" in out["columns"]
    assert out["python"] == ["AB-12"] * 5 and out["where"] == ["XY-99"] * (len(rows) - 5)
    assert {"name": "lane", "label": "Lane", "page": "chips"} in out["info"]  # the page's filter list
    assert (
        out["api"] == ["AB-12"] * 5 and out["post"] == out["api"] and out["facets"] == [{"value": "AB-12", "count": 5}]
    )
    assert out["csv"][0].endswith(",lane,caption") and ",AB-12," in out["csv"][1]
    assert "lane" in out["openapi"]
    assert len(out["cli"]) == 5 and out["cli_csv"].endswith(",lane,caption")
