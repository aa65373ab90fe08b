"""Benchmark the TORCS renderer: prints images/s.

python benchmarks/bench_render.py [--n 200] [--size 224] [--workers 0] [--torcs-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from carsearch_world import default_torcs_dir, render_torcs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torcs-dir", type=Path, default=default_torcs_dir())
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        c0 = os.times()
        items, skips = render_torcs(
            a.torcs_dir, Path(tmp), a.n, size=a.size, seed=a.seed, workers=a.workers, progress=False
        )
        dt = time.perf_counter() - t0
        c1 = os.times()
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - (
        c0.user + c0.system + c0.children_user + c0.children_system
    )
    if not items:
        raise SystemExit(f"no images rendered (is torcs-data under {a.torcs_dir}? run scripts/fetch_torcs.sh)")
    nw = a.workers or os.cpu_count()
    print(
        f"{len(items) / dt:.2f} images/s  ({len(items)} images {a.size}x{a.size}, {nw} workers, "
        f"{os.cpu_count()} cpus, {dt:.1f}s incl. car loading and pool start-up)"
    )
    # on a shared/busy machine wall-clock throughput understates the renderer: also report CPU cost
    print(
        f"cpu: {cpu / len(items) * 1000:.0f} ms/image (all processes) -> "
        f"{nw * len(items) / cpu:.2f} images/s on {nw} idle cores; load average now {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
