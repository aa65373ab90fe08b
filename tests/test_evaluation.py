"""Relevance that matches how people search, the zero-shot breakdown, and the evaluate stage's bad input."""

import numpy as np
import pytest

from carsearch.evaluation.protocol import attribute_queries, evaluate_embeddings, full_report, zero_shot
from carsearch.sources.labels import same_model_relevance
from testkit import section

LABELS = [
    {"model_id": "a", "make": "Demo", "model": "A", "body_type": "sedan", "color": "red", "view": "front"},
    {"model_id": "a", "make": "Demo", "model": "A", "body_type": "sedan", "color": "blue", "view": "side"},
    {"model_id": "b", "make": "Demo", "model": "B", "body_type": "suv", "color": "red", "view": "front"},
    {"model_id": "c", "make": "Demo", "model": "C", "body_type": "sedan", "color": "red", "view": "front"},
]


def test_attribute_queries_relevant_is_every_match():
    texts, rel = attribute_queries(LABELS, ["color", "body_type", "view"])
    assert texts == [
        "a blue sedan seen from the side",
        "a red sedan seen from the front",
        "a red suv seen from the front",
    ]
    assert rel.tolist() == [[False, True, False, False], [True, False, False, True], [False, False, True, False]]
    texts, rel = attribute_queries(LABELS, ["color"])
    assert texts == ["a blue car", "a red car"] and rel[1].tolist() == [True, False, True, True]
    texts, rel = attribute_queries(LABELS, ["color"], min_relevant=2)
    assert texts == ["a red car"]


def test_same_model_relevance_excludes_self_and_unknown():
    rel = same_model_relevance(LABELS + [{"color": "red"}, {"color": "red"}])
    assert rel[0].tolist() == [False, True, False, False, False, False]
    assert not rel[4].any() and not rel[:, 4].any()  # no model label: never relevant


def test_evaluate_embeddings_perfect_and_query_never_returns_itself():
    img = np.eye(4, dtype=np.float32)
    img[0, 1] = img[1, 0] = 0.5  # the two images of model a are alike
    texts, rel = attribute_queries(LABELS, ["color", "body_type", "view"])
    txt = rel.astype(np.float32) @ img / np.maximum(rel.sum(1, keepdims=True), 1)
    m, curves = evaluate_embeddings(img, txt, LABELS, rel, ks=[1, 5], curve_k=3)
    assert m["text_to_image"]["recall@1"] == 1.0
    assert m["image_to_image"]["queries"] == 2 and m["image_to_image"]["recall@1"] == 1.0
    assert len(curves["text_to_image"]) == 3


def test_zero_shot_per_attribute():
    vocab = {"red": 0, "blue": 1, "sedan": 2, "suv": 3, "front": 4, "side": 5, "A": 6, "B": 7, "C": 8}

    def enc(texts):
        out = np.zeros((len(texts), 9), np.float32)
        for i, t in enumerate(texts):
            for w in t.replace("Demo ", "").split():
                if w in vocab:
                    out[i, vocab[w]] = 1
        return out

    img = np.zeros((4, 9), np.float32)
    for i, lab in enumerate(LABELS):
        for a in ("color", "body_type", "view", "model"):
            img[i, vocab[lab[a]]] = 1
    img[3, vocab["red"]] = 0
    img[3, vocab["blue"]] = 1  # one colour mistake
    z = zero_shot(img, LABELS, enc, section("eval").zero_shot)
    assert z["color"]["accuracy"] == 0.75 and z["body_type"]["accuracy"] == 1.0 and z["view"]["accuracy"] == 1.0
    assert z["model"]["classes"] == 3 and z["model"]["accuracy"] == 1.0
    m, _, _ = full_report(img, LABELS, enc, section("eval", ks=[1, 5]))
    assert set(m["text_to_image_by_combo"]) == {
        "color",
        "body_type",
        "view",
        "color+body_type",
        "color+view",
        "body_type+view",
    }


@pytest.mark.parametrize("n", [0, 1])
def test_evaluate_stage_empty_or_one_pair_split(tmp_path, n):
    """The evaluate stage's `run`, in process with the composed config (no environment variable)."""
    from carsearch.core.params import load_config
    from carsearch.evaluation.run import run
    from testkit import write_pairs, write_params

    write_pairs(tmp_path, {"train": 4, "val": 2, "test": n})
    write_params(tmp_path)
    with pytest.raises(ValueError, match=rf"^evaluate: the test split \(data/pairs/test.jsonl\) has {n} pair\(s\); "):
        run(load_config(tmp_path / "params.yaml"), tmp_path)


def test_partial_labels_run_only_supported_queries():
    """Colour-only labels: colour queries run, view/body queries and image->image are skipped and
    said so; images with no colour label are not judged (neither relevant nor irrelevant)."""
    from carsearch.evaluation.protocol import full_report

    labels = [{"color": "red"}, {"color": "red"}, {"color": "blue"}, {}, {"color": "blue"}]
    rng = np.random.default_rng(0)
    img = rng.normal(size=(5, 8)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    unlabelled = img[3].copy()

    def enc(texts):  # "a red car" points exactly at the unlabelled image: it must not count as a miss
        return np.stack([unlabelled for _ in texts])

    m, _, q = full_report(img, labels, enc, section("eval", ks=[1], by_combo=True))
    assert m["attributes"] == ["color"] and q["texts"] == ["a blue car", "a red car"]
    assert set(m["skipped"]) == {"text_to_image.body_type", "text_to_image.view", "image_to_image"}
    assert m["text_to_image"]["queries"] == 2 and m["image_to_image"]["queries"] == 0
    # the unlabelled image ranks first for every query but is excluded from judging, so recall@1
    # depends only on the labelled images
    scores = enc(["x"]) @ img.T
    labelled_best = max((i for i in range(5) if labels[i]), key=lambda i: scores[0, i])
    expect = np.mean([labels[labelled_best].get("color") == c for c in ("red", "blue")])
    assert m["text_to_image"]["recall@1"] == pytest.approx(expect)
