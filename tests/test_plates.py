"""Plates in the index (issue 32, item 1): the `plate` column filled from the row's read plate or
labels; the offline captioner's OCR-style misreads; plate search with wildcards and look-alike
tolerance through the Python API, the CLI and GET/POST /api/v1/search (real uvicorn), alone and
combined with a text query and a camera filter; hits and CSV carry the plate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from _serve_helpers import SETTINGS, Server, rebuild, shared_repo

PLATES = ["AB12 CDE", "XY99 ZZZ", "K0L 551", "B8I 105", "QQ77 RRR"]


def test_matcher_wildcards_and_look_alikes():
    from carsearch.index.plates import PlateMatcher, PlateQueryError

    m = PlateMatcher(PLATES + ["AB12 CDF", None, ""], max_distance=1.5, confusion_cost=0.3)
    assert m.match("AB12CDE") == {"AB12 CDE": 0.0, "AB12 CDF": 1.0}
    assert m.match("A812 CDE")["AB12 CDE"] == 0.3  # 8/B
    assert m.match("KOL 551")["K0L 551"] == 0.3  # 0/O
    assert m.match("B81 IO5")["B8I 105"] == pytest.approx(0.9)  # 1/I twice, 0/O
    assert m.match("K0L SS1")["K0L 551"] == pytest.approx(0.6)  # 5/S twice
    assert m.match("XY9 ZZZ") == {"XY99 ZZZ": 1.0}  # a dropped character
    assert m.match("XY999 ZZZ") == {"XY99 ZZZ": 1.0}  # an extra one
    assert m.match("XY9 ZZ") == {}  # two dropped: beyond 1.5
    assert set(m.match("AB12*")) == {"AB12 CDE", "AB12 CDF"}
    assert set(m.match("??99*")) == {"XY99 ZZZ"}
    assert m.match("A812 CD?") == {"AB12 CDE": 0.3, "AB12 CDF": 0.3}  # wildcards tolerate look-alikes too
    with pytest.raises(PlateQueryError, match=r"only letters, digits, \* and \?"):
        m.match("AB_12%")
    with pytest.raises(PlateQueryError, match="empty plate"):
        m.match(" - ")


def test_row_plate_is_the_read_one_else_the_legible_label():
    from carsearch.curation.rows import read_plate, row_table

    assert read_plate({"attributes": {"plate": "A812 CDE"}, "labels": {"plate": "AB12 CDE"}}) == "A812 CDE"
    assert read_plate({"labels": {"plate": "AB12 CDE", "plate_legible": True}}) == "AB12 CDE"
    assert read_plate({"labels": {"plate": "AB12 CDE", "plate_legible": False}}) == ""
    assert read_plate({"labels": {"plate": "AB12 CDE"}}) == "AB12 CDE"  # labels.csv / COCO: legible
    t = row_table([{"id": "a", "path": "a.jpg", "labels": {"plate": "XY99 ZZZ"}}, {"id": "b", "path": "b.jpg"}])
    assert t.column("plate").to_pylist() == ["XY99 ZZZ", ""]


def test_offline_captioner_misreads_at_the_configured_rate():
    from carsearch.captioning.offline import offline_caption
    from carsearch.core.params import load_config
    from carsearch.index.plates import distance, normal

    rate = load_config(Path(__file__).parents[1] / "params.yaml").caption.offline.plate_misread_rate
    assert 0 < rate < 0.5
    lab = {"color": "red", "body_type": "sedan", "view": "front", "plate": "AB15 CDO", "plate_legible": True}
    reads = [offline_caption(lab, f"r{i}", rate)["plate"] for i in range(3000)]
    assert reads == [offline_caption(lab, f"r{i}", rate)["plate"] for i in range(3000)]  # seeded by record
    wrong = [r for r in reads if r != "AB15 CDO"]
    assert abs(len(wrong) / len(reads) - rate) < 0.02
    kinds = {len(normal(r)) - 7 for r in wrong}
    assert kinds == {-1, 0, 1}  # dropped, swapped, extra
    swapped = [r for r in wrong if len(normal(r)) == 7]
    assert all(distance(normal(r), "AB15CDO", 0.3) == pytest.approx(0.3) for r in swapped)
    assert {c for r in swapped for a, c in zip(normal(r), "AB15CDO") if a != c} == set("B15O")
    assert [offline_caption(lab, f"r{i}", 0.0)["plate"] for i in range(200)] == ["AB15 CDO"] * 200


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The shared small index, copied, with plates and cameras in its manifest's labels, rebuilt."""
    root = tmp_path_factory.mktemp("plates") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, ignore=shutil.ignore_patterns("mlruns*"))
    manifest = root / "data/raw/manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for i, m in enumerate(rows):
        m["labels"] = {**(m.get("labels") or {}), "plate": PLATES[i % len(PLATES)]}
        m["camera"] = "cam-a" if i % 2 == 0 else "cam-b"
    manifest.write_text("".join(json.dumps(m) + "\n" for m in rows))
    rebuild(root)
    return root, rows


def _cli(root: Path, *args: str):
    from carsearch.cli import app

    old = os.environ.get("CARSEARCH_ROOT")
    os.environ["CARSEARCH_ROOT"] = str(root)
    try:
        return CliRunner().invoke(app, ["search", *args])
    finally:
        os.environ.pop("CARSEARCH_ROOT") if old is None else os.environ.__setitem__("CARSEARCH_ROOT", old)


def test_plate_search_python_cli_and_http(repo, tmp_path):
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root, rows = repo
    want = {m["id"] for i, m in enumerate(rows) if i % len(PLATES) == 0}
    s = CarSearch(root=root)
    alone = s.plate("A812 C0E", k=50)  # 8/B and 0/O: plate only, no model
    assert {h.id for h in alone} == want and {h.plate for h in alone} == {"AB12 CDE"}
    assert s.plate("AB12 CD", k=50)[0].plate == "AB12 CDE"  # a dropped character
    assert {h.plate for h in s.plate("??99*", k=50)} == {"XY99 ZZZ"}
    both = s.text("a red car", k=50, plate="AB12*", camera="cam-a")
    assert both and {h.id for h in both} <= want and {h.camera for h in both} == {"cam-a"}
    assert len(both) < len(want) and both == sorted(both, key=lambda h: -h.score)

    r = _cli(root, "--plate", "A8I2CDE", "-k", "50", "--csv", str(tmp_path / "hits.csv"))
    assert r.exit_code == 0, r.output
    assert {ln.split("\t")[2] for ln in r.output.splitlines() if ln.split("\t")[0].isdigit()} == want
    head, *lines = (tmp_path / "hits.csv").read_text().splitlines()
    assert "plate" in head.split(",") and all("AB12 CDE" in ln for ln in lines) and len(lines) == len(want)
    bad = _cli(root, "--plate", "AB%1")
    assert bad.exit_code == 1 and "only letters, digits, * and ?" in bad.output

    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        got = httpx.get(server.url + "/api/v1/search", params={"plate": "AB1Z CDE", "limit": 20}, timeout=60).json()
        post = httpx.post(
            server.url + "/api/v1/search",
            json={"q": "a car", "limit": 20, "filters": {"plate": ["AB12*"], "camera": ["cam-b"]}},
            timeout=60,
        ).json()
        info = httpx.get(server.url + "/api/v1/info", timeout=60).json()
        csv = httpx.get(server.url + "/api/v1/search", params={"plate": "XY99ZZZ", "format": "csv"}, timeout=60)
        err = httpx.get(server.url + "/api/v1/search", params={"plate": "A%"}, timeout=60)
    finally:
        server.stop()
    assert {h["id"] for h in got["hits"]} == want and {h["plate"] for h in got["hits"]} == {"AB12 CDE"}
    assert post["hits"] and {h["id"] for h in post["hits"]} <= want and {h["camera"] for h in post["hits"]} == {"cam-b"}
    assert {"name": "plate", "label": "Plate", "page": "input"} in info["filters"]
    assert "plate" in csv.text.splitlines()[0] and "XY99 ZZZ" in csv.text.splitlines()[1]
    assert err.status_code == 400 and "only letters, digits" in err.json()["error"]["message"]
