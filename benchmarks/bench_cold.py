"""Cold start of `carsearch search`: wall time of a fresh process answering one text query and one
image query (`--image`), against an index of demo images built with the default model config,
beside the target (< 5 s on this project's 2-core machine). Also says whether torch or
transformers were imported (they should not be: carsearch.model.textenc / visionenc).

    python benchmarks/bench_cold.py [--n 200] [--repeats 3]

Each run is a new Python process (`python -m carsearch.cli search …`), so it includes the
interpreter, imports, opening the index and the model's weights. The OS file cache is warm after
the first run; the median of `--repeats` runs is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
TARGET_S = 5.0


def run(root: Path, query: list[str]) -> tuple[float, list[str]]:
    code = (
        "import sys\nfrom carsearch.cli import app\n"
        f"try:\n    app(['search', *{query!r}, '-k', '5'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('HEAVY', ','.join(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)"
    )
    env = {**os.environ, "CARSEARCH_ROOT": str(root), "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"bench_cold: search failed: {p.stderr.strip().splitlines()[-1:]}")
    heavy = [ln.split(" ", 1)[1] for ln in p.stderr.splitlines() if ln.startswith("HEAVY")]
    return wall, [m for m in (heavy[0].split(",") if heavy else []) if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images in the index")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from bench_serve import build

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root, a.n, 224)
        photo = next((root / "data/raw/images").iterdir())
        rows = []
        for name, query in (("text", ["a red sedan seen from the front"]), ("image", ["--image", str(photo)])):
            walls, heavy = [], []
            for _ in range(a.repeats):
                w, heavy = run(root, query)
                walls.append(w)
            rows.append((name, statistics.median(walls), min(walls), heavy))
    print(
        f"\nbench_cold: `carsearch search` from a new process, {a.n}-image index, median of {a.repeats}, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'query':>6} {'median s':>9} {'min s':>6} {'target':>7} {'met':>4}  heavy imports")
    for name, med, lo, heavy in rows:
        print(
            f"{name:>6} {med:>9.2f} {lo:>6.2f} {'<' + format(TARGET_S, 'g'):>7} {'yes' if med < TARGET_S else 'NO':>4}  "
            f"{', '.join(heavy) or 'none'}"
        )


if __name__ == "__main__":
    main()
