"""Stage build_index: embed every curated image into LanceDB with the promoted model.

Promotion gate: the fine-tuned model is used only if it beats the base model on
`index.promote.metric` (from metrics/eval.json, e.g. `text_to_image.recall@5`) by more than
`index.promote.min_gain`; otherwise the base model (saved into the index folder so search can
load it). metrics/index.json says which model, why, and which registered MLflow version and
content hash built the index.
"""

from __future__ import annotations

import json
import os
import shutil

from carsearch import tracking
from carsearch.index import META_FILE, build_table, dir_hash
from carsearch.io import read_jsonl, write_json
from carsearch.model import encode_images, load_clip, load_pretrained, save_clip
from carsearch.params import ParamsError, load_params, run_stage
from carsearch.paths import repo_root, resolve

BASE_SUBDIR = "base_model"


def promotion_decision(eval_metrics: dict, metric: str, min_gain: float = 0.0) -> dict:
    """{"use": "finetuned"|"base", "reason", "metric", "finetuned", "base"} from eval.json content."""

    def get(name: str) -> float:
        cur = eval_metrics.get(name, {})
        for part in metric.split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise ParamsError(f"index.promote.metric: {metric!r} not in eval.json[{name!r}] "
                                  f"(e.g. text_to_image.recall@5, image_to_image.map@10)")
            cur = cur[part]
        return float(cur)

    ft, base = get("finetuned"), get("base")
    gain = ft - base
    use = "finetuned" if gain > min_gain else "base"
    cmp = ">" if use == "finetuned" else "<="
    reason = (f"fine-tuned {metric} {ft:.4f} {cmp} base {base:.4f} + min_gain {min_gain:g}"
              + ("" if use == "finetuned" else ": fine-tuning did not pay, indexing with the base model"))
    return {"use": use, "reason": reason, "metric": metric, "finetuned": round(ft, 4), "base": round(base, 4),
            "gain": round(gain, 4), "min_gain": min_gain}


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["index"]
    pairs_dir = resolve(paths["pairs_dir"], root)
    rows = []
    for split in params["curate"]["splits"]:
        f = pairs_dir / f"{split}.jsonl"
        for r in read_jsonl(f) if f.is_file() else []:
            rows.append({**r, "split": split})
    if not rows:
        raise ValueError(f"build_index: no curated pairs in {paths['pairs_dir']}; nothing to index")
    promote = cfg.get("promote") or {}
    eval_file = resolve(paths["metrics_dir"], root) / "eval.json"
    if promote.get("metric"):
        if not eval_file.is_file():
            raise FileNotFoundError(f"build_index: {eval_file} not found; run the evaluate stage first")
        decision = promotion_decision(json.loads(eval_file.read_text()), promote["metric"], float(promote.get("min_gain", 0.0)))
    else:
        decision = {"use": "finetuned", "reason": "no promotion gate configured (index.promote.metric: null)"}

    ft_dir = resolve(paths["model_dir"], root)
    index_dir = resolve(paths["index_dir"], root)
    shutil.rmtree(index_dir, ignore_errors=True)
    registered = None
    if decision["use"] == "finetuned":
        model, processor = load_pretrained(ft_dir)
        model_dir_rel, content = paths["model_dir"], dir_hash(ft_dir)
        run_file = ft_dir / "carsearch_run.json"
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        reg = run.get("registered_model") or {}
        registered = {"name": reg.get("name"), "version": reg.get("version"), "mlflow_run_id": run.get("mlflow_run_id"),
                      "content_hash": content, "registry_checked": False}
        if reg:
            tracking.setup(params["mlflow"])
            mv = tracking.find_model_version(reg)
            if mv is not None:
                registered["registry_checked"] = True
                if mv["tags"].get("content_hash") not in (None, content):
                    raise ValueError(f"build_index: {paths['model_dir']} (hash {content}) is not what "
                                     f"{reg['name']} v{reg['version']} registered ({mv['tags']['content_hash']})")
    else:
        spec = params["model"]
        model, processor = load_clip(spec, seed=params["train"]["seed"])
        if spec.get("kind") == "pretrained":
            model_dir_rel = spec["pretrained"]
            content = dir_hash(resolve(model_dir_rel, root)) if resolve(model_dir_rel, root).is_dir() else f"hub:{model_dir_rel}"
        else:  # a random-init tiny model exists nowhere else: ship it inside the index
            save_clip(model, processor, index_dir / BASE_SUBDIR)
            model_dir_rel = f"{paths['index_dir']}/{BASE_SUBDIR}"
            content = dir_hash(index_dir / BASE_SUBDIR)
        registered = {"name": None, "version": None, "base_model": spec.get("name"), "content_hash": content}
    vectors = encode_images(model, processor, [root / r["path"] for r in rows], progress=True)
    model_ref = f"{model_dir_rel}@{content}"
    _, kind = build_table(index_dir, cfg["table"], rows, vectors, model_ref, cfg)
    summary = {"rows": len(rows), "dim": int(vectors.shape[1]), "search": kind, "model": decision["use"],
               "model_dir": model_dir_rel, "model_ref": model_ref, "content_hash": content,
               "registered_model": registered, "promotion": decision}
    write_json(index_dir / META_FILE, {"table": cfg["table"], "metric": cfg["metric"], **summary})
    write_json(resolve(paths["metrics_dir"], root) / "index.json", summary)
    reg_txt = f", registered {registered['name']} v{registered['version']}" if registered and registered.get("version") else ""
    print(f"build_index: {len(rows)} images into {paths['index_dir']}/{cfg['table']} ({kind}) with the "
          f"{decision['use']} model {model_ref}{reg_txt}; {decision['reason']}")


if __name__ == "__main__":
    run_stage(main)
