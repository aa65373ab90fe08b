"""Stage curate_pairs: captions -> validated (image, caption) pairs in train/val/test + rejects."""

from __future__ import annotations

import shutil
from collections import Counter

from carsearch.curate import curate
from carsearch.io import read_jsonl, write_json, write_jsonl
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["curate"]
    inputs = sorted(resolve(paths["jsonl_dir"], root).glob("*.jsonl"))
    outputs = sorted(resolve(paths["captions_dir"], root).glob("*.jsonl.out"))
    manifest = {r["id"]: r for r in read_jsonl(resolve(paths["manifest"], root))}
    by_split, rejects = curate(inputs, outputs, manifest, root, cfg, params["seed"])
    out_dir = resolve(paths["pairs_dir"], root)
    shutil.rmtree(out_dir, ignore_errors=True)
    for split, rows in by_split.items():
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    write_jsonl(out_dir / "rejects.jsonl", rejects)
    counts = {s: len(r) for s, r in by_split.items()}
    reasons = Counter(r["reason"].split(":")[0] for r in rejects)
    write_json(resolve(paths["metrics_dir"], root) / "curate.json", {"pairs": counts, "rejected": len(rejects)})
    for r in rejects[:20]:
        print(f"rejected {r.get('path') or r.get('id') or r.get('where')}: {r['reason']}")
    print(f"curate_pairs: {counts} kept, {len(rejects)} rejected {dict(reasons) if reasons else ''}")
    for split in ("train", "test"):
        if split in counts and counts[split] < 2:
            raise ValueError(f"curate_pairs: split {split!r} has {counts[split]} pair(s); need at least 2 (more images or other split fractions)")


if __name__ == "__main__":
    run_stage(main)
