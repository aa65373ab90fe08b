"""Stage caption_batch: run the batch job over data/jsonl/*.jsonl -> data/captions/*.jsonl.out."""

from __future__ import annotations

import shutil

from carsearch import batch
from carsearch.io import read_jsonl
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["caption"]
    inputs = sorted(resolve(paths["jsonl_dir"], root).glob("*.jsonl"))
    out_dir = resolve(paths["captions_dir"], root)
    backend = cfg["backend"]
    if backend == "offline":
        shutil.rmtree(out_dir, ignore_errors=True)
        labels = {r["id"]: r.get("labels") for r in read_jsonl(resolve(paths["manifest"], root))}
        totals = batch.run_offline(inputs, out_dir, labels, cfg["model_id"])
    else:
        raise ValueError(f"caption.backend: unknown backend {backend!r} (expected offline)")
    print(f"caption_batch[{backend}]: {totals['successRecordCount']} captioned, "
          f"{totals['errorRecordCount']} failed records, {totals['inputTokenCount']} in / "
          f"{totals['outputTokenCount']} out tokens")


if __name__ == "__main__":
    run_stage(main)
