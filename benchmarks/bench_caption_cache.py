"""Benchmark the caption cache with the offline backend: caption N demo images (full run, empty
cache), add 10 new images and caption again (incremental run), and compare with the same N+10
captioned without the cache. Reports records sent and caption_batch wall time for each.

Usage: python benchmarks/bench_caption_cache.py [--n 2000] [--new 10] [--size 224] [--keep]   (prints JSON)
Runs in a scratch repo (CARSEARCH_ROOT), not in this checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_images(root: Path, n: int, size: int, seed: int, start: int = 0) -> list[dict]:
    from carsearch.sources.demo import demo_items

    img_dir = root / "data/raw/images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, data, labels, _ in demo_items(n, size, seed):
        rid = hashlib.sha256(data).hexdigest()[:16]
        path = img_dir / f"{rid}.jpg"
        path.write_bytes(data)
        rows.append(
            {
                "id": rid,
                "path": str(path.relative_to(root)),
                "width": size,
                "height": size,
                "bytes": len(data),
                "source": "demo",
                "labels": labels,
            }
        )
    return rows


def write_manifest(root: Path, rows: list[dict]) -> None:
    (root / "data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--new", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="carsearch-bench-cache-"))
    root = tmp / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["caption"]["pricing"] = str(REPO / "conf/pricing.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    os.environ["CARSEARCH_ROOT"] = str(root)

    from carsearch.stages import caption_batch, make_jsonl

    def caption_json() -> dict:
        return json.loads((root / "metrics/caption.json").read_text())

    old = write_images(root, args.n, args.size, seed=1)
    write_manifest(root, old)
    res = {"machine": f"{os.cpu_count()} cores", "records_full": args.n, "new": args.new}
    res["make_jsonl_full_s"] = timed(make_jsonl.main)
    res["caption_full_s"] = timed(caption_batch.main)
    res["sent_full"] = caption_json()["sent"]

    new = write_images(root / "new", args.new, args.size, seed=2)
    for r in new:
        shutil.move(str(root / "new" / r["path"]), root / r["path"])
    write_manifest(root, old + new)
    res["make_jsonl_incremental_s"] = timed(make_jsonl.main)
    res["caption_incremental_s"] = timed(caption_batch.main)
    m = caption_json()
    res.update(
        sent_incremental=m["sent"],
        cached_incremental=m["cached"],
        estimated_usd_incremental=m["estimated_usd"],
        estimated_usd_cached_saved=m["estimated_usd_cached_saved"],
    )

    p = yaml.safe_load((root / "params.yaml").read_text())
    p["caption"]["cache"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    res["caption_no_cache_s"] = timed(caption_batch.main)
    m = caption_json()
    res.update(sent_no_cache=m["sent"], estimated_usd_no_cache=m["estimated_usd"])
    seg = root / ".carsearch/caption_cache/segments"
    res["cache_files"] = len(list(seg.glob("*.jsonl")))
    res["cache_bytes"] = sum(f.stat().st_size for f in seg.glob("*.jsonl"))
    print(json.dumps(res, indent=2))
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
