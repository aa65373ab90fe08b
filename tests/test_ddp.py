"""Data-parallel training with torchrun: 2 gloo processes on CPU give the same losses as one
process with the same global batch (features are all-gathered, gradients averaged)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import write_pairs, write_params

BIN = Path(sys.executable).parent


def _run_stage(root: Path, nproc: int) -> dict:
    env = {
        **os.environ,
        "CARSEARCH_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "carsearch.stages.finetune_clip",
    ]
    p = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:]
    return {
        "train": json.loads((root / "metrics/train.json").read_text()),
        "loss": (root / "metrics/train_loss.csv").read_text().splitlines()[1:],
        "log": p.stdout,
    }


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_two_gloo_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        write_pairs(root, {"train": 16, "val": 4, "test": 4}, size=40)
        write_params(root, train={"epochs": 2, "batch_size": 8, "precision": "fp32"})
    r1, r2 = _run_stage(one, 1), _run_stage(two, 2)
    assert r2["train"]["world_size"] == 2 and r1["train"]["world_size"] == 1
    l1 = [float(x.split(",")[1]) for x in r1["loss"]]
    l2 = [float(x.split(",")[1]) for x in r2["loss"]]
    assert len(l1) == len(l2) == 4
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-3, (l1, l2)
    assert r2["log"].count("finetune_clip:") == 1  # only rank 0 logs and writes
    assert not (one / "models/checkpoints/finetune_clip").exists()  # finished: rank 0 removed the checkpoint
    assert not (two / "models/checkpoints/finetune_clip").exists()
