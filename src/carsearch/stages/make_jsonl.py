"""Stage make_jsonl: one Bedrock batch-inference request line per ingested image."""

from __future__ import annotations

import shutil

from tqdm import tqdm

from carsearch import batch
from carsearch.io import read_jsonl
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["caption"]
    manifest = list(read_jsonl(resolve(paths["manifest"], root)))
    out_dir = resolve(paths["jsonl_dir"], root)
    shutil.rmtree(out_dir, ignore_errors=True)
    records = batch.claude_records(tqdm(manifest, desc="make_jsonl", unit="img"), root, cfg)
    files = batch.write_shards(records, out_dir, cfg["records_per_file"])
    print(f"make_jsonl: {len(manifest)} records for {cfg['model_id']} in {len(files)} file(s) under {paths['jsonl_dir']}")


if __name__ == "__main__":
    run_stage(main)
