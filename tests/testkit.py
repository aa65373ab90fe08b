"""Small, fast fixtures shared by the tests of training, evaluation and indexing (not used by the
pipeline): a very small CLIP spec and a labelled demo data set written as curated pairs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "clip_test",
    "kind": "tiny",
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 2,
    "vision_heads": 2,
    "text_width": 32,
    "text_layers": 2,
    "text_heads": 2,
    "max_text_len": 24,
    "projection_dim": 16,
}


def write_pairs(
    root: Path, n: dict[str, int] | None = None, size: int = 48, seed: int = 0, views: list[str] | None = None
) -> dict[str, list[dict]]:
    """Demo drawings into root/data/raw/images and root/data/pairs/{split}.jsonl (offline captions;
    `views`: only these views, default all)."""
    from carsearch.captioning.offline import offline_caption
    from carsearch.sources.demo import demo_items

    n = n or {"train": 24, "val": 8, "test": 12}
    total = sum(n.values())
    img_dir = root / "data" / "raw" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (_, data, labels, _) in enumerate(
        demo_items(total, size, seed, colors=["red", "blue", "green"], views=views)
    ):
        rid = f"img{i:04d}"
        (img_dir / f"{rid}.jpg").write_bytes(data)
        cap = offline_caption(labels, rid)
        rows.append(
            {
                "id": rid,
                "path": f"data/raw/images/{rid}.jpg",
                "caption": cap["caption"],
                "attributes": {k: cap[k] for k in ("make", "model", "body_type", "color", "view")},
                "labels": labels,
            }
        )
    out, start = {}, 0
    manifest = [{"id": r["id"], "path": r["path"], "source": "demo", "labels": r["labels"]} for r in rows]
    (root / "data" / "raw" / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    pairs = root / "data" / "pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    for split, k in n.items():
        out[split] = rows[start : start + k]
        start += k
        (pairs / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out[split]))
    return out


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, dicts merged at every depth (a copy)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def composed_params(over: dict | None = None) -> dict:
    """params.yaml as DVC composes it from conf/ (the committed default composition, which
    tests/test_config.py checks), with `over` merged on top: what a stage sees, complete."""
    return merge(yaml.safe_load((REPO / "params.yaml").read_text()), over or {})


def section(name: str, **over):
    """One composed section, typed (`section("eval", ks=[1, 5]).ks`): what a stage passes to the library."""
    from carsearch.core.schema import validate_params

    return getattr(validate_params(composed_params({name: over})), name)


def write_params(root: Path, train: dict | None = None, **over) -> dict:
    """A params.yaml as DVC would compose it from conf/, with the test model and fast training."""
    params = {
        "paths": {
            "manifest": "data/raw/manifest.jsonl",
            "pairs_dir": "data/pairs",
            "model_dir": "models/finetuned",
            "index_dir": "data/index",
            "metrics_dir": "metrics",
            "plots_dir": "metrics/plots",
        },
        "model": dict(TINY),
        "train": {
            "lr": 2e-3,
            "epochs": 2,
            "batch_size": 8,
            "seed": 0,
            "weight_decay": 0.1,
            "warmup_ratio": 0.1,
            "augment": {"shift": 2, "flip": True},
            "checkpoint_dir": "models/checkpoints/finetune_clip",
            "early_stopping": {"metric": "val_recall@5", "patience": 0},
            "log_every": 1,
            **(train or {}),
        },
        "eval": {
            "ks": [1, 5, 10],
            "map_k": 10,
            "split": "test",
            "attributes": ["color", "body_type", "view"],
            "by_combo": True,
            "zero_shot": ["color", "body_type", "model", "view"],
            "min_relevant": 1,
            "n_examples": 4,
        },
        "index": {
            "table": "cars",
            "metric": "cosine",
            "ann_min_rows": 100000,
            "num_partitions": 8,
            "promote": {"metric": "text_to_image.recall@5", "min_gain": 0.0},
        },
        "curate": {"splits": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "mlflow": {
            "tracking_uri": "sqlite:///mlruns.db",
            "experiment": "carsearch-test",
            "registered_model": "carsearch-clip",
        },
        "seed": 0,
    }
    for k, v in over.items():
        params[k] = {**params[k], **v} if isinstance(v, dict) and isinstance(params.get(k), dict) else v
    model = params["model"]  # a whole model config (tiny or pretrained), not merged into the default one
    params = {**composed_params(params), "model": model}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").touch()
    return params
