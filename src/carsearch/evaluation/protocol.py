"""What users experience when they search: attribute text queries and same-model image queries.

- text->image: one query per attribute combination present in the split ("a red sedan seen from
  the front"); relevant = every image whose labels match all of the query's attributes.
- image->image: each image queries the others; relevant = the same car model (`model_id`, else
  make+model) in another image (another view, colour or scene); the query itself is never returned.
- zero-shot per attribute (colour, body type, model, view): classify each image by the nearest
  prompt among that attribute's values; accuracy per attribute.
`recall@k` is hit rate: the fraction of queries with at least one relevant item in the top k.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from carsearch.core.schema import Eval
from carsearch.core.vocab import query_text
from carsearch.evaluation.metrics import recall_curve, retrieval_metrics
from carsearch.model.clip import pixel_tensor
from carsearch.sources.labels import same_model_relevance


def _qtext(kw: dict) -> str:
    return query_text(
        color=kw.get("color"), body_type=kw.get("body_type"), view=kw.get("view"), make_model=kw.get("make_model")
    )


def _value(lab: dict, a: str):
    if a == "make_model":
        mk, md = lab.get("make"), lab.get("model")
        if not mk or not md or "unknown" in (mk, md):
            return None
        return f"{mk} {md}" if mk.lower() not in md.lower() else md
    return lab.get(a)


def attribute_queries(labels: list[dict], attrs: Sequence[str], min_relevant: int = 1) -> tuple[list[str], np.ndarray]:
    """One text query per combination of values of `attrs` present in `labels` (e.g.
    colour+body+view); relevant = every image whose labels match all of the query's attributes."""
    vals = [tuple(_value(lab, a) for a in attrs) for lab in labels]
    combos = sorted({v for v in vals if all(v)})
    texts, rel = [], []
    for combo in combos:
        mask = np.array([v == combo for v in vals], dtype=bool)
        if mask.sum() < min_relevant:
            continue
        texts.append(_qtext(dict(zip(attrs, combo))))
        rel.append(mask)
    return texts, np.array(rel, dtype=bool).reshape(len(rel), len(labels))


def combos_for(attrs: Sequence[str]) -> list[list[str]]:
    return [list(c) for r in range(1, len(attrs) + 1) for c in itertools.combinations(attrs, r)]


def labelled_for(labels: list[dict], attrs: Sequence[str]) -> np.ndarray:
    """Images that have every one of `attrs` labelled: the gallery a query on `attrs` is judged
    on. An image whose colour is unknown is neither relevant nor irrelevant to "a red car"."""
    return np.array([all(_value(lab, a) for a in attrs) for lab in labels], dtype=bool)


def judged_scores(scores: np.ndarray, judged: np.ndarray | None) -> np.ndarray:
    if judged is None or judged.all():
        return scores
    return np.where(judged[None, :], scores, -np.inf)


def supported_queries(labels: list[dict], attrs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The query attributes the labels support, and why each of the others is skipped."""
    keep, skipped = [], {}
    for a in attrs:
        if any(_value(lab, a) for lab in labels):
            keep.append(a)
        else:
            skipped[f"text_to_image.{a}"] = f"no image in the split has a {a} label"
    if not same_model_relevance(labels).any():
        skipped["image_to_image"] = "no two images share a car model label (model_id, or make and model)"
    return keep, skipped


def evaluate_embeddings(
    img: np.ndarray,
    txt: np.ndarray,
    labels: list[dict],
    t2i_rel: np.ndarray,
    ks,
    curve_k: int = 10,
    map_k: int = 10,
    judged: np.ndarray | None = None,
) -> tuple[dict, dict]:
    """Metrics and recall curves for text->image (attribute queries) and image->image (same model).
    `judged`: the images the text queries are ranked among (those labelled for the queried attributes)."""
    t2i = judged_scores(txt @ img.T, judged)
    i2i = img @ img.T
    np.fill_diagonal(i2i, -np.inf)  # never retrieve the query itself
    rel_i2i = same_model_relevance(labels)
    metrics = {
        "text_to_image": retrieval_metrics(t2i, t2i_rel, ks, map_k),
        "image_to_image": retrieval_metrics(i2i, rel_i2i, ks, map_k),
    }
    curves = {
        "text_to_image": recall_curve(t2i, t2i_rel, curve_k),
        "image_to_image": recall_curve(i2i, rel_i2i, curve_k),
    }
    return metrics, curves


def zero_shot(
    img: np.ndarray,
    labels: list[dict],
    encode_text: Callable[[list[str]], np.ndarray],
    attrs: Sequence[str],
) -> dict[str, dict]:
    """Per attribute: accuracy of picking the right value among the split's values by the
    nearest prompt ("a red car", "a sedan", "a Peugeot 406 car", "a car seen from the front")."""
    out = {}
    for a in attrs:
        key = "make_model" if a == "model" else a
        vals = [_value(lab, key) for lab in labels]
        classes = sorted({v for v in vals if v})
        keep = np.array([v is not None for v in vals])
        if len(classes) < 2 or not keep.any():
            continue
        prompts = [_qtext({key: c}) for c in classes]
        emb = encode_text(prompts)
        pred = np.argmax(img[keep] @ emb.T, axis=1)
        truth = np.array([classes.index(v) for v in np.array(vals, dtype=object)[keep]])
        out[a] = {
            "accuracy": float((pred == truth).mean()),
            "classes": len(classes),
            "chance": 1.0 / len(classes),
            "images": int(keep.sum()),
        }
    return out


def full_report(
    img: np.ndarray, labels: list[dict], encode_text: Callable[[list[str]], np.ndarray], cfg: Eval
) -> tuple[dict, dict, dict]:
    """Everything `evaluate` reports for one model: (metrics, curves, query data for examples)."""
    ks, map_k = list(cfg.ks), int(cfg.map_k)
    attrs, skipped = supported_queries(labels, list(cfg.attributes))
    texts, rel = attribute_queries(labels, attrs, int(cfg.min_relevant))
    txt = encode_text(texts) if texts else np.zeros((0, img.shape[1]), np.float32)
    metrics, curves = evaluate_embeddings(img, txt, labels, rel, ks, max(ks), map_k, labelled_for(labels, attrs))
    metrics["attributes"], metrics["skipped"] = attrs, skipped
    by_combo = {}
    for combo in combos_for(attrs)[:-1] if cfg.by_combo else []:
        ct, cr = attribute_queries(labels, combo, int(cfg.min_relevant))
        if ct:
            m = retrieval_metrics(judged_scores(encode_text(ct) @ img.T, labelled_for(labels, combo)), cr, ks, map_k)
            by_combo["+".join(combo)] = {k: v for k, v in m.items() if k != "skipped_queries"}
    if by_combo:
        metrics["text_to_image_by_combo"] = by_combo
    metrics["zero_shot"] = zero_shot(img, labels, encode_text, cfg.zero_shot)
    return metrics, curves, {"texts": texts, "rel": rel, "txt": txt}


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"text_to_image": {"recall@5": .8}} -> {"t2i_recall@5": .8} (short names for logs)."""
    short = {"text_to_image": "t2i", "image_to_image": "i2i"}
    out = {}
    for direction, m in metrics.items():
        if direction in short:
            for k, v in m.items():
                if k not in ("queries", "skipped_queries"):
                    out[f"{prefix}{short[direction]}_{k}"] = v
        elif direction == "zero_shot":
            for a, z in m.items():
                out[f"{prefix}zs_{a}_acc"] = z["accuracy"]
    return out


@torch.no_grad()
def embed_pixels(model, pix: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(pix), batch_size):
        f = model.get_image_features(pixel_values=pix[i : i + batch_size].to(dev))
        f = getattr(f, "pooler_output", f)
        out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_texts(model, processor, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised text embeddings on the model's device (CPU or GPU), float32 [N, D]."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        b = processor.tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
        f = model.get_text_features(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev))
        f = getattr(f, "pooler_output", f)
        out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
    if not out:
        return np.zeros((0, model.config.projection_dim), dtype=np.float32)
    return torch.cat(out).numpy()


def validation_fn(processor, pairs: list[dict], root: Path, cfg: Eval) -> Callable[[object], dict] | None:
    """`validate(model) -> {"t2i_recall@5": ..., "i2i_recall@5": ..., "val_recall@5": mean}` on
    the validation pairs (images preprocessed once). None (with a reason) when there are < 2 pairs."""
    if len(pairs) < 2:
        return None
    pix = pixel_tensor(processor, [root / p["path"] for p in pairs])
    labels = [p.get("labels") or p.get("attributes") or {} for p in pairs]
    vcfg = cfg.model_copy(update={"by_combo": False, "zero_shot": []})

    def validate(model) -> dict:
        img = embed_pixels(model, pix)
        m, _, _ = full_report(img, labels, lambda t: embed_texts(model, processor, t), vcfg)
        flat = flat_metrics(m)
        for k in list(flat):
            if k.startswith("t2i_recall@") and f"i2i_{k[4:]}" in flat:
                flat[f"val_{k[4:]}"] = (flat[k] + flat[f"i2i_{k[4:]}"]) / 2
        return flat

    return validate
