"""Evaluation at the level traffic analysts search: vehicles in frames (AI City Challenge style).

- vehicle text->image: attribute queries ("a red suv seen from the front") over the vehicle crops
  of the split; relevant = every vehicle whose labels match; recall@k (hit rate), MRR.
- frame text->image: "a frame containing a red suv": a frame scores its best vehicle; relevant =
  every frame with at least one matching vehicle.
- box recall: the share of ground-truth boxes (the renderer's) that a box source found at
  IoU >= 0.5, per source (the LLM's boxes, a detector's).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from carsearch.evaluation.metrics import retrieval_metrics
from carsearch.evaluation.protocol import attribute_queries, combos_for, judged_scores, labelled_for


def frame_scores(scores: np.ndarray, frame_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(queries x frames) scores, each frame's the best of its vehicles', and the frame ids in order."""
    frames = sorted(set(frame_ids))
    at = {f: i for i, f in enumerate(frames)}
    out = np.full((scores.shape[0], len(frames)), -np.inf, dtype=np.float64)
    for j, f in enumerate(frame_ids):
        out[:, at[f]] = np.maximum(out[:, at[f]], scores[:, j])
    return out, frames


def vehicle_report(
    img: np.ndarray,
    labels: list[dict],
    frame_ids: Sequence[str],
    encode_text: Callable[[list[str]], np.ndarray],
    attrs: Sequence[str],
    ks=(1, 5, 10),
    map_k: int = 10,
) -> dict:
    """Vehicle- and frame-level text->image metrics over the vehicles of a split (rows that are a
    box of a frame), averaged over the attribute combinations of `attrs`, query-weighted."""
    per_vehicle, per_frame, n_queries = [], [], 0
    for combo in combos_for(attrs):
        texts, rel = attribute_queries(labels, combo)
        if not texts:
            continue
        txt = encode_text(texts)
        judged = labelled_for(labels, combo)
        scores = judged_scores(txt @ img.T, judged)
        per_vehicle.append((len(texts), retrieval_metrics(scores, rel, ks, map_k)))
        fs, frames = frame_scores(scores, frame_ids)
        at = {f: i for i, f in enumerate(frames)}
        frel = np.zeros((len(texts), len(frames)), dtype=bool)
        for j, f in enumerate(frame_ids):
            frel[:, at[f]] |= rel[:, j]
        per_frame.append((len(texts), retrieval_metrics(fs, frel, ks, map_k)))
        n_queries += len(texts)

    def mean(parts):  # query-weighted over the combinations that had judged queries
        parts = [(m["queries"], m) for _, m in parts if m.get("queries")]
        total = sum(n for n, _ in parts)
        keys = [k for k in (parts[0][1] if parts else {}) if "@" in k or k == "mrr"]
        return {k: float(sum(n * m[k] for n, m in parts) / total) for k in keys}

    return {
        "vehicle": mean(per_vehicle),
        "frame": mean(per_frame),
        "queries": n_queries,
        "vehicles": len(labels),
        "frames": len(set(frame_ids)),
    }


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_recall(truth: dict[str, list], found: dict[str, list], threshold: float = 0.5) -> dict:
    """Share of the ground-truth boxes (per frame id: [x1, y1, x2, y2] lists) matched one-to-one,
    greedily by IoU, by a found box at IoU >= `threshold`; with precision and the counts."""
    matched = n_true = n_found = 0
    for frame, gts in truth.items():
        preds = list(found.get(frame, []))
        n_true, n_found = n_true + len(gts), n_found + len(preds)
        pairs = sorted(((iou(g, p), i, j) for i, g in enumerate(gts) for j, p in enumerate(preds)), reverse=True)
        used_g, used_p = set(), set()
        for v, i, j in pairs:
            if v < threshold:
                break
            if i not in used_g and j not in used_p:
                used_g.add(i), used_p.add(j)
                matched += 1
    n_found += sum(len(v) for f, v in found.items() if f not in truth)
    return {
        "recall": matched / n_true if n_true else 0.0,
        "precision": matched / n_found if n_found else 0.0,
        "truth": n_true,
        "found": n_found,
        "iou": threshold,
    }
