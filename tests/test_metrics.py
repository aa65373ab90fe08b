"""The metric code against an independent implementation (torchmetrics) and hand-made cases.
recall@k is hit rate: a query counts if at least one relevant item is in its top k."""

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalMRR

from carsearch.evaluation.metrics import recall_curve, retrieval_metrics


def _torchmetrics(scores, relevant, k, map_k):
    q, n = scores.shape
    idx = torch.arange(q).repeat_interleave(n)
    p, t = torch.tensor(scores.ravel()), torch.tensor(relevant.ravel())
    out = {}
    for name, m in (
        (f"recall@{k}", RetrievalHitRate(top_k=k, empty_target_action="skip")),
        (f"map@{map_k}", RetrievalMAP(top_k=map_k, empty_target_action="skip")),
        ("mrr", RetrievalMRR(empty_target_action="skip")),
    ):
        out[name] = float(m(p, t, indexes=idx))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_torchmetrics(seed):
    rng = np.random.default_rng(seed)
    q, n = rng.integers(1, 30), rng.integers(2, 60)
    # torchmetrics' AP treats scores <= 0 as not retrieved: keep them positive; distinct (no ties)
    scores = rng.permutation(q * n).reshape(q, n).astype(np.float64) + 1.0
    relevant = rng.random((q, n)) < rng.uniform(0.02, 0.4)
    ours = retrieval_metrics(scores, relevant, ks=(1, 5, 10), map_k=10)
    assert ours["queries"] + ours["skipped_queries"] == q
    if ours["queries"] == 0:
        return
    for k in (1, 5, 10):
        ref = _torchmetrics(scores, relevant, k, 10)
        assert ours[f"recall@{k}"] == pytest.approx(ref[f"recall@{k}"], abs=1e-6)
    assert ours["map@10"] == pytest.approx(ref["map@10"], abs=1e-6)
    assert ours["mrr"] == pytest.approx(ref["mrr"], abs=1e-6)
    curve = recall_curve(scores, relevant, 10)
    assert curve[4] == pytest.approx(ours["recall@5"]) and all(a <= b for a, b in zip(curve, curve[1:]))


def test_hand_made_case():
    # query 0: relevant at ranks 2 and 4; query 1: relevant at rank 1; query 2: nothing relevant (skipped)
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]])
    relevant = np.array([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=bool)
    m = retrieval_metrics(scores, relevant, ks=(1, 2, 5), map_k=10)
    assert m["queries"] == 2 and m["skipped_queries"] == 1
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0 and m["recall@5"] == 1.0
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["map@10"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1) / 2)
    ref = _torchmetrics(scores, relevant, 1, 10)
    assert m["recall@1"] == pytest.approx(ref["recall@1"]) and m["map@10"] == pytest.approx(ref["map@10"])
    assert m["mrr"] == pytest.approx(ref["mrr"])


def test_map_is_cut_at_k_and_ties_are_stable():
    scores = np.zeros((1, 12))
    relevant = np.zeros((1, 12), bool)
    relevant[0, 11] = True  # ties keep index order: the only relevant item is at rank 12 > 10
    m = retrieval_metrics(scores, relevant, ks=(10,), map_k=10)
    assert m["recall@10"] == 0.0 and m["map@10"] == 0.0 and m["mrr"] == pytest.approx(1 / 12)


def test_shape_errors():
    with pytest.raises(ValueError, match="same 2-D shape"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((3, 2), bool))
