"""The caption_batch stage's work, as a library: `run(cfg, root, out_dir) -> metrics` answers
data/jsonl/*.jsonl into `out_dir` with the configured backend (offline | bedrock | openai) and
returns metrics/caption.json; `summary_line` says it. Records answered before are replayed from
the caption cache (`caption.cache`) and only the rest go to the backend."""

from __future__ import annotations

import tempfile
from pathlib import Path

from carsearch.captioning import bedrock, offline, openai_compat, results
from carsearch.captioning import requests as batch
from carsearch.captioning.cache import open_cache
from carsearch.captioning.parse import CaptionError
from carsearch.core.io import read_jsonl, write_json
from carsearch.core.paths import resolve, shared_root
from carsearch.core.schema import Caption, Params

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


def _cache_fields(cache, n_records: int, sent: int, prices: dict, model_id: str, mode: str, root: Path) -> dict:
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
        "cache": "off" if cache is None else _rel(cache.root, root),
    }


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def cache_context(cfg: Caption, backend: str, model: str) -> dict:
    """What, besides each record's request body, decides the answer (part of every cache key)."""
    return {
        "backend": backend,
        "model": model,
        "model_id": cfg.model_id,
        "max_image_edge": cfg.max_image_edge,
        "max_image_bytes": cfg.max_image_bytes,
    }


def _offline(cfg: Params, root: Path, inputs, out_dir: Path, n_records: int, prices: dict) -> dict:
    c = cfg.caption
    frames = {r["id"]: r for r in read_jsonl(resolve(cfg.paths.manifest, root))}
    labels = {i: r.get("labels") for i, r in frames.items()}
    rate = c.offline.plate_misread_rate
    context = {**cache_context(c, "offline", c.model_id), "captioner": offline.offline_captioner_version()}
    context["plate_misread_rate"] = rate  # a new rate, new answers
    cache = open_cache(c, root, context)
    totals = offline.run_offline(
        inputs, out_dir, labels, c.model_id, cache=cache, frames_by_id=frames, misread_rate=rate
    )
    rec = results.reconcile(inputs, out_dir)
    # what the same tokens would cost on Bedrock batch (the offline run itself is free)
    return _metrics(
        "offline",
        c.model_id,
        n_records,
        rec["succeeded"],
        totals["inputTokenCount"],
        totals["outputTokenCount"],
        prices,
        "batch",
        note="offline run; estimated_usd = Bedrock batch price of the tokens of the records sent",
        **_cache_fields(cache, n_records, totals["totalRecordCount"], prices, c.model_id, "batch", root),
    )


def _openai(cfg: Params, root: Path, inputs, out_dir: Path, n_records: int, prices: dict, log) -> dict:
    c = cfg.caption
    s = openai_compat.settings_from_cfg(c)
    log(f"caption_batch[openai]: {s.model} at {s.base_url}, {s.concurrency} request(s) in flight")
    cache = open_cache(c, root, cache_context(c, "openai", s.model))
    totals = openai_compat.run_openai(inputs, out_dir, s, cache=cache)
    rec = results.reconcile(inputs, out_dir)
    return _metrics(
        "openai",
        s.model,
        n_records,
        rec["succeeded"],
        totals["inputTokenCount"],
        totals["outputTokenCount"],
        prices,
        "local",
        **_cache_fields(cache, n_records, totals["totalRecordCount"], prices, s.model, "local", root),
    )


def _bedrock_jobs(s, shards, cache, out_dir: Path, state: Path, pad: bool, n_records: int, log):
    """Send what the cache lacks as Bedrock batch jobs; (plan, jobs, records sent)."""
    jobs = []
    with tempfile.TemporaryDirectory(prefix="carsearch-shards-") as work:
        plan = bedrock.plan_with_cache(shards, cache, Path(work), s.min_records_per_job, pad)
        sent = sum(sh.records for sh in plan.send)
        log(
            f"caption_batch[bedrock]: {n_records} record(s): {n_records - sent + plan.padded} from the caption cache, "
            f"{sent} to send" + (f" ({plan.padded} cached ones padding small jobs)" if plan.padded else "")
        )
        if plan.send:
            s3, br = bedrock.make_clients(s)
            log(
                f"caption_batch[bedrock]: {len(plan.send)} job(s) for {s.model_id} in s3://{s.bucket}/{s.prefix}; state {state}"
            )
            try:
                jobs = bedrock.run_bedrock(plan.send, out_dir, s, state, s3, br)["jobs"]
            finally:  # answers already paid for are kept, even when a job failed
                if cache is not None:
                    bedrock.store_answers(plan, out_dir, cache)
                    cache.close()
        else:
            log("caption_batch[bedrock]: every record is cached; no job submitted")
    return plan, jobs, sent


def _bedrock(
    cfg: Params, root: Path, inputs, jsonl_dir: Path, out_dir: Path, n_records: int, prices: dict, log
) -> dict:
    c = cfg.caption
    s = bedrock.settings_from_cfg(c)
    index = batch.load_index(jsonl_dir)
    if index is None:
        raise CaptionError(f"{jsonl_dir / batch.INDEX_NAME}: missing; re-run make_jsonl (dvc repro make_jsonl)")
    if index["model_id"] != c.model_id:
        raise CaptionError(
            f"caption.model_id: {c.model_id!r} but the request files were made for {index['model_id']!r}; re-run make_jsonl"
        )
    shards = bedrock.shard_jobs(jsonl_dir, index, s.bucket, s.prefix)
    state = (
        resolve(c.bedrock.state_dir, shared_root(root))
        / f"{bedrock.run_hash(s.model_id, index['shards'], s.bucket, s.prefix)}.json"
    )
    cache = open_cache(c, root, cache_context(c, "bedrock", s.model_id))
    plan, jobs, sent = _bedrock_jobs(s, shards, cache, out_dir, state, c.cache.pad_small_jobs, n_records, log)
    bedrock.merge_replayed(plan, out_dir)
    write_json(out_dir / "jobs.json", jobs)
    rec = results.reconcile(inputs, out_dir, {j["file"]: j for j in jobs})
    totals = bedrock.manifest_totals(jobs)
    write_json(out_dir / "manifest.json.out", totals)
    for r in rec["failed_records"][:20]:
        log(f"failed record {r['recordId']} ({r['file']}): {r['reason']}")
    return _metrics(
        "bedrock",
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
        **_cache_fields(cache, n_records, sent, prices, s.model_id, "batch", root),
    )


def run(cfg: Params, root: Path, out_dir: Path, log=print) -> dict:
    """Answer every request file of `paths.jsonl_dir` into `out_dir` with `caption.backend`;
    returns metrics/caption.json (records, tokens, estimated cost, what the cache answered)."""
    c = cfg.caption
    jsonl_dir = resolve(cfg.paths.jsonl_dir, root)
    inputs = sorted(jsonl_dir.glob("*.jsonl"))
    if c.backend not in BACKENDS:
        raise ValueError(f"caption.backend: unknown backend {c.backend!r} (expected one of {', '.join(BACKENDS)})")
    prices_path = resolve(c.pricing, root) if c.pricing else None  # null: no cost estimate
    prices = results.load_prices(prices_path) if prices_path and prices_path.is_file() else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    n_records = sum(1 for f in inputs for _ in read_jsonl(f))
    if c.backend == "offline":
        return _offline(cfg, root, inputs, out_dir, n_records, prices)
    if c.backend == "openai":
        return _openai(cfg, root, inputs, out_dir, n_records, prices, log)
    return _bedrock(cfg, root, inputs, jsonl_dir, out_dir, n_records, prices, log)


def summary_line(m: dict, backend: str, captions_dir: str) -> str:
    usd = (
        "n/a (no price for this model in conf/pricing.yaml)"
        if m["estimated_usd"] is None
        else f"${m['estimated_usd']:.4f}"
    )
    return (
        f"caption_batch[{backend}]: {m['succeeded']} captioned ({m['cached']} from the cache, {m['sent']} sent), {m['failed']} failed "
        f"records (listed in {captions_dir}/failed_records.jsonl), {m['input_tokens']} in / {m['output_tokens']} out tokens "
        f"sent, est. {usd}"
    )
