"""The finetune_clip stage's work, as a library (no MLflow, no evaluation import: the stage logs
through the hooks and builds the validation): `load_pairs`, `run_settings` (this run's train
section), then `carsearch.training.loop.train_clip`, then `summary` / `loss_csv` / `val_csv` for
metrics/train.json and the curves."""

from __future__ import annotations

from pathlib import Path

from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.schema import EarlyStopping, Paths, Train
from carsearch.training.loop import TrainResult


def _say(line: str) -> None:
    print(line, flush=True)


def load_pairs(paths: Paths, root: Path) -> tuple[list[dict], list[dict]]:
    """The train and val pairs; one line when the train split is too small to train on."""
    pairs_dir = resolve(paths.pairs_dir, root)
    train = list(read_jsonl(pairs_dir / "train.jsonl"))
    if len(train) < 2:
        raise ValueError(
            f"finetune_clip: the train split ({paths.pairs_dir}/train.jsonl) has {len(train)} pair(s); "
            "contrastive training needs at least 2"
        )
    val_file = pairs_dir / "val.jsonl"
    return train, list(read_jsonl(val_file)) if val_file.is_file() else []


def run_settings(t: Train, root: Path, n_val: int, validated: bool, main_process: bool = True, log=_say) -> Train:
    """This run's train section: without validation no early stopping (the last epoch is kept);
    `checkpoint_dir` resolved against the repo root."""
    if not validated:
        if main_process:
            log(
                f"finetune_clip: warning: the val split has {n_val} pair(s) (< 2); no validation, "
                "no early stopping, the last epoch is kept"
            )
        t = t.model_copy(update={"early_stopping": EarlyStopping(metric=None, patience=0, min_delta=0.0)})
    if t.checkpoint_dir:
        t = t.model_copy(update={"checkpoint_dir": str(resolve(t.checkpoint_dir, root))})
    return t


def summary(cfg: Train, train: list, val: list, res: TrainResult, world: int, seconds: float) -> dict:
    """metrics/train.json (`cfg`: this run's train section)."""
    return {
        "final_loss": round(res.losses[-1], 6),
        "steps": len(res.losses),
        "epochs_run": len(res.history),
        "best_epoch": res.best_epoch,
        "stopped_early": res.stopped_early,
        "best_val": None if res.best_score is None else round(res.best_score, 4),
        "early_stopping_metric": cfg.early_stopping.metric if cfg.early_stopping else None,
        "resumed_from_epoch": res.resumed_from_epoch,
        "train_pairs": len(train),
        "val_pairs": len(val),
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
