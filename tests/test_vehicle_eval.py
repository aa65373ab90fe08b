"""Vehicle-level evaluation: vehicle and frame text->image metrics, and box recall."""

from __future__ import annotations

import numpy as np
import pytest

from carsearch.evaluation.vehicles import box_recall, frame_scores, iou, vehicle_report


def test_iou_and_box_recall_match_one_to_one():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    truth = {"f1": [[0, 0, 10, 10], [20, 0, 30, 10]], "f2": [[0, 0, 8, 8]]}
    # two predictions on the first truth box: only one may count; the f2 box is off (IoU 0.14)
    found = {"f1": [[0, 0, 10, 10], [1, 0, 11, 10]], "f2": [[4, 4, 12, 12]], "f3": [[0, 0, 5, 5]]}
    r = box_recall(truth, found)
    assert r["recall"] == pytest.approx(1 / 3) and r["truth"] == 3 and r["found"] == 4
    assert r["precision"] == pytest.approx(1 / 4)
    assert box_recall(truth, {})["recall"] == 0.0


def test_frame_scores_take_the_best_vehicle():
    s = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.4]])
    fs, frames = frame_scores(s, ["b", "a", "b"])
    assert frames == ["a", "b"] and fs.tolist() == [[0.9, 0.3], [0.2, 0.5]]


def test_vehicle_and_frame_metrics_from_embeddings():
    """Perfect embeddings (one axis per colour): every red query finds a red vehicle first; the
    frame holding the red car ranks first for 'a frame with a red car' even beside a blue one."""
    colours = ["red", "blue", "white"]
    labels = [{"color": c} for c in ["red", "blue", "blue", "white"]]
    img = np.array([np.eye(3)[colours.index(lab["color"])] for lab in labels], dtype=np.float32)

    def enc(texts):
        return np.array([np.eye(3)[[c in t for c in colours].index(True)] for t in texts], dtype=np.float32)

    r = vehicle_report(img, labels, ["f1", "f1", "f2", "f3"], enc, ["color"])
    assert r["vehicle"]["recall@1"] == 1.0 and r["vehicle"]["mrr"] == 1.0 and r["frame"]["recall@1"] == 1.0
    assert r["queries"] == 3 and r["frames"] == 3 and r["vehicles"] == 4
    # a useless encoder (every query the same) is worse than the perfect one at vehicle level
    bad = vehicle_report(img, labels, ["f1", "f1", "f2", "f3"], lambda t: np.ones((len(t), 3), np.float32), ["color"])
    assert bad["vehicle"]["mrr"] < 1.0
