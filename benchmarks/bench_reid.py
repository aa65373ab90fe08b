"""Re-ID and plate search on a built repo's test split, as `evaluate` reports them (`evaluation.reid`):
VeRi-776 mAP / rank-1 / rank-5 for appearance, + plate, + camera network, base and fine-tuned,
and the first-hit precision / recall of plate queries with 0, 1, 2 OCR errors and a wildcard.
Reads the repo (never writes it): its params.yaml, data/pairs and models/finetuned; the camera
network's `travel` settings come from this checkout's conf/cameras.yaml.

    python benchmarks/bench_reid.py /path/to/built/repo [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FLOORS = {"appearance_map": 0.5, "network_rank1": 0.9}


def _merge(base: dict, over: dict) -> dict:
    return {
        k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v for k, v in over.items()
    } | {k: v for k, v in base.items() if k not in over}


def _params(repo: Path, here: Path) -> Path:
    """The repo's params.yaml, with keys it predates filled from this checkout's (a repo built by an
    older commit still reads)."""
    import tempfile

    import yaml

    theirs = yaml.safe_load((repo / "params.yaml").read_text())
    mine = yaml.safe_load((here / "params.yaml").read_text())
    out = Path(tempfile.mkdtemp()) / "params.yaml"
    out.write_text(yaml.safe_dump(_merge(mine, theirs)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--vectors", type=Path, help="an .npz of the models' test vectors: read if there, else written")
    a = ap.parse_args()
    from carsearch.core.io import read_jsonl
    from carsearch.core.params import load_config
    from carsearch.core.paths import resolve
    from carsearch.detection.motion import cameras
    from carsearch.evaluation.reid import reid_section
    from carsearch.model.clip import encode_images, load_clip, load_pretrained

    root = a.repo.resolve()
    cfg = load_config(_params(root, Path(__file__).resolve().parents[1]))
    rows = list(read_jsonl(resolve(cfg.paths.pairs_dir, root) / f"{cfg.eval.split}.jsonl"))
    models = {
        "base": load_clip(cfg.model, seed=cfg.train.seed),
        "finetuned": load_pretrained(resolve(cfg.paths.model_dir, root)),
    }
    if a.vectors and a.vectors.is_file():
        imgs = dict(np.load(a.vectors))
    else:
        imgs = {n: encode_images(m, p, [root / r["path"] for r in rows]) for n, (m, p) in models.items()}
        if a.vectors:
            np.savez(a.vectors, **imgs)
    results, calibs = {n: {} for n in models}, {n: {"kinds": {}} for n in models}
    here = Path(__file__).resolve().parents[1]
    import scipy.optimize  # noqa: F401  (evaluate has them loaded already: time the work, not the imports)
    import sklearn.isotonic  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    t0 = time.perf_counter()
    reid_section(rows, imgs, results, calibs, cfg, root, print, cameras(here))  # this checkout's conf/cameras.yaml
    took = time.perf_counter() - t0
    print(f"re-ID + plates + sightings fit: {took:.1f} s (embedding excluded)")
    print("\n| model | variant | mAP [95% CI] | rank-1 [95% CI] | rank-5 | queries |\n|---|---|---|---|---|---|")
    for n in models:
        for v, r in results[n]["reid"].items():
            if isinstance(r, dict):
                print(
                    f"| {n} | {v} | {r['map']:.3f} {r['map_ci']} | {r['rank1']:.3f} {r['rank1_ci']} | "
                    f"{r['rank5']:.3f} | {r['queries']} |"
                )
    print("\n| plate query | queries | precision@first | recall@first |\n|---|---|---|---|")
    for k, r in results["plates"].items():
        if isinstance(r, dict):
            print(f"| {k} | {r['queries']} | {r['precision']:.3f} | {r['recall']:.3f} |")
    print("windows:", results["network"]["windows"])
    fit = calibs["finetuned"]["kinds"].get("sightings") or {}
    print("sightings fit (fine-tuned):", fit.get("coef"), "threshold", fit.get("threshold"))
    if a.json:
        a.json.write_text(json.dumps({"results": results, "seconds": took}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
