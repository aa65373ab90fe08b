"""Stage evaluate: retrieval metrics on the test split, untrained base model vs fine-tuned."""

from __future__ import annotations

import json

import numpy as np

from carsearch import tracking
from carsearch.evaluation import attribute_queries, evaluate_embeddings
from carsearch.io import read_jsonl, write_json, write_text
from carsearch.model import encode_images, encode_texts, load_clip, load_pretrained
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve
from carsearch.plots import recall_curves_png, results_grid_png


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["eval"]
    rows = list(read_jsonl(resolve(paths["pairs_dir"], root) / f"{cfg['split']}.jsonl"))
    if len(rows) < 2:
        raise ValueError(f"evaluate: the {cfg['split']} split has {len(rows)} pair(s); need at least 2")
    labels = [r["labels"] for r in rows]
    texts, t2i_rel = attribute_queries(labels, cfg["attributes"], cfg.get("min_relevant", 1))
    model_dir = resolve(paths["model_dir"], root)
    models = {
        "base": load_clip(params["model"], seed=params["train"]["seed"]),
        "finetuned": load_pretrained(model_dir),
    }
    ks = cfg["ks"]
    curve_k = max(ks)
    results, curves, grids = {}, {}, {}
    for name, (model, proc) in models.items():
        img = encode_images(model, proc, [root / r["path"] for r in rows], progress=True)
        txt = encode_texts(model, proc, texts)
        results[name], curves[name] = evaluate_embeddings(img, txt, labels, t2i_rel, ks, curve_k)
        grids[name] = (img, txt)
    results["queries"] = {"text_to_image": len(texts), "test_images": len(rows)}

    metrics_dir = resolve(paths["metrics_dir"], root)
    plots_dir = resolve(paths["plots_dir"], root)
    write_json(metrics_dir / "eval.json", results)
    header = "k," + ",".join(f"{m}_{d}" for m in curves for d in curves[m])
    lines = [header] + [f"{k}," + ",".join(f"{curves[m][d][k - 1]:.4f}" for m in curves for d in curves[m]) for k in range(1, curve_k + 1)]
    write_text(plots_dir / "recall_at_k.csv", "\n".join(lines) + "\n")
    recall_curves_png(curves, plots_dir / "recall_at_k.png")

    # example queries with their top-5 from the fine-tuned model
    img, txt = grids["finetuned"]
    pick = np.linspace(0, len(texts) - 1, min(cfg.get("n_examples", 6), len(texts))).astype(int) if texts else []
    examples = []
    for q in pick:
        order = np.argsort(-(txt[q] @ img.T), kind="stable")[:5]
        examples.append((texts[q], [(root / rows[i]["path"], float(txt[q] @ img[i]), bool(t2i_rel[q, i])) for i in order]))
    results_grid_png(examples, plots_dir / "examples.png")

    run_file = model_dir / "carsearch_run.json"
    if run_file.is_file():
        mlflow = tracking.setup(params["mlflow"])
        run_id = json.loads(run_file.read_text())["mlflow_run_id"]
        with mlflow.start_run(run_id=run_id):
            for name in ("base", "finetuned"):
                for direction, m in results[name].items():
                    mlflow.log_metrics({f"{name}.{direction}.{k.replace('@', '_at_')}": v for k, v in m.items()})
            mlflow.log_artifact(str(plots_dir / "recall_at_k.png"))
            mlflow.log_artifact(str(plots_dir / "examples.png"))
    for name in ("base", "finetuned"):
        t, i = results[name]["text_to_image"], results[name]["image_to_image"]
        print(f"evaluate[{name}]: text->image R@1 {t.get('recall@1', 0):.3f} R@5 {t.get('recall@5', 0):.3f} | "
              f"image->image R@1 {i.get('recall@1', 0):.3f} R@5 {i.get('recall@5', 0):.3f}")


if __name__ == "__main__":
    run_stage(main)
