"""A persistent cache of model answers, one entry per request record, so that re-captioning a
folder pays only for what changed (new images, or a changed prompt / model / setting).

Key: sha256 of everything that changes what the model would answer:
- the record's `modelInput` with the image replaced by a stand-in (the sha256 of the inline base64
  image for Claude/OpenAI, the file name `<image id>.<ext>` of an S3-referenced Nova image, since
  the S3 folder of a request depends on the batch it is in), which keeps the prompts, max_tokens,
  temperature, anthropic_version/schemaVersion;
- the `recordId` (the image's content hash);
- a context dict from the stage: backend, model id (and the served model for openai), the image
  limits (`max_image_edge`, `max_image_bytes`: they decide the bytes of a Nova image that the key
  does not hash), and for the offline captioner a hash of its code and of the record's labels.

Storage (`<dir>/segments/*.jsonl`): every writer appends to its own new segment file, one JSON
line an entry (`{"key", "recordId", "modelOutput", ...}`, the key first), flushed as it goes, so a
killed run keeps every answer it already paid for and a concurrent reader sees whole lines (a
torn last line is skipped). Segments are never rewritten in place; when there are more than
`COMPACT_AT` of them a writer merges the idle ones into one (temp file + rename, then delete),
skipping segments another process still holds (`flock`). A reader that loses a race with a
compaction simply rescans. Lookups parse only the lines whose key is wanted.

Only successful answers are stored: record errors, HTTP failures and refusals (stop reason
`refusal`/`content_filtered`/...) are not, so they are retried next time. An answer that is not a
valid caption (no JSON, missing field) is still the model's answer to that exact request and is
cached: re-asking would cost the same and (at temperature 0) say the same.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from carsearch.captioning import formats
from carsearch.captioning.formats import count_output, empty_totals
from carsearch.core.io import atomic_path, read_jsonl, write_json, write_jsonl
from carsearch.core.paths import resolve, shared_root
from carsearch.core.schema import Caption

VERSION = 1
SEGMENTS = "segments"
COMPACT_AT = 64
_KEY_PREFIX = '{"key": "'


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def normalized_input(model_input: dict) -> dict:
    """`modelInput` with images replaced by stand-ins that do not depend on where the batch lives."""
    body = copy.deepcopy(model_input)
    for msg in body.get("messages") or []:
        for block in msg.get("content") or []:
            if not isinstance(block, dict):
                continue
            src = block.get("source") if block.get("type") == "image" else None
            if isinstance(src, dict) and "data" in src:  # Claude: inline base64
                src["data"] = "sha256:" + _sha(src["data"])
            loc = ((block.get("image") or {}).get("source") or {}).get("s3Location")
            if isinstance(loc, dict) and "uri" in loc:  # Nova: s3://.../<batch>/input/<shard>/images/<id>.<ext>
                loc["uri"] = loc["uri"].rsplit("/", 1)[-1]
    return body


def record_key(record: dict, context: dict, extra: dict | None = None) -> str:
    blob = json.dumps(
        {
            "v": VERSION,
            "ctx": context,
            "extra": extra,
            "recordId": record["recordId"],
            "input": normalized_input(record["modelInput"]),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return _sha(blob)


def cacheable(out: dict) -> bool:
    """A successful answer (not a record error, not a refusal)."""
    mo = out.get("modelOutput")
    if "error" in out or not isinstance(mo, dict):
        return False
    return formats.stop_reason(mo) not in formats.REFUSAL_STOPS


class CaptionCache:
    """`cache = CaptionCache(dir, context)`; `cache.lookup(keys)`; `cache.add(key, out)`; `cache.close()`."""

    def __init__(self, root: str | os.PathLike, context: dict):
        self.root = Path(root)
        self.context = dict(context)
        self.seg_dir = self.root / SEGMENTS
        self.seg_dir.mkdir(parents=True, exist_ok=True)
        self._fh = None
        self._path: Path | None = None
        self.written = 0
        # what this run replayed / sent (the stage reports them)
        self.hits = self.misses = self.hit_input_tokens = self.hit_output_tokens = 0

    # ---------------------------------------------------------------- keys
    def key(self, record: dict, extra: dict | None = None) -> str:
        return record_key(record, self.context, extra)

    # ---------------------------------------------------------------- read
    def _segments(self) -> list[Path]:
        return sorted(p for p in self.seg_dir.glob("*.jsonl") if not p.name.startswith("."))

    def lookup(self, keys) -> dict[str, dict]:
        """The stored entries for these keys (absent keys are simply missing)."""
        wanted, found = set(keys), {}
        if not wanted:
            return found
        for _ in range(5):  # a compaction may delete a segment between listing and opening it
            try:
                for p in self._segments():
                    with open(p, encoding="utf-8") as f:
                        for line in f:
                            if not line.startswith(_KEY_PREFIX):
                                continue
                            k = line[len(_KEY_PREFIX) : len(_KEY_PREFIX) + 64]
                            if k not in wanted or k in found:
                                continue
                            try:
                                entry = json.loads(line)
                            except json.JSONDecodeError:  # torn last line of a segment being written
                                continue
                            if isinstance(entry.get("modelOutput"), dict):
                                found[k] = entry
                return found
            except FileNotFoundError:
                found.clear()
        raise RuntimeError(f"{self.seg_dir}: segments keep disappearing while reading")

    def replay(self, record: dict, entry: dict) -> dict:
        """The `.jsonl.out` line for a cached record (its current modelInput, the stored answer)."""
        self.hits += 1
        i, o = formats.usage_tokens(entry["modelOutput"])
        self.hit_input_tokens += i
        self.hit_output_tokens += o
        return formats.output_record(record["recordId"], record["modelInput"], model_output=entry["modelOutput"])

    # ---------------------------------------------------------------- write
    def _open(self):
        if self._fh is None:
            name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            self._path = self.seg_dir / name
            hidden = self.seg_dir / f".{name}"
            self._fh = open(hidden, "a", encoding="utf-8")
            fcntl.flock(self._fh, fcntl.LOCK_EX)  # held while writing: compaction leaves it alone
            os.replace(hidden, self._path)  # visible only once locked
        return self._fh

    def add(self, key: str, out: dict) -> bool:
        """Store a successful answer; returns False (stores nothing) for errors and refusals."""
        if not cacheable(out):
            return False
        entry = {
            "key": key,
            "recordId": out["recordId"],
            "modelOutput": out["modelOutput"],
            "backend": self.context.get("backend"),
            "model": self.context.get("model"),
            "t": round(time.time()),
        }
        f = self._open()
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")  # "key" first: lookups skip by prefix
        f.flush()
        self.written += 1
        return True

    def close(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        if len(self._segments()) > COMPACT_AT:
            self.compact()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def compact(self) -> int:
        """Merge every idle segment into one (deduplicated by key); returns the segments merged."""
        locked, seen = [], set()
        try:
            for p in self._segments():
                try:
                    fh = open(p, "rb+")
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    fh.close()
                    continue  # another writer holds it
                locked.append((p, fh))
            if len(locked) < 2:
                return 0
            name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-compact-{secrets.token_hex(4)}.jsonl"

            with atomic_path(self.seg_dir / name) as tmp, open(tmp, "w", encoding="utf-8") as w:
                for p, fh in locked:
                    fh.seek(0)
                    for raw in fh:
                        line = raw.decode("utf-8", "replace")
                        if not line.endswith("\n"):
                            continue
                        try:
                            entry = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if entry.get("key") in seen:
                            continue
                        seen.add(entry["key"])
                        w.write(line)
                w.flush()
                os.fsync(w.fileno())
            for p, _ in locked:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            return len(locked)
        finally:
            for _, fh in locked:
                fh.close()

    def stats(self) -> dict:
        return {
            "cached": self.hits,
            "sent": self.misses,
            "cached_input_tokens": self.hit_input_tokens,
            "cached_output_tokens": self.hit_output_tokens,
            "cache_entries_written": self.written,
        }


def open_cache(cfg: Caption, root: Path, context: dict) -> CaptionCache | None:
    """The cache from `caption.cache` (`enabled`, `dir`), or None when disabled."""
    c = cfg.cache
    if not c.enabled:
        return None
    # relative to the original repo (queued experiments share it), like the embedding cache
    return CaptionCache(resolve(c.dir, shared_root(root)), context)


def split_records(
    records: list[dict], cache: CaptionCache | None, extra=None
) -> tuple[dict[str, dict], list[tuple[dict, str]]]:
    """(cached outputs by recordId, [(uncached record, key)]); `extra(record)` adds per-record key material."""
    if cache is None:
        return {}, [(r, "") for r in records]
    keys = [cache.key(r, extra(r) if extra else None) for r in records]
    found = cache.lookup(keys)
    cached, todo = {}, []
    for r, k in zip(records, keys):
        if k in found:
            cached[r["recordId"]] = cache.replay(r, found[k])
        else:
            cache.misses += 1
            todo.append((r, k))
    return cached, todo


def answer_files(
    input_files, out_dir, cache: CaptionCache | None, answer_all, progress: bool = True, extra=None
) -> dict:
    """The loop every backend that answers record by record shares (offline, OpenAI-compatible):
    per input file, replay cached records, answer the rest with `answer_all(todo records) -> outputs`
    (in order; may be lazy), count and cache each answer as it arrives, and write `<name>.out` with
    every record plus `manifest.json.out`. Returns totals of what was answered (not replayed)."""
    from tqdm import tqdm

    totals = empty_totals()
    try:
        for path in input_files:
            records = list(read_jsonl(path))
            cached, todo = split_records(records, cache, extra)
            fresh = {}
            answers = answer_all([rec for rec, _ in todo])
            for (rec, key), out in tqdm(
                zip(todo, answers), total=len(todo), desc=f"caption {path.name}", disable=not progress, unit="rec"
            ):
                totals["totalRecordCount"] += 1
                count_output(totals, out)
                if cache is not None:
                    cache.add(key, out)
                fresh[rec["recordId"]] = out
            write_jsonl(
                out_dir / f"{path.name}.out", (cached.get(r["recordId"]) or fresh[r["recordId"]] for r in records)
            )
    finally:
        if cache is not None:
            cache.close()
    write_json(out_dir / "manifest.json.out", totals)
    return totals
