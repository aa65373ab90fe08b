"""Embeddings cached per (image content hash, model content hash), so re-indexing after adding 1 %
new images embeds only those 1 %. One folder per model hash holding Parquet parts (id, vector),
each written atomically; a later part wins for a repeated id; parts are compacted when many.
A cache survives its own damage: a part that cannot be read (torn by a crash or a full disk) is
moved aside as `<part>.damaged`, listed in `EmbedCache.damaged`, and its images are embedded again."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from carsearch.core.io import atomic_path
from carsearch.core.paths import resolve, shared_root

COMPACT_AT = 32  # parts per model before they are merged into one


class EmbedCache:
    def __init__(self, cache_dir: Path | None, model_hash: str):
        self.dir = None if cache_dir is None else Path(cache_dir) / model_hash.replace("/", "_").replace(":", "_")
        self._vectors: dict[str, np.ndarray] = {}
        self.damaged: list[tuple[str, str]] = []  # (part moved aside, why) this open found
        if self.dir is not None and self.dir.is_dir():
            for part in sorted(self.dir.glob("part-*.parquet")):
                try:
                    ids, vecs = _read_part(part)
                except (pa.ArrowException, OSError, KeyError, ValueError) as e:
                    reason = " ".join(str(e).split()) or type(e).__name__
                    part.replace(part.with_name(part.name + ".damaged"))  # out of the way, kept to look at
                    self.damaged.append((part.name, reason))
                    continue
                self._vectors.update(zip(ids, vecs))

    def __contains__(self, iid: str) -> bool:
        return iid in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[i] for i in ids]) if ids else np.zeros((0, 0), np.float32)

    def put(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        if not len(ids):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        self._vectors.update(zip(ids, vectors))
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        parts = sorted(self.dir.glob("part-*.parquet"))
        if len(parts) + 1 >= COMPACT_AT:  # merge everything known into one part, then drop the old parts
            ids, vectors = list(self._vectors), np.stack(list(self._vectors.values()))
        _write_part(self.dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet", list(ids), vectors)
        if len(parts) + 1 >= COMPACT_AT:
            for p in parts:
                p.unlink(missing_ok=True)


def open_embed_cache(cfg: dict, model_hash: str, root: Path | None = None) -> EmbedCache:
    """The cache of `index.embed_cache_dir` for one model, relative to the original repo root
    (queued experiments share it), as build_index and `carsearch index add` both use it."""
    return EmbedCache(resolve(cfg["embed_cache_dir"], shared_root(root)), model_hash)


def _write_part(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    dim = vectors.shape[1]
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim),
        }
    )
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def _read_part(part: Path) -> tuple[list[str], np.ndarray]:
    t = pq.read_table(part)
    ids = t.column("id").to_pylist()
    if not t.num_rows:
        return ids, np.zeros((0, 0), np.float32)
    flat = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, np.asarray(flat, dtype=np.float32).reshape(t.num_rows, -1)


def damage_note(cache: EmbedCache, who: str) -> str | None:
    """The one line a stage prints when the cache had damaged parts (None when it had none)."""
    if not cache.damaged:
        return None
    name, why = cache.damaged[0]
    more = f" (+{len(cache.damaged) - 1} more)" if len(cache.damaged) > 1 else ""
    return (
        f"{who}: embedding cache {cache.dir}: {len(cache.damaged)} damaged part(s) moved aside as *.damaged, e.g. "
        f"{name}: {why}{more}; their images are embedded again"
    )


def embed_with_cache(
    ids: Sequence[str],
    paths: Sequence,
    cache: EmbedCache,
    encode: Callable[[list], np.ndarray],
    chunk: int = 512,
    progress: bool = False,
) -> tuple[np.ndarray, dict]:
    """Vectors for `ids` (images at `paths`: files or locations `encode` reads): cached ones read
    back, the others encoded in chunks, each cached as it finishes (a killed run resumes from
    there). `progress`: a bar with images/s and the ETA of what is left to embed."""
    todo = [k for k, iid in enumerate(ids) if iid not in cache]
    seen: set[str] = set()
    todo = [k for k in todo if not (ids[k] in seen or seen.add(ids[k]))]
    t0 = time.perf_counter()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="embed", unit="img", initial=0, postfix={"cached": len(ids) - len(todo)})
    for a in range(0, len(todo), chunk):
        ks = todo[a : a + chunk]
        cache.put([ids[k] for k in ks], encode([paths[k] for k in ks]))
        if bar is not None:
            bar.update(len(ks))
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - t0
    stats = {"embedded": len(todo), "cached": len(ids) - len(todo), "embed_seconds": round(secs, 3)}
    if todo and secs > 0:
        stats["images_per_second"] = round(len(todo) / secs, 1)
    return (cache.get(list(ids)) if len(ids) else np.zeros((0, 0), np.float32)), stats
