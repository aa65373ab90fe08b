"""Stage finetune_clip: contrastive fine-tuning of the configured CLIPModel on the train split,
validated each epoch on the val split (early stopping, best weights kept), checkpointed each epoch
(a killed run resumes), logged to MLflow and registered in its model registry.

Single process: `python -m carsearch.stages.finetune_clip`. Data parallel, same code:
`torchrun --standalone --nproc_per_node N -m carsearch.stages.finetune_clip` (gloo on CPU, nccl on GPU);
only rank 0 logs and writes outputs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from carsearch.core.io import atomic_dir, clean_stale, dir_hash, write_json, write_text
from carsearch.core.params import check_params, flatten, load_config, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.provenance import stamped
from carsearch.core.schema import Params, Train
from carsearch.evaluation.evalsets import with_val_sets
from carsearch.evaluation.protocol import validation_fn
from carsearch.experiments import tracking
from carsearch.model.clip import load_clip, save_clip
from carsearch.training.distributed import init_distributed
from carsearch.training.feedback import feedback_term
from carsearch.training.loop import train_clip
from carsearch.training.run import load_pairs, loss_csv, run_settings, summary, val_csv


@dataclass
class Prepared:
    train: list[dict]
    val: list[dict]
    model: object
    processor: object
    validate: Callable | None
    cfg: Train  # this run's train section (training.run.run_settings)


def prepare(cfg: Params, root, main_process: bool) -> Prepared:
    """The pairs, the base model, the per-epoch validation (val split + `train.val_sets`), this run's settings."""
    train, val = load_pairs(cfg.paths, root)
    model, processor = load_clip(cfg.model.as_dict(), seed=cfg.train.seed)
    validate = with_val_sets(
        validation_fn(processor, val, root, cfg.eval),
        list(cfg.train.val_sets),
        cfg.eval,
        (cfg.data.max_pixels, cfg.data.max_edge),
        root,
        processor,
        train + val,
    )
    t = run_settings(cfg.train, root, len(val), validate is not None, main_process)
    return Prepared(train, val, model, processor, validate, t)


def _mlflow_name(k: str) -> str:
    return k.replace("@", "_at_")


def _hooks(mlflow, cfg: Train, main_process: bool, steps: list, epochs: list):
    """(on_step, on_epoch) for `train_clip`: collect the curves, log them to MLflow, print each epoch."""

    def on_step(step: int, loss: float, lr: float) -> None:
        steps.append((step, loss, lr))
        if mlflow and step % cfg.log_every == 0:
            mlflow.log_metrics({"train_loss": loss, "lr": lr}, step=step)

    def on_epoch(epoch: int, info: dict) -> None:
        epochs.append(info)
        if not main_process:
            return
        mlflow.log_metrics(
            {_mlflow_name(k): float(v) for k, v in info.items() if isinstance(v, (int, float)) and k != "epoch"},
            step=epoch,
        )
        vals = " ".join(f"{k} {v:.3f}" for k, v in info.items() if k.startswith(("t2i_recall@5", "i2i_recall@5")))
        print(f"epoch {epoch}: loss {info['loss']:.4f} {vals} ({info['seconds']:.0f}s)", flush=True)

    return (on_step if main_process else None), on_epoch


def _save(cfg: Params, root, p: Prepared, res, summary: dict, mlflow, run, tags: dict) -> dict:
    """The model into models/finetuned (a temp folder swapped in complete: a kill never leaves half
    a model; the previous one stays until then), logged and registered in MLflow."""
    with atomic_dir(resolve(cfg.paths.model_dir, root)) as tmp_dir:
        save_clip(p.model, p.processor, tmp_dir)
        content = dir_hash(tmp_dir)
        mlflow.log_metrics({"train_seconds": summary["train_seconds"], "best_epoch": res.best_epoch})
        mlflow.log_artifacts(str(tmp_dir), artifact_path="model")
        reg = tracking.register_model(
            mlflow,
            run.info.run_id,
            cfg.mlflow,
            content,
            {"best_val": summary["best_val"], "best_epoch": res.best_epoch, **tags},
        )
        write_json(
            tmp_dir / "carsearch_run.json",
            {
                "mlflow_run_id": run.info.run_id,
                "base_model": cfg.model.as_dict(),
                "content_hash": content,
                "registered_model": reg,
            },
        )
    return reg


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cfg, root = load_config(), repo_root()
    dist = init_distributed()
    p = prepare(cfg, root, dist.main)
    if dist.main:
        clean_stale(resolve(cfg.paths.model_dir, root))  # leftovers of a killed run (a half-written temp folder)
    metrics_dir = resolve(cfg.paths.metrics_dir, root)
    steps: list[tuple[int, float, float]] = []
    epochs: list[dict] = []
    t0 = time.time()
    mlflow = tracking.setup(cfg.mlflow) if dist.main else None
    run_name, run_tags = tracking.run_identity(cfg.as_dict(), root, "finetune_clip") if mlflow else ("", {})
    pairs_md5 = dvc_out_hash(root, "curate_pairs", cfg.paths.pairs_dir)
    with mlflow.start_run(run_name=run_name) if mlflow else _Null() as run:
        if mlflow:
            logged = {"model": cfg.model.as_dict(), "train": p.cfg.as_dict(), "data": cfg.data.as_dict()}
            mlflow.log_params(flatten({**logged, "world_size": dist.world}))
            mlflow.set_tags({"stage": "finetune_clip", **run_tags, "data.pairs_md5": pairs_md5 or ""})
            tracking.log_pair_datasets(mlflow, resolve(cfg.paths.pairs_dir, root), pairs_md5)
        on_step, on_epoch = _hooks(mlflow, p.cfg, dist.main, steps, epochs)
        # ✓/✗ judgments of the queries not held out for evaluation (carsearch.feedback; split in train.json)
        extra, feedback = feedback_term(
            resolve(cfg.paths.judgments, root), root, list(cfg.eval.sets), p.processor,
            p.cfg, dist.world, print if dist.main else (lambda *_: None),
        )  # fmt: skip
        res = train_clip(p.model, p.processor, p.train, root, p.cfg, on_step, on_epoch, p.validate, dist, extra)
        seconds = time.time() - t0
        if dist.main:
            s = {**summary(p.cfg, p.train, p.val, res, dist.world, seconds), "feedback": feedback}
            reg = _save(cfg, root, p, res, s, mlflow, run, {"data.pairs_md5": pairs_md5 or "", **run_tags})
            write_text(metrics_dir / "train_loss.csv", loss_csv(steps))
            write_text(metrics_dir / "train_val.csv", val_csv(epochs))
            write_json(metrics_dir / "train.json", stamped(s, root))
            print(
                f"finetune_clip: {len(p.train)} pairs, {len(res.losses)} steps, best epoch {res.best_epoch} "
                f"({s['early_stopping_metric']} {s['best_val']}), {seconds:.0f}s; saved to "
                f"{cfg.paths.model_dir} (MLflow run {run.info.run_id}, registered {reg.get('name')} v{reg.get('version')})"
            )
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()
        td.destroy_process_group()


def dvc_out_hash(root, stage: str, path: str) -> str | None:
    """The content hash DVC recorded in dvc.lock for `stage`'s output `path` (DVC writes the lock
    entry of each stage as it completes, so during `dvc repro` this is the data being trained on)."""
    import yaml

    lock = root / "dvc.lock"
    try:
        outs = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(stage, {}).get("outs", [])
    except (OSError, yaml.YAMLError):
        return None
    return next((o.get("md5") for o in outs if o.get("path") == path), None)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def launch() -> None:
    """`python -m carsearch.stages.finetune_clip` (the dvc.yaml cmd): params.yaml is checked first (a bad
    value is one line, before any worker starts); with train.nproc_per_node > 1 this starts torchrun
    itself, and a failed worker ends in one line, not in torchrun's ChildFailedError traceback."""
    import sys

    nproc = check_params().train.nproc_per_node
    if nproc == 1 or "WORLD_SIZE" in os.environ:  # one process, or already a torchrun worker
        run_stage(main)
        return
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", __spec__.name]))
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        print(
            f"error: finetune_clip: {len(e.failures)} of {nproc} torchrun worker(s) failed (exit code "
            f"{', '.join(map(str, codes))}); their error is above",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    launch()
