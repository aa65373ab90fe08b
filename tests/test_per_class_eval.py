"""Per class of body type and colour (eval.json's `per_class`): zero-shot top-1 and query AP with
bootstrap intervals, on the street world's vocabulary (wagon, box truck, bus, motorcycle...)."""

from __future__ import annotations

import numpy as np
import pytest

from carsearch.evaluation.per_class import _counts, average_precision, per_class_report
from carsearch.evaluation.protocol import attribute_queries, embed_texts
from carsearch.model.clip import encode_images, load_clip
from carsearch_world import build_fleet, render_fleet
from testkit import TINY, section

STREET_TYPES = ("sedan", "hatchback", "wagon", "suv", "pickup", "van", "box truck", "bus", "motorcycle", "sports car")
BOOT = section("eval", bootstrap={"n": 200, "seed": 0, "confidence": 0.95}).bootstrap


def test_average_precision_is_exact_for_resamples_with_repeated_items():
    rng = np.random.default_rng(0)
    scores, rel = rng.normal(size=30), rng.random(30) < 0.3
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(rel[order])
    assert average_precision(scores, rel)[0] == pytest.approx((hits / np.arange(1, 31))[rel[order]].mean())
    counts = _counts(30, 5, 1)
    for b, ap in enumerate(average_precision(scores, rel, counts)):
        rr = np.repeat(rel[order], counts[b, order])  # each drawn copy ranked beside its original
        expect = (np.cumsum(rr) / np.arange(1, len(rr) + 1))[rr].mean() if rr.any() else np.nan
        assert ap == pytest.approx(expect, nan_ok=True, abs=1e-12)


def test_a_perfect_encoder_scores_one_and_a_confused_class_shows_in_its_own_row():
    colours = ["red", "white", "black"]
    labels = [{"color": c, "body_type": "bus" if i % 2 else "box truck"} for i, c in enumerate(colours * 4)]
    img = np.array([np.eye(5)[colours.index(lab["color"])] for lab in labels], dtype=np.float32)
    img[[1, 4], :] = np.eye(5)[0]  # two white vehicles look red

    def enc(texts):
        return np.array(
            [np.eye(5)[[c in t for c in colours].index(True)] if "car" in t else np.eye(5)[4] for t in texts]
        )

    rep = per_class_report(img, labels, enc, ["color", "body_type", "model"], BOOT)
    assert set(rep) == {"color", "body_type"}  # model is not a vocabulary attribute
    col = rep["color"]
    assert col["classes"] == 3 and col["images"] == 12 and col["top1"] == pytest.approx(10 / 12)
    assert col["by_class"]["black"]["top1"] == 1.0 and col["by_class"]["black"]["top1_ci"] == [1.0, 1.0]
    assert col["by_class"]["white"]["top1"] == 0.5 and col["by_class"]["white"]["precision"] == 1.0
    assert col["by_class"]["red"]["precision"] == pytest.approx(4 / 6) and col["by_class"]["black"]["ap"] == 1.0
    assert col["macro_top1"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_per_class_block_on_a_tiny_random_model_over_the_street_vocabulary(tmp_path):
    fleet = build_fleet(5, 40, dict.fromkeys(STREET_TYPES, 1.0), {"white": 1.0, "black": 1.0, "red": 1.0}, variants=1)
    items = render_fleet(fleet, tmp_path, 40, size=64, seed=5, workers=1)
    labels = [lab for _, lab in items]
    model, proc = load_clip(TINY, seed=0)
    img = encode_images(model, proc, [p for p, _ in items])
    rep = per_class_report(img, labels, lambda t: embed_texts(model, proc, t), section("eval").zero_shot, BOOT)
    body = rep["body_type"]
    assert set(body["by_class"]) == set(STREET_TYPES) and body["classes"] == len(STREET_TYPES)  # >= 10 types
    assert set(rep["color"]["by_class"]) == {"white", "black", "red"}
    for attr in ("body_type", "color"):
        block = rep[attr]
        assert block["images"] == len(items) and sum(c["images"] for c in block["by_class"].values()) == len(items)
        assert block["chance"] == pytest.approx(1 / block["classes"])
        lo, hi = block["top1_ci"]
        assert 0.0 <= lo <= block["top1"] <= hi <= 1.0
        for cls in block["by_class"].values():
            assert set(cls) == {"images", "top1", "top1_ci", "precision", "ap", "ap_ci"}
            lo, hi = cls["top1_ci"]
            assert 0.0 <= lo <= cls["top1"] + 1e-4 and cls["top1"] - 1e-4 <= hi <= 1.0
            lo, hi = cls["ap_ci"]
            assert 0.0 <= lo <= hi <= 1.0 and lo - 1e-4 <= cls["ap"] <= hi + 1e-4
    # the attribute queries name the new vocabulary
    texts, _ = attribute_queries(labels, ["body_type"])
    assert {"a box truck", "a bus", "a motorcycle", "a wagon"} <= set(texts)
    # the same scores and settings give the same intervals
    again = per_class_report(img, labels, lambda t: embed_texts(model, proc, t), ["body_type", "color"], BOOT)
    assert again == {k: rep[k] for k in again}
