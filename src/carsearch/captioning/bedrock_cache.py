"""The caption cache in a Bedrock run: which records of each shard are answered from the cache
(replayed) and which are sent, the rewritten shards, and the answers stored back after the run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from carsearch.captioning import formats
from carsearch.captioning.bedrock_jobs import ShardJob
from carsearch.captioning.cache import split_records
from carsearch.core.io import write_bytes


@dataclass
class CachePlan:
    send: list[ShardJob]  # shards to submit (only uncached records)
    replay: dict[str, list[dict]]  # shard file -> output lines replayed from the cache
    keys: dict[str, str]  # recordId -> cache key, for the records sent
    padded: int = 0  # cached records sent again to reach min_records_per_job


def plan_with_cache(
    shards: list[ShardJob], cache, work_dir: Path, min_records: int = 0, pad: bool = False
) -> CachePlan:
    """Split every shard into cached records (replayed) and the rest, and rewrite each shard to hold
    only the rest (`work_dir/<shard file>`; an all-new shard is sent unchanged, an all-cached one
    not at all). A Nova shard keeps only the images its remaining records reference. With `pad`,
    a rewritten shard under `min_records` is topped up with cached records (sent and paid for again,
    their cached answers kept) so Bedrock accepts the job."""
    plan = CachePlan([], {}, {})
    for sh in shards:
        raw = [line for line in sh.path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
        recs = [json.loads(line) for line in raw]
        cached, todo = split_records(recs, cache)
        if cached:
            plan.replay[sh.file] = [cached[r["recordId"]] for r in recs if r["recordId"] in cached]
        if not todo:
            continue
        plan.keys.update((r["recordId"], k) for r, k in todo)
        if not cached:
            plan.send.append(sh)
            continue
        keep = {r["recordId"] for r, _ in todo}
        if pad and len(keep) < min_records:
            extra = [r["recordId"] for r in recs if r["recordId"] not in keep][: min_records - len(keep)]
            keep.update(extra)
            plan.padded += len(extra)
        lines = [line if line.endswith("\n") else line + "\n" for line, r in zip(raw, recs) if r["recordId"] in keep]
        data = "".join(lines).encode("utf-8")
        path = Path(work_dir) / sh.file
        write_bytes(path, data)
        uris = set()
        for r in recs:
            if r["recordId"] in keep:
                for msg in r["modelInput"].get("messages", []):
                    for block in msg.get("content", []):
                        loc = (
                            (block.get("image") or {}).get("source", {}).get("s3Location")
                            if isinstance(block, dict)
                            else None
                        )
                        if loc:
                            uris.add(loc["uri"])
        plan.send.append(
            ShardJob(
                sh.file,
                path,
                hashlib.sha256(data).hexdigest(),
                len(lines),
                sh.input_uri,
                sh.output_uri,
                {u: f for u, f in sh.images.items() if u in uris},
            )
        )
    return plan


def store_answers(plan: CachePlan, out_dir: Path, cache) -> int:
    """Put the successful answers of the downloaded `.jsonl.out` files of the sent shards into the cache."""
    n = 0
    for sh in plan.send:
        p = out_dir / f"{sh.file}.out"
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = plan.keys.get(rec.get("recordId")) if isinstance(rec, dict) else None
            if key and cache.add(key, rec):
                n += 1
    return n


def merge_replayed(plan: CachePlan, out_dir: Path) -> None:
    """Add the cached answers to each shard's `.jsonl.out` (written when no job ran for the shard),
    so the outputs hold every record; a padded record keeps its cached answer."""
    for file, outs in plan.replay.items():
        p = out_dir / f"{file}.out"
        mine = {o["recordId"] for o in outs}
        kept = []
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    if json.loads(line).get("recordId") in mine:
                        continue
                except (json.JSONDecodeError, AttributeError):
                    pass
                kept.append(line + "\n")
        write_bytes(p, ("".join(kept) + "".join(formats.dumps(o) + "\n" for o in outs)).encode("utf-8"))
