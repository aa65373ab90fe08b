"""What users experience when they search: attribute text queries and same-model image queries."""

from __future__ import annotations

import itertools

import numpy as np

from .captions import query_text
from .metrics import recall_curve, retrieval_metrics


def attribute_queries(labels: list[dict], attrs: list[str], min_relevant: int = 1) -> tuple[list[str], np.ndarray]:
    """One text query per attribute combination present in `labels` (e.g. colour+body+view);
    relevant = every image whose labels match all of the query's attributes."""
    combos = sorted({tuple(lab.get(a) for a in attrs) for lab in labels if all(lab.get(a) for a in attrs)})
    texts, rel = [], []
    for combo in combos:
        kw = dict(zip(attrs, combo))
        mask = np.array([all(lab.get(a) == v for a, v in kw.items()) for lab in labels])
        if mask.sum() < min_relevant:
            continue
        texts.append(query_text(color=kw.get("color"), body_type=kw.get("body_type"), view=kw.get("view")))
        rel.append(mask)
    return texts, np.array(rel, dtype=bool).reshape(len(rel), len(labels))


def model_key(lab: dict) -> str | None:
    if lab.get("model_id"):
        return str(lab["model_id"])
    if lab.get("make") and lab.get("model") and "unknown" not in (lab["make"], lab["model"]):
        return f"{lab['make']} {lab['model']}"
    return None


def same_model_relevance(labels: list[dict]) -> np.ndarray:
    keys = [model_key(lab) for lab in labels]
    rel = np.array([[a is not None and a == b for b in keys] for a in keys], dtype=bool)
    np.fill_diagonal(rel, False)
    return rel


def evaluate_embeddings(img: np.ndarray, txt: np.ndarray, labels: list[dict], t2i_rel: np.ndarray, ks, curve_k: int = 10) -> tuple[dict, dict]:
    """Metrics and recall curves for text->image (attribute queries) and image->image (same model)."""
    t2i = txt @ img.T
    i2i = img @ img.T
    np.fill_diagonal(i2i, -np.inf)  # never retrieve the query itself
    rel_i2i = same_model_relevance(labels)
    metrics = {
        "text_to_image": retrieval_metrics(t2i, t2i_rel, ks),
        "image_to_image": retrieval_metrics(i2i, rel_i2i, ks),
    }
    curves = {"text_to_image": recall_curve(t2i, t2i_rel, curve_k), "image_to_image": recall_curve(i2i, rel_i2i, curve_k)}
    return metrics, curves


def combos_for(attrs: list[str]) -> list[list[str]]:
    return [list(c) for r in range(1, len(attrs) + 1) for c in itertools.combinations(attrs, r)]
