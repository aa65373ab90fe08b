"""Calibrated relevance: the fit (query-invariant features, logistic regression, judged out of
fold), the confidence on every hit of a real index built by the pipeline's stages, and the
`min_confidence` filter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from carsearch.core.confidence import Calibrator, hit_features, predict
from carsearch.evaluation.calibration import calibrate, ece, query_rows
from testkit import write_pairs, write_params

CFG = {"top_k": 24, "folds": 5, "threshold": 0.5, "bins": 10}


def _queries(seed: int, q: int = 60, n: int = 300):
    """Queries whose raw scores live on different scales (offset and spread vary per query, as
    "a white car" vs "a red suv" do): a relevant image scores ~2.5 spreads above the rest."""
    rng = np.random.default_rng(seed)
    scores, rel = [], []
    for _ in range(q):
        off, spread = rng.uniform(0.1, 0.5), rng.uniform(0.02, 0.08)
        r = rng.random(n) < rng.uniform(0.02, 0.1)
        scores.append(off + spread * rng.standard_normal(n) + r * spread * 2.5)
        rel.append(r)
    return np.array(scores), np.array(rel)


def _sampling_floor(n: int, bins: int) -> float:
    """Expected ECE of a perfectly calibrated predictor from n hits in `bins` bins (binomial noise):
    sum_b (n_b/n) sqrt(2/pi) sqrt(p(1-p)/n_b) <= sqrt(2/pi) * 0.5 * sqrt(bins / n)."""
    return math.sqrt(2 / math.pi) * 0.5 * math.sqrt(bins / n)


def test_held_out_confidence_is_calibrated_and_confident_hits_are_precise():
    calib, rep = calibrate({"renders": _queries(0), "photos": _queries(1)}, CFG)
    held = rep["held_out"]["all"]
    assert held["queries"] == 120 and held["hits"] == 120 * 24
    # held out (GroupKFold over queries): within 3x the binomial sampling floor (~0.024 for 2880 hits)
    assert held["ece"] < 3 * _sampling_floor(held["hits"], CFG["bins"]), held["ece"]
    # calibrated: hits marked confident (p >= 0.5) match at least half the time, on held-out queries
    for src in ("all", "renders", "photos"):
        assert rep["held_out"][src]["confident_precision"] >= CFG["threshold"], rep["held_out"][src]
    assert 0 < held["confident_coverage"] < 1
    # transfer: fitted on the other source only, still calibrated
    assert rep["transfer"]["photos"]["fitted_on"] == ["renders"] and rep["transfer"]["photos"]["ece"] < 0.1
    # one raw-cosine cut-off for every query is much worse: the per-query features are what calibrates
    x, y, g = query_rows(*_queries(1), 24)
    s = np.concatenate([np.sort(row)[::-1][:24] for row in _queries(1)[0]])
    from sklearn.linear_model import LogisticRegression

    raw = LogisticRegression().fit(_queries(0)[0].reshape(-1, 1)[:20000], _queries(0)[1].reshape(-1)[:20000])
    p_raw = raw.predict_proba(s.reshape(-1, 1))[:, 1]
    assert ece(predict(calib, x), y) < ece(p_raw, y) / 2


def test_confidence_is_monotone_in_the_score_for_one_query():
    calib, _ = calibrate({"renders": _queries(0)}, CFG)
    rng = np.random.default_rng(3)
    ref = rng.normal(0.3, 0.05, 400)
    scores = np.linspace(0.1, 0.6, 200)
    p = predict(calib, hit_features(scores, ref))
    assert np.all(np.diff(p) >= 0) and p[-1] > 0.9 and p[0] < 0.1
    # the weights that survive have the signs that keep it so, whatever the data
    assert calib["coef"]["z"] >= 0 and calib["coef"]["gap"] >= 0 and calib["coef"]["log_rank"] <= 0


def test_a_torn_calibration_file_means_no_confidence(tmp_path):
    (tmp_path / "calibration.json").write_text('{"coef": {"z": 1.0')
    np.save(tmp_path / "calibration_ref.npy", np.zeros((4, 3), np.float32))
    assert Calibrator.load(tmp_path) is None
    assert Calibrator.load(tmp_path / "absent") is None


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The demo drawings, the tiny CLIP fine-tuned for a few epochs, evaluate and build_index as
    the pipeline runs them."""
    root = tmp_path_factory.mktemp("calib")
    write_pairs(root, {"train": 48, "val": 12, "test": 60}, size=48)
    mp = pytest.MonkeyPatch()
    mp.setenv("CARSEARCH_ROOT", str(root))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    write_params(root, train={"epochs": 4}, index={"promote": {"metric": None}})
    from carsearch.stages import build_index, evaluate, finetune_clip

    finetune_clip.main()
    evaluate.main()
    build_index.main()
    yield root
    mp.undo()


def test_evaluate_fits_and_build_index_ships_the_calibration(toy, monkeypatch):
    root = toy
    ev = json.loads((root / "metrics/eval.json").read_text())
    cal = json.loads((root / "metrics/calibration.json").read_text())
    assert set(cal) == {"base", "finetuned"} and cal["finetuned"]["sources"]["test_split"] > 10
    rep = ev["calibration"]["finetuned"]["held_out"]["test_split"]
    assert 0 <= rep["ece"] <= 1 and rep["hits"] > 0 and rep["reliability"]
    assert (root / "metrics/plots/reliability.png").read_bytes()[:4] == b"\x89PNG"
    idx = json.loads((root / "metrics/index.json").read_text())
    assert idx["calibration"]["model"] == "finetuned" and idx["calibration"]["reference_rows"] == 120

    from carsearch.index.search import CarSearch

    s = CarSearch(root=root)
    hits = s.text("a red car", k=30)
    conf = [h.confidence for h in hits]
    assert all(c is not None and 0 <= c <= 1 for c in conf)
    # one query: a better score never has a lower confidence
    assert all(a >= b - 1e-9 for a, b in zip(conf, conf[1:])), conf
    assert all(h.confident == (h.confidence >= s.calibrator.threshold) for h in hits)
    assert conf[0] > conf[-1]  # the fine-tuned toy model tells matches apart: confidence is not flat
    cut = next(c for c in conf if c < conf[0])  # the second-highest confidence
    kept = s.text("a red car", k=30, min_confidence=cut)
    assert [h.id for h in kept] == [h.id for h in hits if h.confidence >= cut] and 0 < len(kept) < 30
    from carsearch.index.query import QueryError

    with pytest.raises(QueryError, match="min_confidence"):
        s.text("a red car", min_confidence=1.5)


def test_api_and_page_mark_the_confident_matches(toy, tmp_path):
    """The API's hits carry confidence, the response counts the confident ones, min_confidence
    cuts the list; the page (Chromium) says "N confident matches" and draws the divider there."""
    import shutil

    import httpx

    from _serve_helpers import SETTINGS, Server
    from carsearch.core.confidence import CALIBRATION_FILE
    from carsearch.index.search import CarSearch
    from carsearch.index.store import read_meta
    from carsearch.serve import create_app

    root = toy
    # an index whose threshold falls inside the first page: between two distinct confidences of the query
    conf = [h.confidence for h in CarSearch(root=root).text("a red car", k=12)]
    cut = next(i for i in range(2, len(conf)) if conf[i] < conf[i - 1])
    f = root / "data/index" / read_meta(root / "data/index")["version"] / CALIBRATION_FILE
    cal = json.loads(f.read_text())
    f.write_text(json.dumps({**cal, "threshold": (conf[cut - 1] + conf[cut]) / 2}))
    server = Server(create_app(CarSearch(root=root), SETTINGS, root))
    try:
        body = httpx.get(server.url + "/api/v1/search", params={"q": "a red car", "limit": 12}).json()
        hits = body["hits"]
        assert [h["confident"] for h in hits] == [i < cut for i in range(len(hits))]
        assert all(0 <= h["confidence"] <= 1 for h in hits) and body["confident"] >= cut
        cutoff = httpx.get(
            server.url + "/api/v1/search", params={"q": "a red car", "min_confidence": body["confidence_threshold"]}
        ).json()
        assert [h["id"] for h in cutoff["hits"]] == [h["id"] for h in hits[: len(cutoff["hits"])]]
        assert cutoff["candidates"] == body["confident"] and all(h["confident"] for h in cutoff["hits"])
        bad = httpx.get(server.url + "/api/v1/search", params={"q": "a red car", "min_confidence": 2})
        assert bad.status_code in (400, 422)

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("no system Chromium for the page check")
        pw = pytest.importorskip("playwright.sync_api")
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            pg.goto(server.url + "/?q=a+red+car")
            pg.wait_for_selector("#grid .card")
            pg.wait_for_selector(".confidence-divider")
            # the divider sits right after the last confident card
            before = pg.eval_on_selector_all(
                "#grid > *",
                "els => els.slice(0, els.findIndex(e => e.classList.contains('confidence-divider')))"
                ".map(e => e.dataset.id)",
            )
            assert before == [h["id"] for h in hits[:cut]]
            assert f"{body['confident']} confident match" in pg.text_content("#status")
            assert len(pg.query_selector_all(".thumb .confidence.confident")) == cut
            shot = tmp_path / "confident_divider.png"
            pg.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000
            print(f"screenshot: {shot}")
            browser.close()
    finally:
        server.stop()


def test_wise_ft_candidates_are_scored_gated_and_the_winner_is_indexed(toy):
    """evaluate scores a WiSE-FT interpolation beside the base and fine-tuned models (calibrated
    too); build_index's gate indexes the best of the three and records every one's figure."""
    import torch

    from carsearch.index.store import read_meta
    from carsearch.model.clip import load_clip, load_pretrained
    from carsearch.model.wiseft import interpolate
    from carsearch.stages import build_index, evaluate
    from testkit import TINY

    root = toy
    write_params(
        root,
        train={"epochs": 4},
        index={
            "promote": {"metric": "text_to_image.mrr", "min_gain": -1.0, "set": None},
            "wise_ft": {"alphas": [0.5], "only_pretrained": False},
        },
    )
    evaluate.main()
    ev = json.loads((root / "metrics/eval.json").read_text())
    assert set(ev["candidates"]) == {"wise_ft_0.5"} and ev["candidates"]["wise_ft_0.5"]["alpha"] == 0.5
    assert "wise_ft_0.5" in ev["calibration"] and "wise_ft_0.5" in json.loads(
        (root / "metrics/calibration.json").read_text()
    )
    build_index.main()
    promo = json.loads((root / "metrics/index.json").read_text())["promotion"]
    figures = {
        "base": ev["base"]["text_to_image"]["mrr"],
        "finetuned": ev["finetuned"]["text_to_image"]["mrr"],
        "wise_ft_0.5": ev["candidates"]["wise_ft_0.5"]["text_to_image"]["mrr"],
    }
    assert promo["candidates"] == pytest.approx(figures, abs=1e-4)
    best = max(figures, key=lambda n: (figures[n], n == "finetuned"))
    assert promo["use"] == best
    # the index's model is that candidate's weights
    base, _ = load_clip(TINY, seed=0)
    ft, _ = load_pretrained(root / "models/finetuned")
    want = {"base": base, "finetuned": ft, "wise_ft_0.5": interpolate(base, ft, 0.5)}[best].state_dict()
    got, _ = load_pretrained(root / "data/index" / read_meta(root / "data/index")["version"] / "model")
    assert all(torch.allclose(got.state_dict()[k].float(), v.float(), atol=1e-6) for k, v in want.items())


def test_cli_marks_where_the_confident_matches_end(toy, monkeypatch):
    from typer.testing import CliRunner

    from carsearch.cli import app
    from carsearch.index.search import CarSearch

    monkeypatch.setenv("CARSEARCH_ROOT", str(toy))
    s = CarSearch(root=toy)
    hits = s.text("a red car", k=8)
    n = sum(h.confident for h in hits)
    r = CliRunner().invoke(app, ["search", "a red car", "-k", "8"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    rows = [i for i, x in enumerate(lines) if x.split("\t")[0].isdigit()]
    div = [i for i, x in enumerate(lines) if x.startswith("---- ")]
    assert len(rows) == 8 and len(div) == 1
    assert all(lines[i].split("\t")[-1].startswith("confidence=") for i in rows)
    assert div[0] == (rows[n] - 1 if n < 8 else rows[-1] + 1)  # right after the last confident hit
    assert (f"{n} confident match" if n else "no confident match") in lines[div[0]]
    cut = hits[3].confidence
    r = CliRunner().invoke(app, ["search", "a red car", "-k", "8", "--min-confidence", str(cut)])
    got = [x.split("\t")[2] for x in r.output.splitlines() if x.split("\t")[0].isdigit()]
    assert got == [h.id for h in hits if h.confidence >= cut]
