"""Stage caption_batch: answer data/jsonl/*.jsonl -> data/captions/*.jsonl.out with the configured
backend (offline | bedrock | openai), plus metrics/caption.json (records, tokens, estimated cost)."""

from __future__ import annotations

import shutil

from carsearch import batch, bedrock, openai_compat
from carsearch.captions import CaptionError
from carsearch.io import read_jsonl, write_json
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve, shared_root

BACKENDS = ("offline", "bedrock", "openai")


def _metrics(backend: str, model_id: str, records: int, succeeded: int, tokens_in: int, tokens_out: int,
             prices: dict, mode: str, **extra) -> dict:
    usd = 0.0 if mode == "local" else bedrock.estimate_cost(prices, model_id, tokens_in, tokens_out, mode)
    return {"backend": backend, "model_id": model_id, "records": records, "succeeded": succeeded,
            "failed": records - succeeded, "input_tokens": tokens_in, "output_tokens": tokens_out,
            "estimated_usd": usd, "price_mode": mode, **extra}


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["caption"]
    jsonl_dir = resolve(paths["jsonl_dir"], root)
    inputs = sorted(jsonl_dir.glob("*.jsonl"))
    out_dir = resolve(paths["captions_dir"], root)
    backend = cfg["backend"]
    if backend not in BACKENDS:
        raise ValueError(f"caption.backend: unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    prices_path = resolve(cfg.get("pricing") or "conf/pricing.yaml", root)
    prices = bedrock.load_prices(prices_path) if prices_path.is_file() else {}
    shutil.rmtree(out_dir, ignore_errors=True)
    n_records = sum(1 for f in inputs for _ in read_jsonl(f))
    if backend == "offline":
        labels = {r["id"]: r.get("labels") for r in read_jsonl(resolve(paths["manifest"], root))}
        totals = batch.run_offline(inputs, out_dir, labels, cfg["model_id"])
        # what the same tokens would cost on Bedrock batch (the offline run itself is free)
        m = _metrics(backend, cfg["model_id"], n_records, totals["successRecordCount"], totals["inputTokenCount"],
                     totals["outputTokenCount"], prices, "batch", note="offline run; estimated_usd = Bedrock batch price of these tokens")
        bedrock.reconcile(inputs, out_dir)
    elif backend == "openai":
        s = openai_compat.settings_from_cfg(cfg)
        print(f"caption_batch[openai]: {s.model} at {s.base_url}, {s.concurrency} request(s) in flight")
        totals = openai_compat.run_openai(inputs, out_dir, s)
        m = _metrics(backend, s.model, n_records, totals["successRecordCount"], totals["inputTokenCount"],
                     totals["outputTokenCount"], prices, "local")
        bedrock.reconcile(inputs, out_dir)
    else:
        s = bedrock.settings_from_cfg(cfg)
        index = batch.load_index(jsonl_dir)
        if index is None:
            raise CaptionError(f"{jsonl_dir / batch.INDEX_NAME}: missing; re-run make_jsonl (dvc repro make_jsonl)")
        if index["model_id"] != cfg["model_id"]:
            raise CaptionError(f"caption.model_id: {cfg['model_id']!r} but the request files were made for {index['model_id']!r}; re-run make_jsonl")
        shards = bedrock.shard_jobs(jsonl_dir, index, s.bucket, s.prefix)
        state = resolve((cfg.get("bedrock") or {}).get("state_dir") or ".carsearch/jobs", shared_root()) / \
            f"{bedrock.run_hash(s.model_id, index['shards'], s.bucket, s.prefix)}.json"
        s3, br = bedrock.make_clients(s)
        print(f"caption_batch[bedrock]: {len(shards)} job(s) for {s.model_id} in s3://{s.bucket}/{s.prefix}; state {state}")
        result = bedrock.run_bedrock(shards, out_dir, s, state, s3, br)
        totals = bedrock.manifest_totals(result["jobs"])
        write_json(out_dir / "manifest.json.out", totals)
        m = _metrics(backend, s.model_id, result["records"], result["succeeded"], totals["inputTokenCount"],
                     totals["outputTokenCount"], prices, "batch", token_source="manifest.json.out",
                     jobs=len(result["jobs"]), unmatched_output_lines=result["unmatched_output_lines"])
        for r in result["failed_records"][:20]:
            print(f"failed record {r['recordId']} ({r['file']}): {r['reason']}")
    write_json(resolve(paths["metrics_dir"], root) / "caption.json", m)
    usd = "n/a (no price for this model in conf/pricing.yaml)" if m["estimated_usd"] is None else f"${m['estimated_usd']:.4f}"
    print(f"caption_batch[{backend}]: {m['succeeded']} captioned, {m['failed']} failed records (listed in "
          f"{paths['captions_dir']}/failed_records.jsonl), {m['input_tokens']} in / {m['output_tokens']} out tokens, est. {usd}")


if __name__ == "__main__":
    run_stage(main)
