"""Pay only for what changed, measured: build_index over 2,000 ingested images with a cold
embedding cache, then again after adding 1 % new images (20). Prints both times (in-process, so
process start-up and imports are excluded) and how many images each run embedded.

    python benchmarks/bench_index_incremental.py [--n 2000] [--size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    import yaml

    from carsearch.core.params import load_params
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.sources.demo import demo_items

    repo_params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "dvc.yaml").touch()
        img_dir = root / "data/raw/images"
        img_dir.mkdir(parents=True)
        extra = max(1, a.n // 100)
        rows = []
        for i, (_, data, labels, _) in enumerate(demo_items(a.n + extra, a.size, seed=3)):
            p = img_dir / f"{i:06d}.jpg"
            p.write_bytes(data)
            rows.append({"id": f"{i:016x}", "path": p.relative_to(root).as_posix(), "labels": labels})
        save_clip(*load_clip(repo_params["model"], seed=0), root / "models/finetuned")
        params = {**repo_params, "index": {**repo_params["index"], "promote": {"metric": None}}}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        os.environ["CARSEARCH_ROOT"] = str(root)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns.db'}"
        from carsearch.stages import build_index

        def run(n: int) -> tuple[float, dict]:
            (root / "data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
            t = time.perf_counter()
            build_index.main()
            return time.perf_counter() - t, json.loads((root / "data/index/carsearch_index.json").read_text())

        full_s, full = run(a.n)
        inc_s, inc = run(a.n + extra)
    ratio = inc_s / full_s
    print(f"\nbuild_index, {a.n} images at {a.size}px, model {repo_params['model']['name']}, {os.cpu_count()} cores")
    print(f"{'run':<28}{'images':>8}{'embedded':>10}{'seconds':>10}")
    print(f"{'full (cold cache)':<28}{full['rows']:>8}{full['embedded']:>10}{full_s:>10.2f}")
    print(f"{'incremental (+1 %)':<28}{inc['rows']:>8}{inc['embedded']:>10}{inc_s:>10.2f}")
    print(f"incremental / full = {ratio:.3f} (target < 0.10): {'met' if ratio < 0.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
