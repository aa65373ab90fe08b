"""Stage finetune_clip: contrastive fine-tuning of the configured CLIPModel on the train split,
validated each epoch on the val split (early stopping, best weights kept), checkpointed each epoch
(a killed run resumes), logged to MLflow and registered in its model registry.

Single process: `python -m carsearch.stages.finetune_clip`. Data parallel, same code:
`torchrun --standalone --nproc_per_node N -m carsearch.stages.finetune_clip` (gloo on CPU, nccl on GPU);
only rank 0 logs and writes outputs.
"""

from __future__ import annotations

import copy
import os
import shutil
import time

from carsearch.core.io import atomic_dir, clean_stale, dir_hash, read_jsonl, write_json, write_text
from carsearch.core.params import check_params, flatten, load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.evaluation.evalsets import EvalSetError, set_validation_fn
from carsearch.evaluation.protocol import validation_fn
from carsearch.experiments import tracking
from carsearch.model.clip import load_clip, save_clip
from carsearch.sources.files import content_id
from carsearch.training.distributed import init_distributed
from carsearch.training.feedback import feedback_term
from carsearch.training.loop import train_clip


def _mlflow_name(k: str) -> str:
    return k.replace("@", "_at_")


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    params = load_params()
    root, paths = repo_root(), params["paths"]
    cfg = copy.deepcopy(params["train"])  # complete (the schema has no defaults): this run's copy
    dist = init_distributed()
    pairs_dir = resolve(paths["pairs_dir"], root)
    train = list(read_jsonl(pairs_dir / "train.jsonl"))
    if len(train) < 2:
        raise ValueError(
            f"finetune_clip: the train split ({paths['pairs_dir']}/train.jsonl) has {len(train)} pair(s); "
            "contrastive training needs at least 2"
        )
    val_file = pairs_dir / "val.jsonl"
    val = list(read_jsonl(val_file)) if val_file.is_file() else []
    model, processor = load_clip(params["model"], seed=cfg["seed"])
    validate = with_eval_sets(validation_fn(processor, val, root, params["eval"]), params, root, processor, train + val)
    if validate is None:
        if dist.main:
            print(
                f"finetune_clip: warning: the val split has {len(val)} pair(s) (< 2); no validation, "
                "no early stopping, the last epoch is kept",
                flush=True,
            )
        cfg["early_stopping"] = {**(cfg["early_stopping"] or {}), "metric": None, "patience": 0, "min_delta": 0.0}
    if cfg["checkpoint_dir"]:
        cfg["checkpoint_dir"] = str(resolve(cfg["checkpoint_dir"], root))
    out_dir = resolve(paths["model_dir"], root)
    if dist.main:
        clean_stale(out_dir)  # leftovers of a killed run (a half-written temp folder)
    metrics_dir = resolve(paths["metrics_dir"], root)
    mcfg = params["mlflow"]
    steps: list[tuple[int, float, float]] = []
    epochs: list[dict] = []
    t0 = time.time()

    mlflow = tracking.setup(mcfg) if dist.main else None
    run_name, run_tags = tracking.run_identity(params, root, "finetune_clip") if mlflow else ("", {})
    pairs_md5 = dvc_out_hash(root, "curate_pairs", paths["pairs_dir"])
    run_ctx = mlflow.start_run(run_name=run_name) if mlflow else _Null()
    with run_ctx as run:
        if mlflow:
            mlflow.log_params(
                flatten({"model": params["model"], "train": cfg, "data": params["data"], "world_size": dist.world})
            )
            mlflow.set_tags({"stage": "finetune_clip", **run_tags, "data.pairs_md5": pairs_md5 or ""})
            tracking.log_pair_datasets(mlflow, pairs_dir, pairs_md5)

        def on_step(step: int, loss: float, lr: float) -> None:
            steps.append((step, loss, lr))
            if mlflow and step % int(cfg["log_every"]) == 0:
                mlflow.log_metrics({"train_loss": loss, "lr": lr}, step=step)

        def on_epoch(epoch: int, info: dict) -> None:
            epochs.append(info)
            if not dist.main:
                return
            mlflow.log_metrics(
                {_mlflow_name(k): float(v) for k, v in info.items() if isinstance(v, (int, float)) and k != "epoch"},
                step=epoch,
            )
            vals = " ".join(f"{k} {v:.3f}" for k, v in info.items() if k.startswith(("t2i_recall@5", "i2i_recall@5")))
            print(f"epoch {epoch}: loss {info['loss']:.4f} {vals} ({info['seconds']:.0f}s)", flush=True)

        # ✓/✗ judgments of the queries not held out for evaluation (issue 34; split recorded in train.json)
        extra, feedback = feedback_term(
            resolve(paths["judgments"], root), root, list(params["eval"]["sets"]), processor,
            cfg["feedback_weight"], dist.world, print if dist.main else (lambda *_: None),
        )  # fmt: skip
        res = train_clip(
            model, processor, train, root, cfg, on_step if dist.main else None, on_epoch, validate, dist, extra
        )
        seconds = time.time() - t0
        if dist.main:
            # written into a temp folder beside models/finetuned and swapped in complete (a kill never
            # leaves half a model; the previous one stays until then)
            with atomic_dir(out_dir) as tmp_dir:
                save_clip(model, processor, tmp_dir)
                content = dir_hash(tmp_dir)
                summary = {
                    "final_loss": round(res.losses[-1], 6),
                    "steps": len(res.losses),
                    "epochs_run": len(res.history),
                    "best_epoch": res.best_epoch,
                    "stopped_early": res.stopped_early,
                    "best_val": None if res.best_score is None else round(res.best_score, 4),
                    "early_stopping_metric": (cfg["early_stopping"] or {"metric": None})["metric"],
                    "resumed_from_epoch": res.resumed_from_epoch,
                    "train_pairs": len(train),
                    "val_pairs": len(val),
                    "world_size": dist.world,
                    "feedback": feedback,
                    "train_seconds": round(seconds, 1),
                    **res.counts,
                }
                mlflow.log_metrics({"train_seconds": seconds, "best_epoch": res.best_epoch})
                mlflow.log_artifacts(str(tmp_dir), artifact_path="model")
                reg = tracking.register_model(
                    mlflow,
                    run.info.run_id,
                    mcfg,
                    content,
                    {
                        "best_val": summary["best_val"],
                        "best_epoch": res.best_epoch,
                        "data.pairs_md5": pairs_md5 or "",
                        **run_tags,
                    },
                )
                write_json(
                    tmp_dir / "carsearch_run.json",
                    {
                        "mlflow_run_id": run.info.run_id,
                        "base_model": params["model"],
                        "content_hash": content,
                        "registered_model": reg,
                    },
                )
            write_text(
                metrics_dir / "train_loss.csv",
                "step,loss,lr\n" + "".join(f"{s},{l:.6f},{lr:.3e}\n" for s, l, lr in steps),
            )
            keys = sorted({k for e in epochs for k in e if k not in ("epoch", "stopped")})
            write_text(
                metrics_dir / "train_val.csv",
                "epoch,"
                + ",".join(keys)
                + "\n"
                + "".join(
                    f"{e['epoch']}," + ",".join(f"{float(e.get(k, 0)):.5g}" for k in keys) + "\n" for e in epochs
                ),
            )
            write_json(metrics_dir / "train.json", summary)
            if cfg["checkpoint_dir"]:
                shutil.rmtree(cfg["checkpoint_dir"], ignore_errors=True)  # done: nothing to resume
            print(
                f"finetune_clip: {len(train)} pairs, {len(res.losses)} steps, best epoch {res.best_epoch} "
                f"({summary['early_stopping_metric']} {summary['best_val']}), {seconds:.0f}s; saved to "
                f"{paths['model_dir']} (MLflow run {run.info.run_id}, registered {reg.get('name')} v{reg.get('version')})"
            )
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()
        td.destroy_process_group()


def with_eval_sets(validate, params: dict, root, processor, trained_pairs: list[dict]):
    """Add `train.val_sets` (names of eval.sets: the user's labelled photos) to the per-epoch
    validation, so best epoch / early stopping can follow the photos users search
    (`train.early_stopping.metric: <set>_precision@5`)."""
    names = list(params["train"]["val_sets"])
    if not names:
        return validate

    ecfg = params["eval"]
    specs = {s["name"]: s for s in ecfg["sets"]}
    missing = [n for n in names if n not in specs]
    if missing:
        raise EvalSetError(f"train.val_sets: {missing} not in eval.sets ({sorted(specs) or 'none configured'})")
    trained = {content_id((root / p["path"]).read_bytes()): p["path"] for p in trained_pairs}
    fns = [set_validation_fn(specs[n], root, processor, ecfg, trained) for n in names]

    def validate_all(model) -> dict:
        out = dict(validate(model)) if validate else {}
        for f in fns:
            out.update(f(model))
        return out

    return validate_all


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

    nproc = int(check_params()["train"]["nproc_per_node"])
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
