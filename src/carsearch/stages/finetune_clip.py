"""Stage finetune_clip: contrastive fine-tuning of the configured CLIPModel on the train split."""

from __future__ import annotations

import shutil
import time

from carsearch import tracking
from carsearch.io import read_jsonl, write_json, write_text
from carsearch.model import load_clip, save_clip
from carsearch.params import flatten, load_params, run_stage
from carsearch.paths import repo_root, resolve
from carsearch.train import train_clip


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["train"]
    pairs_dir = resolve(paths["pairs_dir"], root)
    train = list(read_jsonl(pairs_dir / "train.jsonl"))
    model, processor = load_clip(params["model"], seed=cfg["seed"])
    mlflow = tracking.setup(params["mlflow"])
    out_dir = resolve(paths["model_dir"], root)
    metrics_dir = resolve(paths["metrics_dir"], root)
    steps: list[tuple[int, float]] = []
    t0 = time.time()
    with mlflow.start_run(run_name=f"finetune-{params['model']['name']}") as run:
        mlflow.log_params({k: v for k, v in flatten({"model": params["model"], "train": cfg, "data": params["data"]}).items()})
        mlflow.set_tag("stage", "finetune_clip")

        def on_step(step: int, loss: float) -> None:
            steps.append((step, loss))
            if step % cfg.get("log_every", 1) == 0:
                mlflow.log_metric("train_loss", loss, step=step)

        def on_epoch(epoch: int, info: dict) -> None:
            mlflow.log_metric("epoch_loss", info["loss"], step=epoch)
            print(f"epoch {epoch}: mean loss {info['loss']:.4f} ({info['seconds']:.0f}s)")

        losses = train_clip(model, processor, train, root, cfg, on_step, on_epoch)
        shutil.rmtree(out_dir, ignore_errors=True)
        save_clip(model, processor, out_dir)
        write_json(out_dir / "carsearch_run.json", {"mlflow_run_id": run.info.run_id, "base_model": params["model"]})
        seconds = time.time() - t0
        mlflow.log_metric("train_seconds", seconds)
    write_text(metrics_dir / "train_loss.csv", "step,loss\n" + "".join(f"{s},{l:.6f}\n" for s, l in steps))
    write_json(metrics_dir / "train.json", {"final_loss": round(losses[-1], 6), "steps": len(losses),
                                            "train_pairs": len(train), "train_seconds": round(seconds, 1)})
    print(f"finetune_clip: {len(train)} pairs, {len(losses)} steps, final loss {losses[-1]:.4f}, "
          f"{seconds:.0f}s; saved to {paths['model_dir']} (MLflow run {run.info.run_id})")


if __name__ == "__main__":
    run_stage(main)
