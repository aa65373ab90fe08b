"""Benchmark fine-tuning throughput (images/s) of the configured tiny CLIP on the curated pairs.

python benchmarks/bench_train.py [--pairs data/pairs] [--epochs 2] [--batch-size 64] [--set lr=1e-3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from carsearch.model.clip import load_clip
from carsearch.training.loop import train_clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=Path, default=Path("data/pairs"))
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--model", type=Path, default=Path("conf/model/clip_tiny.yaml"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--set", action="append", default=[], help="train.KEY=YAML_VALUE")
    a = ap.parse_args()
    pairs = [json.loads(x) for x in (a.pairs / "train.jsonl").read_text().splitlines() if x.strip()]
    cfg = {"lr": 5e-4, "epochs": a.epochs, "batch_size": a.batch_size, "seed": 0}
    for kv in a.set:
        k, v = kv.split("=", 1)
        cfg[k] = yaml.safe_load(v)
    model, proc = load_clip(yaml.safe_load(a.model.read_text()), seed=0)
    t0 = time.perf_counter()
    res = train_clip(model, proc, pairs, a.root, cfg)
    dt = time.perf_counter() - t0
    print(
        f"bench_train: {len(pairs)} pairs x {a.epochs} epochs in {dt:.1f}s "
        f"({len(pairs) * a.epochs / dt:.1f} images/s incl. preprocessing), final loss {res.losses[-1]:.4f}"
    )


if __name__ == "__main__":
    main()
