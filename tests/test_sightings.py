"""Sightings (issue 32): the camera network learned from identities, the pair features, re-ID as
VeRi-776 measures it (same-camera matches excluded), plate search's first hit, and sightings as a
query over a real index: Python, `carsearch sightings`, GET /api/v1/sightings/{id} over uvicorn
and the page's "seen at N cameras" timeline in Chromium (a screenshot)."""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from _serve_helpers import SETTINGS, Server, rebuild, shared_repo

T0 = 1_772_445_600.0  # 2026-03-02T10:00Z


def test_windows_are_learned_from_closest_passes_and_conf_pairs_win():
    from carsearch.core.sightings import learn_windows

    seen = [
        ("v1", "cam-1", T0), ("v1", "cam-2", T0 + 10), ("v1", "cam-2", T0 + 40),  # closest pass: 10 s
        ("v2", "cam-1", T0), ("v2", "cam-2", T0 + 20),
        ("v3", "cam-1", T0), ("v3", "cam-2", T0 + 86_400),  # another day: not a travel time
        ("v4", "cam-1", T0), ("v4", "cam-3", T0 + 30),  # one vehicle only: no window
    ]  # fmt: skip
    net = learn_windows(seen, margin_s=5, min_identities=2, coverage=1.0, max_pass_s=1800)
    assert net.windows == {"cam-1|cam-2": (5.0, 25.0)}
    assert net.window("cam-2", "cam-1") == (5.0, 25.0) and net.window("cam-1", "cam-3") is None
    assert net.features("cam-1", T0, "cam-2", T0 + 12) == (1.0, 0.0)
    assert net.features("cam-1", T0, "cam-2", T0 + 600) == (0.0, 1.0)
    assert net.features("cam-1", None, "cam-2", T0) == (0.0, 0.0)  # no time: the network says nothing
    fixed = learn_windows(seen, 5, 2, 1.0, {"cam-1|cam-2": [0, 99]}, 1800)
    assert fixed.windows["cam-1|cam-2"] == (0.0, 99.0)


def test_camera_pairs_are_typed_with_one_line_errors(tmp_path):
    from carsearch.core.errors import CarsearchError
    from carsearch.core.schema import load_cameras

    good = load_cameras("conf/cameras.yaml")
    assert good.travel is not None and good.travel.max_pass_s > 0 and good.pairs == []
    bad = tmp_path / "cameras.yaml"
    bad.write_text("pairs:\n  - {a: cam-1, b: cam-2, min_s: 50, max_s: 10}\n")
    with pytest.raises(CarsearchError) as e:
        load_cameras(bad)
    assert "pairs" in str(e.value) and "max_s 10.0 < min_s 50.0" in str(e.value) and "\n" not in str(e.value)


def test_pair_features_and_timeline():
    from carsearch.core.sightings import Network, pair_features, timeline

    net = Network({"cam-1|cam-2": (0, 30)})
    q = {"camera": "cam-1", "time": T0, "plate": "AB12 CDE"}
    cands = [
        {"id": "a", "camera": "cam-2", "time": T0 + 10, "plate": "A812 CDE"},  # look-alikes, in the window
        {"id": "b", "camera": "cam-2", "time": T0 + 900, "plate": "XY99 ZZZ"},
        {"id": "c", "camera": "cam-3", "time": None, "plate": None},
    ]
    x = pair_features([0.9, 0.8, 0.7], q, cands, net, confusion_cost=0.3)
    assert x.shape == (3, 5) and x[0, 1] > 0.5 > x[1, 1] and x[2, 1:].tolist() == [0, 0, 0, 0]
    assert x[:, 3].tolist() == [1, 0, 0] and x[:, 4].tolist() == [0, 1, 0]
    line = timeline([{**c, "confident": True} for c in cands])
    assert [g["camera"] for g in line] == ["cam-2", "cam-3"] and [s["id"] for s in line[0]["sightings"]] == ["a", "b"]


def _world(n_ids=30, cams=("cam-1", "cam-2", "cam-3"), noise=1.2, seed=0):
    """Synthetic sightings: each identity at every camera (10 s apart), a vector of its own plus
    noise (appearance alone confuses them), its plate read at two of three sightings."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_ids, 16))
    plates = ["".join(rng.choice(list("ACDEFHJKLMNPRTUVWXY34789"), 7)) for _ in range(n_ids)]
    items, vecs = [], []
    for i in range(n_ids):
        for c, cam in enumerate(cams):
            v = base[i] + noise * rng.normal(size=16)
            vecs.append(v / np.linalg.norm(v))
            plate = plates[i] if (i + c) % 3 else None
            items.append({"identity": f"v{i}", "camera": cam, "time": T0 + 1000 * i + 10 * c, "plate": plate,
                          "true_plate": plates[i]})  # fmt: skip
    return np.array(vecs), items


def test_reid_excludes_same_camera_and_fusion_helps():
    from carsearch.core.sightings import Network
    from carsearch.evaluation.reid import reid_report, side_features

    img, items = _world()
    net = Network({"cam-1|cam-2": (0, 15), "cam-1|cam-3": (5, 25), "cam-2|cam-3": (0, 15)})
    boot = {"n": 200, "seed": 0, "confidence": 0.95}
    rep = reid_report(img, items, side_features(items, net, 0.3), boot, folds=3)
    a, p, n = rep["appearance"], rep["plate"], rep["network"]
    assert a["queries"] == 90 and rep["identities"] == 30
    assert a["map_ci"][0] <= a["map"] <= a["map_ci"][1]
    assert a["map"] < p["map"] < n["map"] and n["rank1"] > 0.9 > a["rank1"]
    # a copy of each query at its own camera would be a perfect match: excluded by the VeRi rule
    twin = [{**s, "identity": s["identity"]} for s in items]
    rep2 = reid_report(np.vstack([img, img]), items + twin, side_features(items + twin, net, 0.3), boot, folds=3)
    assert rep2["appearance"]["rank1"] < 1.0


def test_plate_first_hit_table():
    from carsearch.evaluation.reid import plate_report

    _, items = _world()
    rep = plate_report(items, SimpleNamespace(max_distance=2.0, confusion_cost=0.3), seed=0)
    assert rep["errors_0"] == {"queries": 30, "precision": 1.0, "recall": 1.0}
    assert rep["errors_1"]["recall"] >= 0.9 and rep["errors_2"]["recall"] <= rep["errors_1"]["recall"]
    assert 0 < rep["wildcard"]["recall"] <= 1.0 and rep["gallery_plates"] == 30


# ---------------------------------------------------------------- sightings over a real index
PLATES = ["AB12 CDE", "XY34 FGH", "KL56 MNP", "RS78 TUV", "DF90 WKA", "HJ31 LPE", "MN47 RXT", "PW63 YHC",
          "TV29 NDK", "UX84 FMR", "WY72 EJL", "CE15 KTW"]  # fmt: skip
CAMS = ["cam-1", "cam-2", "cam-3"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The shared small index, copied: rows grouped in threes as one vehicle at cam-1, cam-2, cam-3
    (10 s apart, its plate read, one look-alike misread), and a sightings fit from them shipped."""
    from carsearch.core.sightings import Network
    from carsearch.evaluation.reid import side_features, sightings_fit
    from carsearch.index.search import CarSearch

    root = tmp_path_factory.mktemp("sightings") / "repo"
    shutil.copytree(shared_repo(tmp_path_factory), root, ignore=shutil.ignore_patterns("mlruns*"))
    manifest = root / "data/raw/manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    truth = {}
    for i, m in enumerate(rows):
        v = i // 3
        plate = PLATES[v % len(PLATES)]
        read = plate.replace("B", "8") if i == 1 else plate  # a look-alike misread
        m["labels"] = {**(m.get("labels") or {}), "plate": read}
        m["camera"], m["time"] = CAMS[i % 3], T0 + 100 * v + 10 * (i % 3)
        truth[m["id"]] = f"v{v}"
    manifest.write_text("".join(json.dumps(m) + "\n" for m in rows))
    rebuild(root)
    table = CarSearch(root=root).table.to_arrow().to_pylist()
    assert all(r["camera"] in CAMS and r["time"] for r in table), table[0]
    items = [  # some rows fitted without a time (as a photo or a still has none): the network says nothing
        {"identity": truth[r["id"]], "camera": r["camera"], "time": r["time"] if j % 4 else None, "plate": r["plate"]}
        for j, r in enumerate(table)
    ]
    img = np.array([r["vector"] for r in table], np.float32)
    net = Network({"cam-1|cam-2": (0, 20), "cam-2|cam-3": (0, 20), "cam-1|cam-3": (10, 30)})
    ccfg = {"folds": 3, "target_precision": 0.8, "min_confident": 5, "margin_z": 0.0}
    fit = sightings_fit(img, items, side_features(items, net, 0.3), net, 0.3, ccfg)
    assert fit["threshold"] is not None and fit["coef"]["plate_sim"] > 0
    (root / "metrics/calibration.json").write_text(json.dumps({"finetuned": {"kinds": {"sightings": fit}}}))
    rebuild(root)
    return root, truth


def test_sightings_of_a_hit_in_python_and_the_cli(repo):
    from carsearch.cli import app
    from carsearch.index.search import CarSearch
    from carsearch.index.sightings import Sightings

    root, truth = repo
    first = next(iter(truth))
    res = Sightings(CarSearch(root=root)).of_id(first, k=20)
    mates = {i for i, v in truth.items() if v == truth[first] and i != first}
    assert {s["id"] for s in res.confident} == mates and res.cameras(True) == 2
    assert all(s["probability"] >= res.threshold for s in res.confident)
    assert max(s["probability"] for s in res.others) < res.threshold and res.note is None
    assert {s["plausible"] for s in res.confident} == {True}
    body = res.as_dict()
    assert [g["camera"] for g in body["confident"]] == ["cam-2", "cam-3"]  # in the order it reached them
    with pytest.raises(ValueError, match="sightings: id 'nope' is not in the index"):
        Sightings(CarSearch(root=root)).of_id("nope")

    os.environ["CARSEARCH_ROOT"] = str(root)
    try:
        out = CliRunner().invoke(app, ["sightings", first, "-k", "20"])
        none = CliRunner().invoke(app, ["sightings"])
    finally:
        os.environ.pop("CARSEARCH_ROOT")
    assert out.exit_code == 0, out.output
    assert "seen at" in out.output and "2 confident" in out.output and all(m in out.output for m in mates)
    assert out.output.index("confident:") < out.output.index("others:")
    assert none.exit_code == 1 and "give one of: a hit ID, --track or --image" in none.output


def test_sightings_over_http_and_the_page_timeline(repo, tmp_path):
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    root, truth = repo
    first = next(iter(truth))
    mates = {i for i, v in truth.items() if v == truth[first] and i != first}
    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        got = httpx.get(f"{server.url}/api/v1/sightings/{first}", params={"k": 20}, timeout=60)
        missing = httpx.get(f"{server.url}/api/v1/sightings/nope", timeout=60)
        photo = (root / CarSearch(root=root).get_row(first)["path"]).read_bytes()
        up = httpx.post(
            f"{server.url}/api/v1/sightings",
            files={"image": ("car.jpg", photo, "image/jpeg")},
            data={"plate": "AB12CDE", "k": "40"},
            timeout=60,
        )
        junk = httpx.post(f"{server.url}/api/v1/sightings", files={"image": ("x.jpg", b"not an image")}, timeout=60)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["confident_cameras"] == 2 and body["calibrated"]
        assert {s["id"] for g in body["confident"] for s in g["sightings"]} == mates
        s0 = body["confident"][0]["sightings"][0]
        assert s0["thumb_url"].startswith("/api/v1/thumbs/") and 0 < s0["probability"] <= 1 and s0["travel_window"]
        assert missing.status_code == 404 and "is not in the index" in missing.json()["error"]["message"]
        assert up.status_code == 200, up.text
        top = {s["id"] for g in up.json()["confident"] for s in g["sightings"]}
        assert top == mates | {first}  # a photo has no camera: its own row is a sighting too
        assert junk.status_code == 400 and "not a usable image" in junk.json()["error"]["message"]
        _page_timeline(server.url, first, mates, "AB12CDE", tmp_path)
    finally:
        server.stop()


def _page_timeline(url: str, first: str, mates: set, plate: str, tmp_path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no system Chromium (apt-get install chromium) for the page test")
    pw = pytest.importorskip("playwright.sync_api")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.set_default_timeout(20_000)
            pg.goto(f"{url}/?plate={plate}")  # the vehicle's three rows (one plate misread)
            sel = f"#grid .card[data-id='{first}']"
            card, btn = pg.locator(sel), pg.locator(sel + " button.seen")
            pg.wait_for_function(
                "s => { const b = document.querySelector(s); return b && /seen at \\d+ camera/.test(b.textContent) }",
                arg=sel + " button.seen",
            )
            assert btn.inner_text() == "seen at 2 cameras"
            btn.click()
            pg.wait_for_function("Number(document.body.dataset.timelines || 0) > 0")
            rows = card.locator(".timeline .tl-row:not(.other)")
            assert rows.count() == 2
            crops = card.locator(".timeline .tl-row:not(.other) .tl-crop")
            assert {crops.nth(i).get_attribute("data-id") for i in range(crops.count())} == mates
            pg.wait_for_function(
                "[...document.querySelectorAll('.timeline img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            shot = tmp_path / "sightings_timeline.png"
            card.scroll_into_view_if_needed()
            pg.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert shot.stat().st_size > 10_000 and not errors, errors
        finally:
            browser.close()


def test_evaluate_part_fills_reid_plates_network_and_the_sightings_fit(tmp_path):
    from carsearch.core.confidence import fits_by_kind
    from carsearch.core.params import load_config
    from carsearch.core.sightings import FEATURES
    from carsearch.evaluation.reid import reid_section
    from testkit import write_params

    def rows_of(items):
        return [
            {"id": f"r{i}", "labels": {"identity": s["identity"], "camera": s["camera"], "time": s["time"],
                                       "plate": s["true_plate"]}, "attributes": {"plate": s["plate"]}}
            for i, s in enumerate(items)
        ]  # fmt: skip

    write_params(tmp_path)
    (tmp_path / "conf").mkdir()
    shutil.copy("conf/cameras.yaml", tmp_path / "conf/cameras.yaml")
    cfg = load_config(tmp_path / "params.yaml")
    pairs = tmp_path / cfg.paths.pairs_dir
    pairs.mkdir(parents=True, exist_ok=True)
    train = rows_of(_world(seed=1)[1])  # other vehicles, the same camera spacing: the network's windows
    (pairs / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    img, items = _world()
    results, calibs, logs = {"base": {}, "finetuned": {}}, {"base": {"kinds": {}}, "finetuned": {"kinds": {}}}, []
    reid_section(rows_of(items), {"base": img, "finetuned": img}, results, calibs, cfg, tmp_path, logs.append)
    assert set(results["network"]["windows"]) == {"cam-1|cam-2", "cam-1|cam-3", "cam-2|cam-3"}
    r = results["finetuned"]["reid"]
    assert r["network"]["map"] > r["plate"]["map"] > r["appearance"]["map"] and r["appearance"]["queries"] == 90
    assert results["plates"]["errors_0"]["recall"] == 1.0
    fit = fits_by_kind(calibs["finetuned"])["sightings"]
    assert fit["features"] == list(FEATURES) and fit["windows"] == results["network"]["windows"]
    assert any("re-ID network" in line and "rank-1" in line for line in logs)

    from carsearch.experiments.headline import summary  # the `dvc exp show` columns

    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "metrics/eval.json").write_text(json.dumps(results))
    cols = summary(tmp_path / "metrics", {}, None)
    assert cols["reid_mAP"] == r["appearance"]["map"] and cols["reid_R1_fused"] == r["network"]["rank1"]
    assert cols["reid_mAP_base"] == results["base"]["reid"]["appearance"]["map"] and cols["plate_1err_R"] > 0.8
