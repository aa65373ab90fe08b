"""Watchlists (issue 33), measured: an index of --n images (the offline default model), then
`index add` of --add new images with --watches watches in conf/watchlists.yaml (text watches over
the label vocabulary, image watches on indexed vectors, plate watches). Prints how long the watches
took on the new rows (floor: 100 watches on an add of 100 images under 5 s), the whole add, and the
alerts raised. A calibration shipped into the index (a fit of the score alone) makes hits confident,
so the alert path (JSONL appends) runs too.

    python benchmarks/bench_watches.py [--n 500] [--add 100] [--watches 100] [--size 96]
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
REPO = Path(__file__).resolve().parents[1]
FLOOR_S = 5.0


def _watches(n: int, ids: list[str]) -> list[dict]:
    from carsearch.core.vocab import BODY_TYPES, COLORS

    texts = [f"a {c} {b}" for c in COLORS for b in BODY_TYPES]
    out = []
    for i in range(n):
        if i % 10 == 8:
            out.append({"name": f"img-{i}", "image": ids[i % len(ids)]})  # an indexed image's vector
        elif i % 10 == 9:
            out.append({"name": f"plate-{i}", "plate": f"AB{i:02d}*"})
        else:
            out.append({"name": f"text-{i}", "text": texts[i % len(texts)], "min_confidence": 0.5})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--add", type=int, default=100)
    ap.add_argument("--watches", type=int, default=100)
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    import yaml

    from carsearch.core.params import load_config, load_params
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.sources.demo import demo_items

    repo_params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "dvc.yaml").touch()
        img_dir, new_dir = root / "data/raw/images", root / "incoming"
        img_dir.mkdir(parents=True)
        new_dir.mkdir()
        rows = []
        for i, (_, data, labels, _) in enumerate(demo_items(a.n + a.add, a.size, seed=5)):
            p = (img_dir if i < a.n else new_dir) / f"{i:06d}.jpg"
            p.write_bytes(data)
            if i < a.n:
                rows.append({"id": f"{i:016x}", "path": p.relative_to(root).as_posix(), "labels": labels})
        (root / "data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        save_clip(*load_clip(repo_params["model"], seed=0), root / "models/finetuned")
        params = {
            **repo_params,
            "index": {**repo_params["index"], "promote": {**repo_params["index"]["promote"], "metric": None}},
        }
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        fit = {"coef": {"z": 1.0}, "mean": [0.0] * 8, "scale": [1.0] * 8, "intercept": -2.0, "threshold": 0.6}
        (root / "metrics").mkdir()
        (root / "metrics/calibration.json").write_text(
            json.dumps({"finetuned": {"kinds": {"text": fit, "image": fit}}})
        )
        os.environ["CARSEARCH_ROOT"] = str(root)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlruns.db'}"
        from carsearch.index.append import add_images
        from carsearch.stages import build_index

        t = time.perf_counter()
        build_index.main()
        build_s = time.perf_counter() - t
        doc = yaml.safe_load((REPO / "conf/watchlists.yaml").read_text())
        doc["watches"] = _watches(a.watches, [r["id"] for r in rows])
        (root / "conf").mkdir()
        (root / "conf/watchlists.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        t = time.perf_counter()
        res = add_images([new_dir], load_config(root / "params.yaml"), root)
        add_s = time.perf_counter() - t
        w = res["watches"]
    print(
        f"\nwatchlists: {w['watches']} watches on an `index add` of {res['added']} images "
        f"(index of {a.n} + {res['added']} rows, {a.size}px, model {repo_params['model']['name']}, "
        f"{os.cpu_count()} cores): watches {w['seconds_matching']:.2f} s "
        f"(floor {FLOOR_S:.0f} s: {'met' if w['seconds_matching'] < FLOOR_S else 'MISSED'}), "
        f"whole add {add_s:.2f} s, build {build_s:.1f} s; {w['alerts']} alerts, problems: {len(w['problems'])}"
    )
    if w["problems"]:
        print("\n".join(w["problems"][:5]))


if __name__ == "__main__":
    main()
