"""Stage make_jsonl: one Bedrock batch-inference request line per ingested image, in the request
format of the configured model family (Claude: image inline; Nova: image on S3), sharded to the
batch quotas, every line validated; plus `batch.json`, the index caption_batch reads."""

from __future__ import annotations

import os

from tqdm import tqdm

from carsearch.captioning import requests as batch
from carsearch.core.io import atomic_dir, read_jsonl
from carsearch.core.params import load_params, run_stage
from carsearch.core.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["caption"]
    manifest = list(read_jsonl(resolve(paths["manifest"], root)))
    bucket = cfg["s3"]["bucket"] or os.environ.get("CARSEARCH_BUCKET")
    with atomic_dir(resolve(paths["jsonl_dir"], root)) as out_dir:  # written beside, swapped in complete
        index = batch.make_requests(
            manifest, root, out_dir, cfg, bucket=bucket, progress=lambda rows: tqdm(rows, desc="make_jsonl", unit="img")
        )
    q = index["quotas"]
    for s in index["shards"]:
        if s["below_min"]:
            print(
                f"make_jsonl: note: {s['file']} has {s['records']} records, under the Bedrock minimum of "
                f"{q['min_records_per_job']} a job (fine for the offline/openai backends; bedrock will refuse it)"
            )
    print(
        f"make_jsonl: {index['records']} {index['family']} records for {cfg['model_id']} in {len(index['shards'])} "
        f"file(s) under {paths['jsonl_dir']} (batch key {index['batch_key']})"
    )


if __name__ == "__main__":
    run_stage(main)
