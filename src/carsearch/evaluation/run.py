"""The evaluate stage's work, as a library: `run(cfg, root) -> EvalResult` computes everything (no
file written); `carsearch.evaluation.outputs` writes it, flattens it for MLflow and says it in lines.

What is measured: text->image on attribute queries and image->image (same model), base vs
fine-tuned, with bootstrap intervals and per-query rows; the vehicle level and box recall of
multi-vehicle frames; the user's labelled eval sets; each model's hit confidence (calibration);
the WiSE-FT candidates the build_index gate may choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.schema import Params
from carsearch.curation.corpus import detect_boxes
from carsearch.evaluation.candidates import model_calibration, wise_ft_alphas, wise_ft_candidates
from carsearch.evaluation.evalsets import evaluate_sets
from carsearch.evaluation.per_class import per_class_report
from carsearch.evaluation.protocol import embed_texts, full_report
from carsearch.evaluation.reid import reid_section
from carsearch.evaluation.stats import add_intervals, query_results
from carsearch.evaluation.vehicles import box_recall, vehicle_report
from carsearch.model.clip import encode_images, load_clip, load_pretrained
from carsearch.sources.files import content_id
from carsearch.sources.labels import model_key

HEADLINE = ("recall@1", "recall@5", "recall@10", "map@10", "mrr")


@dataclass
class EvalResult:
    """What `run` found: `results` is metrics/eval.json, `calibs` metrics/calibration.json,
    `creports` the calibration reports (also under results["calibration"]), `per_query` the rows of
    eval_queries.csv, `curves` recall@1..K per model and direction, `examples` the example grid's
    queries (text, [(image, score, relevant)], [query image])."""

    results: dict
    calibs: dict
    creports: dict
    per_query: dict
    curves: dict
    examples: list = field(default_factory=list)
    model_dir: Path | None = None


def _round(x):
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def _split_rows(cfg: Params, root: Path) -> list[dict]:
    e, paths = cfg.eval, cfg.paths
    split_file = resolve(paths.pairs_dir, root) / f"{e.split}.jsonl"
    rows = list(read_jsonl(split_file)) if split_file.is_file() else []
    if len(rows) < 2:
        raise ValueError(
            f"evaluate: the {e.split} split ({paths.pairs_dir}/{e.split}.jsonl) has "
            f"{len(rows)} pair(s); retrieval needs at least 2 images"
        )
    return rows


def _box_truth(rows, vehicles, cfg: Params, root: Path) -> tuple[dict, dict]:
    """frame id -> the renderer's boxes (test frames only), and its file."""
    truth, truth_paths = {}, {}
    test_frames = {rows[i]["frame_id"] for i in vehicles}
    for m in read_jsonl(resolve(cfg.paths.manifest, root)):
        if m["id"] in test_frames and any(b.get("source") == "render" for b in m.get("boxes") or []):
            truth[m["id"]] = [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in m["boxes"] if b.get("source") == "render"]
            truth_paths[m["id"]] = m["path"]
    return truth, truth_paths


def _vehicle_level(rows, labels, vehicles, extra, models, cfg: Params, root: Path) -> dict:
    """Vehicle- and frame-level text->image (the vehicles of the split's multi-vehicle frames) per
    model, and box recall at IoU >= 0.5 of each box source against the renderer's exact boxes
    (the LLM's, from the pairs; the detector's when `detect` names one)."""
    e, out = cfg.eval, {}
    for name, (model, proc) in models.items():
        out[name] = vehicle_report(
            extra[name]["img"][vehicles],
            [labels[i] for i in vehicles],
            [rows[i]["frame_id"] for i in vehicles],
            lambda t, m_=model, p_=proc: embed_texts(m_, p_, t),
            [a for a in e.attributes if any(labels[i].get(a) for i in vehicles)],
            e.ks,
            e.map_k,
        )
    truth, truth_paths = _box_truth(rows, vehicles, cfg, root)
    if truth:
        found: dict[str, dict[str, list]] = {}
        for split in ("train", "val", "test"):
            f = resolve(cfg.paths.pairs_dir, root) / f"{split}.jsonl"
            for r in read_jsonl(f) if f.is_file() else []:
                if r.get("box") is not None and r["frame_id"] in truth:
                    found.setdefault(str(r.get("box_source") or "?").split(":")[0], {}).setdefault(
                        r["frame_id"], []
                    ).append(r["box"])
        if cfg.detect.model or cfg.detect.tiny:  # the detector on the same test frames
            frames = [{"id": i, "path": p, "boxes": None} for i, p in truth_paths.items()]
            detect_boxes(frames, root, cfg.detect, cfg.train.seed)
            found["detector"] = {f["id"]: [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in f["boxes"]] for f in frames}
        out["box_recall"] = {src: box_recall(truth, by_frame) for src, by_frame in sorted(found.items())}
    return out


def _score_models(models, rows, labels, cfg: Params, root: Path, log) -> tuple[dict, dict, dict]:
    """(results, curves, query data) of each model on the split, with the query counts and gains."""
    results, curves, extra = {}, {}, {}
    for name, (model, proc) in models.items():
        img = encode_images(model, proc, [root / r["path"] for r in rows], progress=True)
        enc = lambda t, m_=model, p_=proc: embed_texts(m_, p_, t)  # noqa: E731
        m, c, q = full_report(img, labels, enc, cfg.eval)
        # zero-shot top-1 and retrieval AP per body type, colour and view, with bootstrap intervals
        m["per_class"] = per_class_report(img, labels, enc, cfg.eval.zero_shot, cfg.eval.bootstrap)
        results[name], curves[name], extra[name] = m, c, {**q, "img": img}
    texts = extra["base"]["texts"]
    if not texts:
        raise ValueError(
            f"evaluate: no {cfg.eval.split} image has any of {list(cfg.eval.attributes)} labelled; "
            "no text query can be built (add labels, or use caption.backend=bedrock|openai)"
        )
    skipped = results["finetuned"].pop("skipped")
    attrs = results["finetuned"].pop("attributes")
    results["base"].pop("skipped"), results["base"].pop("attributes")
    for what, why in skipped.items():
        log(f"evaluate: skipped {what} queries: {why}")
    results["queries"] = {
        "text_to_image": len(texts),
        "image_to_image": int(results["finetuned"]["image_to_image"].get("queries", 0)),
        "test_images": len(rows),
        "attributes": attrs,
        "skipped": skipped,
        "recall": "hit rate: fraction of queries with >= 1 relevant item in the top k",
    }
    results["gain"] = {
        d: {k: results["finetuned"][d].get(k, 0.0) - results["base"][d].get(k, 0.0) for k in HEADLINE}
        for d in ("text_to_image", "image_to_image")
    }
    return results, curves, extra


def _trained_ids(cfg: Params, root: Path) -> dict:
    """content id -> path of every training/validation image (by the bytes: an eval set must be held out)."""
    pairs_dir = resolve(cfg.paths.pairs_dir, root)
    return {
        content_id((root / r["path"]).read_bytes()): r["path"]
        for split in ("train", "val")
        if (pairs_dir / f"{split}.jsonl").is_file()
        for r in read_jsonl(pairs_dir / f"{split}.jsonl")
    }


def _eval_sets(models, cfg: Params, root: Path, trained, kept: dict, log) -> dict:
    """The user's own labelled photos: never trained on (checked), never captioned."""
    encoders = {
        name: (lambda ps, m_=m, p_=p: encode_images(m_, p_, ps), lambda t, m_=m, p_=p: embed_texts(m_, p_, t))
        for name, (m, p) in models.items()
    }
    sets = evaluate_sets(
        list(cfg.eval.sets),
        root,
        models,
        encoders,
        trained,
        cfg.eval,
        (cfg.data.max_pixels, cfg.data.max_edge),
        plot_dir=resolve(cfg.paths.plots_dir, root) / "sets",
        keep=kept,
        log=log,
    )
    k = cfg.eval.set_k
    for name, r in sets.items():
        if r.get("kind") == "judgments":  # judged queries: reported by evaluation.judged
            continue
        b, f = r["base"], r["finetuned"]
        log(
            f"evaluate[set {name}]: {f['images']} images; text->image P@{k} base "
            f"{b['text_to_image'][f'precision@{k}']:.3f} -> fine-tuned {f['text_to_image'][f'precision@{k}']:.3f}"
            f" | image->image P@{k} {b['image_to_image'][f'precision@{k}']:.3f} -> "
            f"{f['image_to_image'][f'precision@{k}']:.3f}"
        )
    return sets


def _examples(extra, rows, labels, skipped, n_ex: int, root: Path) -> list:
    """Example queries with their top-5 from the fine-tuned model: text queries, then image queries."""
    ft = extra["finetuned"]
    img, txt, rel, texts = ft["img"], ft["txt"], ft["rel"], ft["texts"]
    examples = []
    for q in np.linspace(0, len(texts) - 1, min(n_ex, len(texts))).astype(int):
        order = np.argsort(-(txt[q] @ img.T), kind="stable")[:5]
        examples.append(
            (f'"{texts[q]}"', [(root / rows[i]["path"], float(txt[q] @ img[i]), bool(rel[q, i])) for i in order])
        )
    for q in (
        np.linspace(0, len(rows) - 1, min(max(1, n_ex // 2), len(rows))).astype(int)
        if "image_to_image" not in skipped
        else []
    ):
        s = img[q] @ img.T
        s[q] = -np.inf
        order = np.argsort(-s, kind="stable")[:5]
        key = model_key(labels[q])
        examples.append(
            (
                f"same model as: {key or rows[q]['id']} ({labels[q].get('color', '?')}, {labels[q].get('view', '?')})",
                [(root / rows[i]["path"], float(s[i]), key is not None and model_key(labels[i]) == key) for i in order],
                root / rows[q]["path"],
            )
        )
    return examples


def _calibrate(models, extra, labels, attrs, kept, cfg: Params) -> tuple[dict, dict]:
    """The hit confidence of each model: fitted on every held-out query, judged out-of-fold
    (carsearch.evaluation.calibration); build_index copies the indexed model's."""
    calibs, creports = {}, {}
    for name, (model, proc) in models.items():
        calibs[name], creports[name] = model_calibration(
            name,
            extra[name]["img"],
            extra[name],
            labels,
            attrs,
            kept,
            list(cfg.eval.set_attributes),
            cfg.eval.calibration,
            lambda t, m_=model, p_=proc: embed_texts(m_, p_, t),
            lambda ims, m_=model, p_=proc: encode_images(m_, p_, ims),
        )
    return calibs, creports


def run(cfg: Params, root: Path, log=print) -> EvalResult:
    """Evaluate the base (`model`) and fine-tuned (`paths.model_dir`) models on the `eval.split`
    pairs, the eval sets and the WiSE-FT candidates; writes nothing (see `outputs.write`)."""
    e = cfg.eval
    rows = _split_rows(cfg, root)
    labels = [r.get("labels") or r.get("attributes") or {} for r in rows]
    model_dir = resolve(cfg.paths.model_dir, root)
    models = {"base": load_clip(cfg.model, seed=cfg.train.seed), "finetuned": load_pretrained(model_dir)}
    results, curves, extra = _score_models(models, rows, labels, cfg, root, log)
    attrs, skipped = results["queries"]["attributes"], results["queries"]["skipped"]
    # uncertainty: bootstrap CIs over queries ("recall@5_ci": [lo, hi]) and the per-query results
    ids = [r["id"] for r in rows]
    per_query = {name: query_results(extra[name], labels, ids, attrs, e.ks, e.map_k) for name in models}
    add_intervals(results, per_query, e.bootstrap)
    vehicles = [i for i, r in enumerate(rows) if r.get("box") is not None]  # crops of multi-vehicle frames
    if len(vehicles) >= 2:  # under each model (the gate can decide on e.g. vehicles.vehicle.mrr), box recall apart
        levels = _vehicle_level(rows, labels, vehicles, extra, models, cfg, root)
        for name in models:
            results[name]["vehicles"] = levels[name]
        if levels.get("box_recall"):
            results["box_recall"] = levels["box_recall"]
    kept: dict = {}  # (set, model) -> the set's image vectors and labels (for the calibration)
    alphas = wise_ft_alphas(cfg.index.wise_ft, cfg.model.kind)
    trained = _trained_ids(cfg, root) if e.sets or cfg.index.wise_ft.alphas else {}
    if e.sets:
        results["sets"] = _eval_sets(models, cfg, root, trained, kept, log)
    calibs, creports = _calibrate(models, extra, labels, attrs, kept, cfg)
    # re-ID (VeRi-776 rule) per model and variant, plate search's first hit, the sightings fit
    reid_section(rows, {name: extra[name]["img"] for name in models}, results, calibs, cfg, root, log)
    cand, cand_sets, ccal, crep = wise_ft_candidates(
        models,
        [root / r["path"] for r in rows],
        labels,
        e,
        alphas,
        (cfg.data.max_pixels, cfg.data.max_edge),
        root,
        trained,
        lambda m_, p_, ps: encode_images(m_, p_, ps),
        log=log,
    )
    calibs.update(ccal), creports.update(crep)
    if cand:
        results["candidates"] = cand
        for s_name, by_cand in cand_sets.items():
            results["sets"][s_name].update(by_cand)
    results["calibration"] = creports
    return EvalResult(
        results=_round(results),
        calibs=calibs,
        creports=creports,
        per_query=per_query,
        curves=curves,
        examples=_examples(extra, rows, labels, skipped, e.n_examples, root),
        model_dir=model_dir,
    )
