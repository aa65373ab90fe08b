"""The finetune_clip stage's work, as a library (no MLflow: the stage logs through the hooks):
`prepare(cfg, root, dist) -> Prepared` (the pairs, the model, the per-epoch validation, this run's
train section), then `carsearch.training.loop.train_clip`, then `summary` / `loss_csv` / `val_csv`
for metrics/train.json and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.schema import EarlyStopping, Params, Train
from carsearch.evaluation.evalsets import EvalSetError, set_validation_fn
from carsearch.evaluation.protocol import validation_fn
from carsearch.features.sources import content_id
from carsearch.model.clip import load_clip
from carsearch.training.loop import TrainResult


@dataclass
class Prepared:
    train: list[dict]
    val: list[dict]
    model: object
    processor: object
    validate: Callable | None
    cfg: Train  # this run's train section: no validation -> no early stopping; checkpoint_dir resolved


def with_eval_sets(validate, cfg: Params, root: Path, processor, trained_pairs: list[dict]):
    """Add `train.val_sets` (names of eval.sets: the user's labelled photos) to the per-epoch
    validation, so best epoch / early stopping can follow the photos users search
    (`train.early_stopping.metric: <set>_precision@5`)."""
    names = list(cfg.train.val_sets)
    if not names:
        return validate
    specs = {s.name: s for s in cfg.eval.sets}
    missing = [n for n in names if n not in specs]
    if missing:
        raise EvalSetError(f"train.val_sets: {missing} not in eval.sets ({sorted(specs) or 'none configured'})")
    trained = {content_id((root / p["path"]).read_bytes()): p["path"] for p in trained_pairs}
    limits = (cfg.data.max_pixels, cfg.data.max_edge)
    fns = [set_validation_fn(specs[n], root, processor, cfg.eval, trained, limits) for n in names]

    def validate_all(model) -> dict:
        out = dict(validate(model)) if validate else {}
        for f in fns:
            out.update(f(model))
        return out

    return validate_all


def _say(line: str) -> None:
    print(line, flush=True)


def prepare(cfg: Params, root: Path, main_process: bool = True, log=_say) -> Prepared:
    """The train and val pairs, the base model, the validation; raises one line when the train
    split is too small."""
    pairs_dir = resolve(cfg.paths.pairs_dir, root)
    train = list(read_jsonl(pairs_dir / "train.jsonl"))
    if len(train) < 2:
        raise ValueError(
            f"finetune_clip: the train split ({cfg.paths.pairs_dir}/train.jsonl) has {len(train)} pair(s); "
            "contrastive training needs at least 2"
        )
    val_file = pairs_dir / "val.jsonl"
    val = list(read_jsonl(val_file)) if val_file.is_file() else []
    t = cfg.train
    model, processor = load_clip(cfg.model, seed=t.seed)
    validate = with_eval_sets(
        validation_fn(processor, val, root, cfg.eval.as_dict()), cfg, root, processor, train + val
    )
    if validate is None:
        if main_process:
            log(
                f"finetune_clip: warning: the val split has {len(val)} pair(s) (< 2); no validation, "
                "no early stopping, the last epoch is kept"
            )
        t = t.model_copy(update={"early_stopping": EarlyStopping(metric=None, patience=0, min_delta=0.0)})
    if t.checkpoint_dir:
        t = t.model_copy(update={"checkpoint_dir": str(resolve(t.checkpoint_dir, root))})
    return Prepared(train, val, model, processor, validate, t)


def summary(p: Prepared, res: TrainResult, world: int, seconds: float) -> dict:
    """metrics/train.json."""
    return {
        "final_loss": round(res.losses[-1], 6),
        "steps": len(res.losses),
        "epochs_run": len(res.history),
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "best_val": None if res.best_score is None else round(res.best_score, 4),
        "early_stopping_metric": p.cfg.early_stopping.metric if p.cfg.early_stopping else None,
        "resumed_from_epoch": res.resumed_from_epoch,
        "train_pairs": len(p.train),
        "val_pairs": len(p.val),
        "world_size": world,
        "train_seconds": round(seconds, 1),
        **res.counts,
    }


def loss_csv(steps: list[tuple[int, float, float]]) -> str:
    return "step,loss,lr\n" + "".join(f"{s},{l:.6f},{lr:.3e}\n" for s, l, lr in steps)


def val_csv(epochs: list[dict]) -> str:
    keys = sorted({k for e in epochs for k in e if k not in ("epoch", "stopped")})
    rows = "".join(f"{e['epoch']}," + ",".join(f"{float(e.get(k, 0)):.5g}" for k in keys) + "\n" for e in epochs)
    return "epoch," + ",".join(keys) + "\n" + rows
