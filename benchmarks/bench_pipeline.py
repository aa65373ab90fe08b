"""Benchmark the README's main command from a fresh clone: setup time, full `dvc repro` time,
no-op `dvc repro` time, and whether the fine-tuned model beats the untrained one.

Usage: python benchmarks/bench_pipeline.py [--keep] [--source REPO]   (prints a JSON summary)
Floors (issue #2): full repro < 600 s, no-op repro < 5 s, finetuned t2i recall@5 > base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def timed(cmd, cwd, env=None):
    t = time.time()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}")
    return time.time() - t, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carsearch-bench-"))
    repo = tmp / "repo"
    subprocess.run(["git", "clone", "-q", args.source, str(repo)], check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t_setup, _ = timed(["bash", "scripts/setup.sh"], repo, env)
    env["PATH"] = f"{repo / '.venv/bin'}{os.pathsep}{env['PATH']}"
    t_full, _ = timed(["dvc", "repro"], repo, env)
    t_noop, noop_out = timed(["dvc", "repro"], repo, env)
    ev = json.loads((repo / "metrics/eval.json").read_text())
    params = json.loads(json.dumps(__import__("yaml").safe_load((repo / "params.yaml").read_text())))
    res = {
        "machine": f"{os.cpu_count()} cores",
        "data_source": params["data"]["source"],
        "setup_s": round(t_setup, 1),
        "full_repro_s": round(t_full, 1),
        "noop_repro_s": round(t_noop, 1),
        "noop_up_to_date": "didn't change" in noop_out or "up to date" in noop_out,
        "t2i_recall@5": {m: round(ev[m]["text_to_image"]["recall@5"], 4) for m in ("base", "finetuned")},
        "i2i_recall@5": {m: round(ev[m]["image_to_image"]["recall@5"], 4) for m in ("base", "finetuned")},
    }
    res["floors_met"] = bool(
        res["full_repro_s"] < 600
        and res["noop_repro_s"] < 5
        and res["t2i_recall@5"]["finetuned"] > res["t2i_recall@5"]["base"]
    )
    print(json.dumps(res, indent=2))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {repo}")


if __name__ == "__main__":
    main()
