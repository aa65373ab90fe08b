"""metrics/summary.json: the few figures that tell experiments apart, for `dvc exp show`.

DVC shows every metric and every param as a column, and has no setting for its default columns.
So the stages write their full figures to their own files (metrics/<stage>.json, plain outputs:
`dvc metrics diff --targets metrics/eval.json`), and the `summarize` stage writes this one, the
only declared metric: what changed (the params that differ from conf/'s defaults, e.g.
`lr=0.0001`) and the headline numbers (quality of the indexed model, data, cost). `dvc exp show`
and `dvc metrics diff` then start with what a reviewer reads first.

"Changed" is against the default composition of conf/ (a declared dependency), not against a git
revision: the same params give the same summary on every machine and in every commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from carsearch.core.params import changed_keys, flatten

# column -> (file in metrics/, dotted key); a missing file or key is left out, not an error
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("t2i_R@5", "eval.json", "finetuned.text_to_image.recall@5"),
    ("t2i_R@5_gain", "eval.json", "gain.text_to_image.recall@5"),
    ("t2i_mAP@10", "eval.json", "finetuned.text_to_image.map@10"),
    ("i2i_R@5", "eval.json", "finetuned.image_to_image.recall@5"),
    ("i2i_R@5_gain", "eval.json", "gain.image_to_image.recall@5"),
    ("veh_R@5", "eval.json", "finetuned.vehicles.vehicle.recall@5"),  # vehicles of street frames (AI City)
    ("veh_MRR", "eval.json", "finetuned.vehicles.vehicle.mrr"),
    # re-ID across cameras (VeRi-776 rule, evaluation.reid): appearance only, base and fine-tuned, and fused
    ("reid_mAP", "eval.json", "finetuned.reid.appearance.map"),
    ("reid_mAP_base", "eval.json", "base.reid.appearance.map"),
    ("reid_R1_fused", "eval.json", "finetuned.reid.network.rank1"),
    ("plate_1err_R", "eval.json", "plates.errors_1.recall"),  # plate search: the right vehicle first, one OCR error
    ("val_best", "train.json", "best_val"),
    ("epochs_run", "train.json", "epochs_run"),
    ("train_pairs", "train.json", "train_pairs"),
    ("caption_failed", "caption.json", "failed"),
    ("caption_usd", "caption.json", "estimated_usd"),
    ("index_model", "index.json", "model"),
    ("index_rows", "index.json", "rows"),
)
# every stage's full figures (plain outputs): what `carsearch report` diffs
STAGE_FILES = ("ingest.json", "caption.json", "curate.json", "train.json", "eval.json", "index.json")
MAX_CHANGED = 6  # keys named in the `changed` column; the rest are counted


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def default_params(conf_dir: Path) -> dict | None:
    """conf/ composed with no override (what params.yaml is before any `-S`); None if it cannot be."""
    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base=None):
            return OmegaConf.to_container(compose("config"), resolve=True)
    except Exception:  # noqa: BLE001 - no conf/ or it does not compose: summary says so
        return None


def changed(params: dict, defaults: dict | None) -> str:
    """`lr=0.0001, train.loss=siglip` (sorted; `(defaults)` when nothing differs)."""
    if defaults is None:
        return "(conf/ did not compose)"
    now, keys = flatten(params), changed_keys(params, defaults)
    # a swept top-level key (lr) shows once, not again as each group key interpolating it (train.lr)
    top = {k for k in keys if "." not in k}
    keys = [
        k
        for k in keys
        if not ("." in k and k.rsplit(".", 1)[-1] in top and now.get(k) == now.get(k.rsplit(".", 1)[-1]))
    ]
    if not keys:
        return "(defaults)"
    shown = [f"{k}={now.get(k, '<unset>')}" for k in keys[:MAX_CHANGED]]
    more = len(keys) - MAX_CHANGED
    return ", ".join(shown) + (f", … (+{more})" if more > 0 else "")


def summary(metrics_dir: Path, params: dict, defaults: dict | None) -> dict:
    out: dict[str, Any] = {"changed": changed(params, defaults)}
    files: dict[str, Any] = {}
    for column, name, key in HEADLINE:
        if name not in files:
            p = metrics_dir / name
            try:
                files[name] = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
            except (OSError, ValueError):
                files[name] = None
        v = _get(files[name], key)
        if v is not None:
            out[column] = v
    # the user's own labelled photos (eval.sets): one column per set
    for set_name, r in sorted(((files.get("eval.json") or {}).get("sets") or {}).items()):
        t2i = _get(r, "finetuned.text_to_image")
        if isinstance(t2i, dict):
            for k, v in sorted(t2i.items()):
                if k.startswith("precision@") and isinstance(v, (int, float)):
                    out[f"set_{set_name}_t2i_{k}"] = v
                    break
            if isinstance(t2i.get("pairwise"), (int, float)):  # judged queries (kind judgments): ✓ above ✗
                out[f"set_{set_name}_pairwise"] = t2i["pairwise"]
    return out
