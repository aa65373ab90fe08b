"""Stage curate_pairs: captions -> validated (image, caption) pairs in train/val/test + rejects."""

from __future__ import annotations

from collections import Counter

from carsearch.core.io import atomic_dir, read_jsonl, write_json, write_jsonl
from carsearch.core.params import load_config, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.rejects import summarise
from carsearch.curation.crops import CROPS, crop_pairs
from carsearch.curation.curate import curate, load_jobs


def main() -> None:
    params = load_config()
    root, paths, cfg = repo_root(), params.paths, params.curate
    inputs = sorted(resolve(paths.jsonl_dir, root).glob("*.jsonl"))
    outputs = sorted(resolve(paths.captions_dir, root).glob("*.jsonl.out"))
    manifest = {r["id"]: r for r in read_jsonl(resolve(paths.manifest, root))}
    jobs = load_jobs(resolve(paths.captions_dir, root))
    by_split, rejects = curate(inputs, outputs, manifest, root, cfg, params.seed, jobs=jobs)
    pairs_rel = resolve(paths.pairs_dir, root).relative_to(root).as_posix()
    with atomic_dir(resolve(paths.pairs_dir, root)) as out_dir:  # written beside, swapped in complete
        for split, rows in by_split.items():
            crop_pairs(rows, root, out_dir / CROPS, f"{pairs_rel}/{CROPS}")
            write_jsonl(out_dir / f"{split}.jsonl", rows)
        write_jsonl(out_dir / "rejects.jsonl", rejects)
    counts = {s: len(r) for s, r in by_split.items()}
    reasons = Counter(r["reason"].split(":")[0] for r in rejects)
    requested = sum(1 for f in inputs for _ in read_jsonl(f))
    write_json(
        resolve(paths.metrics_dir, root) / "curate.json",
        {
            "pairs": counts,
            "rejected": len(rejects),
            "requested": requested,
            "rejected_by_reason": dict(sorted(Counter(r["reason"].split(":")[0] for r in rejects).items())),
        },
    )
    for line in summarise(rejects, "record", f"{paths.pairs_dir}/rejects.jsonl"):
        print(f"curate_pairs: {line}")
    # a frame's vehicles are several pairs / rejects: count the requested records (frames) they came from
    seen = {r.get("frame_id") or r["id"] for rows in by_split.values() for r in rows}
    seen |= {r["id"] for r in rejects if r.get("id") and r["reason"] != "output record with no matching input record"}
    unaccounted = requested - len(seen)
    if unaccounted > 0:
        raise ValueError(f"curate_pairs: {unaccounted} requested record(s) neither kept nor rejected (bug)")
    print(f"curate_pairs: {counts} kept, {len(rejects)} rejected {dict(reasons) if reasons else ''}")
    for split in ("train", "test"):
        if split in counts and counts[split] < 2:
            raise ValueError(
                f"curate_pairs: split {split!r} has {counts[split]} pair(s); need at least 2 (more images or other split fractions)"
            )


if __name__ == "__main__":
    run_stage(main)
