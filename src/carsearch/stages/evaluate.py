"""Stage evaluate: what users experience when they search, untrained base model vs fine-tuned.

Writes metrics/eval.json (text->image on attribute queries, image->image same model, recall@k
(hit rate), mAP@k, MRR, a by-combination and a zero-shot per-attribute breakdown, and the gain of
the fine-tuned model), recall@k curves (CSV for `dvc plots`, PNG) and a PNG grid of example
queries with their top-5. Fits each model's hit confidence on the held-out labelled queries
(metrics/calibration.json, ECE and confident precision/coverage in eval.json, reliability.png) and
scores the WiSE-FT candidates (`index.wise_ft`) for the gate. Logs it all into the fine-tuning
MLflow run and tags the registered model version with the metrics.
"""

from __future__ import annotations

import json
import os

import numpy as np

from carsearch.core.io import read_jsonl, write_json, write_text
from carsearch.core.params import load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.curation.corpus import detect_boxes
from carsearch.evaluation.calibration import reliability_png
from carsearch.evaluation.candidates import model_calibration, wise_ft_candidates
from carsearch.evaluation.evalsets import evaluate_sets
from carsearch.evaluation.kinds import flat_metrics, reliability_inputs, report_lines
from carsearch.evaluation.plots import recall_curves_png, results_grid_png
from carsearch.evaluation.protocol import embed_texts, full_report
from carsearch.evaluation.stats import add_intervals, query_results, write_query_csv
from carsearch.evaluation.vehicles import box_recall, vehicle_report
from carsearch.experiments import tracking
from carsearch.model.clip import encode_images, load_clip, load_pretrained
from carsearch.sources.files import content_id
from carsearch.sources.labels import model_key

HEADLINE = ("recall@1", "recall@5", "recall@10", "map@10", "mrr")


def _round(x):
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    return x


def _vehicle_level(rows, labels, vehicles, extra, models, params, root) -> dict:
    """Vehicle- and frame-level text->image (the vehicles of the split's multi-vehicle frames) per
    model, and box recall at IoU >= 0.5 of each box source against the renderer's exact boxes
    (the LLM's, from the pairs; the detector's when `detect` names one)."""
    cfg, paths, out = params["eval"], params["paths"], {}
    for name, (model, proc) in models.items():
        out[name] = vehicle_report(
            extra[name]["img"][vehicles],
            [labels[i] for i in vehicles],
            [rows[i]["frame_id"] for i in vehicles],
            lambda t, m_=model, p_=proc: embed_texts(m_, p_, t),
            [a for a in cfg["attributes"] if any(labels[i].get(a) for i in vehicles)],
            cfg["ks"],
            int(cfg["map_k"]),
        )
    truth, truth_paths = {}, {}  # frame id -> the renderer's boxes (test frames only), its file
    test_frames = {rows[i]["frame_id"] for i in vehicles}
    for m in read_jsonl(resolve(paths["manifest"], root)):
        if m["id"] in test_frames and any(b.get("source") == "render" for b in m.get("boxes") or []):
            truth[m["id"]] = [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in m["boxes"] if b.get("source") == "render"]
            truth_paths[m["id"]] = m["path"]
    if truth:
        found: dict[str, dict[str, list]] = {}
        for split in ("train", "val", "test"):
            f = resolve(paths["pairs_dir"], root) / f"{split}.jsonl"
            for r in read_jsonl(f) if f.is_file() else []:
                if r.get("box") is not None and r["frame_id"] in truth:
                    found.setdefault(str(r.get("box_source") or "?").split(":")[0], {}).setdefault(
                        r["frame_id"], []
                    ).append(r["box"])
        spec = params["detect"]
        if spec["model"] or spec["tiny"]:  # the detector on the same test frames
            frames = [{"id": i, "path": p, "boxes": None} for i, p in truth_paths.items()]
            detect_boxes(frames, root, spec, int(params["train"]["seed"]))
            found["detector"] = {f["id"]: [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in f["boxes"]] for f in frames}
        out["box_recall"] = {src: box_recall(truth, by_frame) for src, by_frame in sorted(found.items())}
    return out


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["eval"]
    split_file = resolve(paths["pairs_dir"], root) / f"{cfg['split']}.jsonl"
    rows = list(read_jsonl(split_file)) if split_file.is_file() else []
    if len(rows) < 2:
        raise ValueError(
            f"evaluate: the {cfg['split']} split ({paths['pairs_dir']}/{cfg['split']}.jsonl) has "
            f"{len(rows)} pair(s); retrieval needs at least 2 images"
        )
    labels = [r.get("labels") or r.get("attributes") or {} for r in rows]
    model_dir = resolve(paths["model_dir"], root)
    models = {
        "base": load_clip(params["model"], seed=params["train"]["seed"]),
        "finetuned": load_pretrained(model_dir),
    }
    results, curves, extra = {}, {}, {}
    for name, (model, proc) in models.items():
        img = encode_images(model, proc, [root / r["path"] for r in rows], progress=True)
        m, c, q = full_report(img, labels, lambda t, m_=model, p_=proc: embed_texts(m_, p_, t), cfg)
        results[name], curves[name], extra[name] = m, c, {**q, "img": img}
    texts = extra["base"]["texts"]
    if not texts:
        raise ValueError(
            f"evaluate: no {cfg['split']} image has any of {cfg['attributes']} labelled; "
            "no text query can be built (add labels, or use caption.backend=bedrock|openai)"
        )
    skipped = results["finetuned"].pop("skipped")
    attrs = results["finetuned"].pop("attributes")
    results["base"].pop("skipped"), results["base"].pop("attributes")
    for what, why in skipped.items():
        print(f"evaluate: skipped {what} queries: {why}")
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
    # uncertainty: bootstrap CIs over queries ("recall@5_ci": [lo, hi]) and the per-query results
    per_query = {
        name: query_results(extra[name], labels, [r["id"] for r in rows], attrs, cfg["ks"], int(cfg["map_k"]))
        for name in models
    }
    add_intervals(results, per_query, cfg["bootstrap"])
    vehicles = [i for i, r in enumerate(rows) if r.get("box") is not None]  # crops of multi-vehicle frames
    if len(vehicles) >= 2:  # under each model (the gate can decide on e.g. vehicles.vehicle.mrr), box recall apart
        levels = _vehicle_level(rows, labels, vehicles, extra, models, params, root)
        for name in models:
            results[name]["vehicles"] = levels[name]
        if levels.get("box_recall"):
            results["box_recall"] = levels["box_recall"]
    kept: dict = {}  # (set, model) -> the set's image vectors and labels (for the calibration)
    trained: dict = {}
    pairs_dir = resolve(paths["pairs_dir"], root)
    if cfg["sets"] or params["index"]["wise_ft"]["alphas"]:
        # by the content of the files trained on (ingest's ids are content hashes too, but check the bytes)
        trained = {
            content_id((root / r["path"]).read_bytes()): r["path"]
            for split in ("train", "val")
            if (pairs_dir / f"{split}.jsonl").is_file()
            for r in read_jsonl(pairs_dir / f"{split}.jsonl")
        }
    if cfg["sets"]:  # the user's own labelled photos: never trained on (checked), never captioned
        encoders = {
            name: (lambda ps, m_=m, p_=p: encode_images(m_, p_, ps), lambda t, m_=m, p_=p: embed_texts(m_, p_, t))
            for name, (m, p) in models.items()
        }
        results["sets"] = evaluate_sets(
            list(cfg["sets"]),
            root,
            models,
            encoders,
            trained,
            cfg,
            plot_dir=resolve(paths["plots_dir"], root) / "sets",
            keep=kept,
        )
        for name, r in results["sets"].items():
            if r.get("kind") == "judgments":  # judged queries: reported by evaluation.judged
                continue
            k = int(cfg["set_k"])
            print(
                f"evaluate[set {name}]: {r['finetuned']['images']} images; text->image P@{k} base "
                f"{r['base']['text_to_image'][f'precision@{k}']:.3f} -> fine-tuned {r['finetuned']['text_to_image'][f'precision@{k}']:.3f}"
                f" | image->image P@{k} {r['base']['image_to_image'][f'precision@{k}']:.3f} -> "
                f"{r['finetuned']['image_to_image'][f'precision@{k}']:.3f}"
            )
    # the hit confidence of each model (and WiSE-FT candidate): fitted on every held-out query,
    # judged out-of-fold (carsearch.evaluation.calibration); build_index copies the indexed model's
    calibs, creports = {}, {}
    for name, (model, proc) in models.items():
        calibs[name], creports[name] = model_calibration(
            name,
            extra[name]["img"],
            extra[name],
            labels,
            attrs,
            kept,
            list(cfg["set_attributes"]),
            cfg["calibration"],
            lambda t, m_=model, p_=proc: embed_texts(m_, p_, t),
            lambda ims, m_=model, p_=proc: encode_images(m_, p_, ims),
        )
    cand, cand_sets, ccal, crep = wise_ft_candidates(
        models,
        [root / r["path"] for r in rows],
        labels,
        params,
        root,
        trained,
        lambda m_, p_, ps: encode_images(m_, p_, ps),
    )
    calibs.update(ccal), creports.update(crep)
    if cand:
        results["candidates"] = cand
        for s_name, by_cand in cand_sets.items():
            results["sets"][s_name].update(by_cand)
    results["calibration"] = creports
    results = _round(results)

    metrics_dir = resolve(paths["metrics_dir"], root)
    plots_dir = resolve(paths["plots_dir"], root)
    write_json(metrics_dir / "eval.json", results)
    write_json(metrics_dir / "calibration.json", calibs)
    reliability_png(reliability_inputs(creports.get("finetuned", {})), plots_dir / "reliability.png")
    write_query_csv(metrics_dir / "eval_queries.csv", per_query)
    curve_k = len(next(iter(curves["base"].values())))
    cols = [(m, d) for m in curves for d in curves[m]]
    lines = ["k," + ",".join(f"{m}_{d}" for m, d in cols)]
    lines += [f"{k}," + ",".join(f"{curves[m][d][k - 1]:.4f}" for m, d in cols) for k in range(1, curve_k + 1)]
    write_text(plots_dir / "recall_at_k.csv", "\n".join(lines) + "\n")
    recall_curves_png(curves, plots_dir / "recall_at_k.png")

    # example queries with their top-5 from the fine-tuned model: text queries, then image queries
    ft = extra["finetuned"]
    img, txt, rel = ft["img"], ft["txt"], ft["rel"]
    n_ex = int(cfg["n_examples"])
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
    results_grid_png(examples, plots_dir / "examples.png")

    run_file = model_dir / "carsearch_run.json"
    if run_file.is_file():
        info = json.loads(run_file.read_text())
        mlflow = tracking.setup(params["mlflow"])
        with mlflow.start_run(run_id=info["mlflow_run_id"]):
            flat = {}
            for name in ("base", "finetuned"):
                for direction in ("text_to_image", "image_to_image"):
                    for k, v in results[name][direction].items():
                        if isinstance(v, (int, float)):
                            flat[f"{name}.{direction}.{k.replace('@', '_at_')}"] = v
                for a, z in results[name]["zero_shot"].items():
                    flat[f"{name}.zero_shot.{a}.accuracy"] = z["accuracy"]
                for level, m in {
                    k: v for k, v in results[name].get("vehicles", {}).items() if isinstance(v, dict)
                }.items():
                    flat.update({f"{name}.vehicles.{level}.{k.replace('@', '_at_')}": v for k, v in m.items()})
            for name, rep in creports.items():  # the calibration, held out, per query kind and source
                flat.update(flat_metrics(name, rep))
            for name, c in results.get("candidates", {}).items():  # every WiSE-FT candidate's figures
                for d in ("text_to_image", "image_to_image"):
                    flat.update({f"{name}.{d}.{k.replace('@', '_at_')}": v for k, v in c[d].items() if k in HEADLINE})
            mlflow.log_metrics(flat)
            mlflow.log_artifact(str(metrics_dir / "eval.json"))
            mlflow.log_artifact(str(metrics_dir / "calibration.json"))
            for f in ("recall_at_k.png", "examples.png", "recall_at_k.csv", "reliability.png"):
                mlflow.log_artifact(str(plots_dir / f), artifact_path="plots")
        tracking.tag_model_version(
            info.get("registered_model") or {},
            {
                f"{name}.{d}.{k}": results[name][d][k]
                for name in ("base", "finetuned")
                for d in ("text_to_image", "image_to_image")
                for k in HEADLINE
                if k in results[name][d]
            },
        )
    for name in ("base", "finetuned") if "vehicles" in results["base"] else ():
        v = results[name]["vehicles"]
        print(
            f"evaluate[{name}, vehicles]: {v['vehicles']} vehicles in {v['frames']} frames; vehicle text->image "
            f"R@5 {v['vehicle'].get('recall@5', 0):.3f} MRR {v['vehicle'].get('mrr', 0):.3f} | frame R@5 "
            f"{v['frame'].get('recall@5', 0):.3f}"
        )
    for src, r in results.get("box_recall", {}).items():
        print(f"evaluate: box recall of {src} boxes at IoU >= {r['iou']}: {r['recall']:.3f} ({r['truth']} true boxes)")
    for line in (x for name, rep in creports.items() for x in report_lines(name, rep)):
        print(line)
    for name in ("base", "finetuned"):
        t, i = results[name]["text_to_image"], results[name]["image_to_image"]
        print(
            f"evaluate[{name}]: text->image R@1 {t.get('recall@1', 0):.3f} R@5 {t.get('recall@5', 0):.3f} "
            f"mAP@10 {t.get('map@10', 0):.3f} | image->image R@1 {i.get('recall@1', 0):.3f} "
            f"R@5 {i.get('recall@5', 0):.3f} mAP@10 {i.get('map@10', 0):.3f}"
        )


if __name__ == "__main__":
    run_stage(main)
