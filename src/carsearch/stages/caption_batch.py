"""Stage caption_batch: answer data/jsonl/*.jsonl -> data/captions/*.jsonl.out with the configured
backend (offline | bedrock | openai), plus metrics/caption.json (records, tokens, estimated cost).

Records answered before (same image, model, prompts and settings) are replayed from the caption
cache (`caption.cache.dir`, `.carsearch/caption_cache` in the original repo) and only the rest go
to the backend; the
outputs still hold every record. Tokens and `estimated_usd` count what was sent."""

from __future__ import annotations

import tempfile
from pathlib import Path

from carsearch.captioning import bedrock, offline, openai_compat, results
from carsearch.captioning import requests as batch
from carsearch.captioning.cache import open_cache
from carsearch.captioning.parse import CaptionError
from carsearch.core.io import atomic_dir, read_jsonl, write_json
from carsearch.core.params import load_params, run_stage
from carsearch.core.paths import repo_root, resolve, shared_root

BACKENDS = ("offline", "bedrock", "openai")


def _metrics(
    backend: str,
    model_id: str,
    records: int,
    succeeded: int,
    tokens_in: int,
    tokens_out: int,
    prices: dict,
    mode: str,
    **extra,
) -> dict:
    usd = 0.0 if mode == "local" else results.estimate_cost(prices, model_id, tokens_in, tokens_out, mode)
    return {
        "backend": backend,
        "model_id": model_id,
        "records": records,
        "succeeded": succeeded,
        "failed": records - succeeded,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "estimated_usd": usd,
        "price_mode": mode,
        **extra,
    }


def _cache_fields(cache, n_records: int, sent: int, prices: dict, model_id: str, mode: str) -> dict:
    """cached / sent records, the cached records' tokens and what they would have cost again."""
    st = (
        cache.stats()
        if cache is not None
        else {"cached": 0, "cached_input_tokens": 0, "cached_output_tokens": 0, "cache_entries_written": 0}
    )
    saved = (
        0.0
        if mode == "local"
        else results.estimate_cost(prices, model_id, st["cached_input_tokens"], st["cached_output_tokens"], mode)
    )
    return {
        "cached": st["cached"],
        "sent": sent,
        "cached_input_tokens": st["cached_input_tokens"],
        "cached_output_tokens": st["cached_output_tokens"],
        "estimated_usd_cached_saved": saved,
        "cache_entries_written": st["cache_entries_written"],
        "cache": "off" if cache is None else _rel(cache.root),
    }


def _rel(path: Path) -> str:
    try:
        return str(Path(path).relative_to(repo_root()))
    except ValueError:
        return str(path)


def cache_context(cfg: dict, backend: str, model: str) -> dict:
    """What, besides each record's request body, decides the answer (part of every cache key)."""
    return {
        "backend": backend,
        "model": model,
        "model_id": cfg["model_id"],
        "max_image_edge": cfg["max_image_edge"],
        "max_image_bytes": cfg["max_image_bytes"],
    }


def main(out_dir: Path | None = None) -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["caption"]
    if out_dir is None:  # answers go into a temp folder beside data/captions, swapped in complete
        with atomic_dir(resolve(paths["captions_dir"], root)) as tmp:
            return main(tmp)
    jsonl_dir = resolve(paths["jsonl_dir"], root)
    inputs = sorted(jsonl_dir.glob("*.jsonl"))
    backend = cfg["backend"]
    if backend not in BACKENDS:
        raise ValueError(f"caption.backend: unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    prices_path = resolve(cfg["pricing"], root) if cfg["pricing"] else None  # null: no cost estimate
    prices = results.load_prices(prices_path) if prices_path and prices_path.is_file() else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_cfg = cfg["cache"]
    n_records = sum(1 for f in inputs for _ in read_jsonl(f))
    if backend == "offline":
        frames = {r["id"]: r for r in read_jsonl(resolve(paths["manifest"], root))}
        labels = {i: r.get("labels") for i, r in frames.items()}
        cache = open_cache(
            cfg,
            root,
            {**cache_context(cfg, backend, cfg["model_id"]), "captioner": offline.offline_captioner_version()},
        )
        totals = offline.run_offline(inputs, out_dir, labels, cfg["model_id"], cache=cache, frames_by_id=frames)
        rec = results.reconcile(inputs, out_dir)
        # what the same tokens would cost on Bedrock batch (the offline run itself is free)
        m = _metrics(
            backend,
            cfg["model_id"],
            n_records,
            rec["succeeded"],
            totals["inputTokenCount"],
            totals["outputTokenCount"],
            prices,
            "batch",
            note="offline run; estimated_usd = Bedrock batch price of the tokens of the records sent",
            **_cache_fields(cache, n_records, totals["totalRecordCount"], prices, cfg["model_id"], "batch"),
        )
    elif backend == "openai":
        s = openai_compat.settings_from_cfg(cfg)
        print(f"caption_batch[openai]: {s.model} at {s.base_url}, {s.concurrency} request(s) in flight")
        cache = open_cache(cfg, root, cache_context(cfg, backend, s.model))
        totals = openai_compat.run_openai(inputs, out_dir, s, cache=cache)
        rec = results.reconcile(inputs, out_dir)
        m = _metrics(
            backend,
            s.model,
            n_records,
            rec["succeeded"],
            totals["inputTokenCount"],
            totals["outputTokenCount"],
            prices,
            "local",
            **_cache_fields(cache, n_records, totals["totalRecordCount"], prices, s.model, "local"),
        )
    else:
        s = bedrock.settings_from_cfg(cfg)
        index = batch.load_index(jsonl_dir)
        if index is None:
            raise CaptionError(f"{jsonl_dir / batch.INDEX_NAME}: missing; re-run make_jsonl (dvc repro make_jsonl)")
        if index["model_id"] != cfg["model_id"]:
            raise CaptionError(
                f"caption.model_id: {cfg['model_id']!r} but the request files were made for {index['model_id']!r}; re-run make_jsonl"
            )
        shards = bedrock.shard_jobs(jsonl_dir, index, s.bucket, s.prefix)
        state = (
            resolve(cfg["bedrock"]["state_dir"], shared_root())
            / f"{bedrock.run_hash(s.model_id, index['shards'], s.bucket, s.prefix)}.json"
        )
        cache = open_cache(cfg, root, cache_context(cfg, backend, s.model_id))
        jobs = []
        with tempfile.TemporaryDirectory(prefix="carsearch-shards-") as work:
            plan = bedrock.plan_with_cache(
                shards, cache, Path(work), s.min_records_per_job, bool(cache_cfg["pad_small_jobs"])
            )
            sent = sum(sh.records for sh in plan.send)
            print(
                f"caption_batch[bedrock]: {n_records} record(s): {n_records - sent + plan.padded} from the caption cache, "
                f"{sent} to send" + (f" ({plan.padded} cached ones padding small jobs)" if plan.padded else "")
            )
            if plan.send:
                s3, br = bedrock.make_clients(s)
                print(
                    f"caption_batch[bedrock]: {len(plan.send)} job(s) for {s.model_id} in s3://{s.bucket}/{s.prefix}; state {state}"
                )
                try:
                    jobs = bedrock.run_bedrock(plan.send, out_dir, s, state, s3, br)["jobs"]
                finally:  # answers already paid for are kept, even when a job failed
                    if cache is not None:
                        bedrock.store_answers(plan, out_dir, cache)
                        cache.close()
            else:
                print("caption_batch[bedrock]: every record is cached; no job submitted")
        bedrock.merge_replayed(plan, out_dir)
        write_json(out_dir / "jobs.json", jobs)
        rec = results.reconcile(inputs, out_dir, {j["file"]: j for j in jobs})
        totals = bedrock.manifest_totals(jobs)
        write_json(out_dir / "manifest.json.out", totals)
        m = _metrics(
            backend,
            s.model_id,
            rec["records"],
            rec["succeeded"],
            totals["inputTokenCount"],
            totals["outputTokenCount"],
            prices,
            "batch",
            token_source="manifest.json.out",
            jobs=len(jobs),
            unmatched_output_lines=rec["unmatched_output_lines"],
            padded=plan.padded,
            **_cache_fields(cache, n_records, sent, prices, s.model_id, "batch"),
        )
        for r in rec["failed_records"][:20]:
            print(f"failed record {r['recordId']} ({r['file']}): {r['reason']}")
    write_json(resolve(paths["metrics_dir"], root) / "caption.json", m)
    usd = (
        "n/a (no price for this model in conf/pricing.yaml)"
        if m["estimated_usd"] is None
        else f"${m['estimated_usd']:.4f}"
    )
    print(
        f"caption_batch[{backend}]: {m['succeeded']} captioned ({m['cached']} from the cache, {m['sent']} sent), {m['failed']} failed "
        f"records (listed in {paths['captions_dir']}/failed_records.jsonl), {m['input_tokens']} in / {m['output_tokens']} out tokens "
        f"sent, est. {usd}"
    )


if __name__ == "__main__":
    run_stage(main)
