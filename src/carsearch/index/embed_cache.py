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
from carsearch.core.schema import Index

COMPACT_AT = 32  # parts per model before they are merged into one


class EmbedCache:
    """The cache of one model: every cached vector in one float32 matrix (rows grown by doubling)
    and an id -> row dict, ~(4 x dim + 100) bytes per image in memory; no per-vector objects."""

    def __init__(self, cache_dir: Path | None, model_hash: str):
        self.dir = None if cache_dir is None else Path(cache_dir) / model_hash.replace("/", "_").replace(":", "_")
        self._row: dict[str, int] = {}
        self._mat = np.zeros((0, 0), np.float32)
        self._want = 0  # rows reserved before the dimension is known (the first vectors set it)
        self.damaged: list[tuple[str, str]] = []  # (part moved aside, why) this open found
        if self.dir is not None and self.dir.is_dir():
            parts = sorted(self.dir.glob("part-*.parquet"))
            self.reserve(sum(_rows_in(p) for p in parts))  # one allocation, not a doubling per part
            for part in parts:
                try:
                    ids, vecs = _read_part(part)
                except (pa.ArrowException, OSError, KeyError, ValueError) as e:
                    reason = " ".join(str(e).split()) or type(e).__name__
                    part.replace(part.with_name(part.name + ".damaged"))  # out of the way, kept to look at
                    self.damaged.append((part.name, reason))
                    continue
                self._add(ids, vecs)

    def __contains__(self, iid: str) -> bool:
        return iid in self._row

    def __len__(self) -> int:
        return len(self._row)

    @property
    def dim(self) -> int:
        return int(self._mat.shape[1])

    def _add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Into memory; a repeated id takes the newer vector."""
        if not len(ids):
            return
        if self._mat.shape[1] != vectors.shape[1]:
            if len(self._row):
                raise ValueError(
                    f"embedding cache {self.dir}: vectors of dim {vectors.shape[1]} and {self._mat.shape[1]}"
                )
            self._mat = np.zeros((0, vectors.shape[1]), np.float32)
        need = len(self._row) + len(ids)
        if need > len(self._mat):
            self.reserve(max(need, self._want, 2 * len(self._mat), 1024), vectors.shape[1])
        for iid, v in zip(ids, vectors):
            k = self._row.setdefault(iid, len(self._row))
            self._mat[k] = v

    def reserve(self, n: int, dim: int | None = None) -> None:
        """Room for `n` vectors in all (a build reserves what it will embed: no doubling, no copy
        of the old matrix beside the new one at the end of a 1M-image build)."""
        dim = self.dim if dim is None else dim
        self._want = max(self._want, n)
        if n <= len(self._mat) or not dim:
            return
        grown = np.zeros((n, dim), np.float32)
        grown[: len(self._row)] = self._mat[: len(self._row)]
        self._mat = grown

    def get(self, ids: Sequence[str]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, 0), np.float32)
        return self._mat[[self._row[i] for i in ids]]

    def put(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        if not len(ids):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        self._add(list(ids), vectors)
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        parts = sorted(self.dir.glob("part-*.parquet"))
        if len(parts) + 1 >= COMPACT_AT:  # merge everything known into one part, then drop the old parts
            ids, vectors = list(self._row), self._mat[: len(self._row)]
        _write_part(self.dir / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet", list(ids), vectors)
        if len(parts) + 1 >= COMPACT_AT:
            for p in parts:
                p.unlink(missing_ok=True)


def open_embed_cache(cfg: Index, model_hash: str, root: Path | None = None) -> EmbedCache:
    """The cache of `index.embed_cache_dir` for one model, relative to the original repo root
    (queued experiments share it), as build_index and `carsearch index add` both use it."""
    return EmbedCache(resolve(cfg.embed_cache_dir, shared_root(root)), model_hash)


def _write_part(path: Path, ids: list[str], vectors: np.ndarray, group: int = 65536) -> None:
    """One part, `group` rows at a time (a compaction of the whole cache holds one slice in Arrow)."""
    dim = vectors.shape[1]
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    with atomic_path(path, suffix=".parquet") as tmp, pq.ParquetWriter(tmp, schema) as w:
        for a in range(0, len(ids), group):
            flat = pa.array(np.ascontiguousarray(vectors[a : a + group], np.float32).ravel(), pa.float32())
            w.write_table(
                pa.table(
                    {
                        "id": pa.array(ids[a : a + group], pa.string()),
                        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                    },
                    schema=schema,
                )
            )


def _rows_in(part: Path) -> int:
    """A part's row count from its footer (0 when it cannot be read: the open then moves it aside)."""
    try:
        return pq.read_metadata(part).num_rows
    except (pa.ArrowException, OSError):
        return 0


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


def embed_missing(
    ids: Sequence[str],
    paths: Sequence,
    cache: EmbedCache,
    encode: Callable[[list], np.ndarray],
    chunk: int = 512,
    progress: bool = False,
) -> dict:
    """Encode the images of `ids` (at `paths`: files or locations `encode` reads) the cache does not
    hold, in chunks, each cached as it finishes (a killed run resumes from there). `progress`: a
    bar with images/s and the ETA of what is left to embed. Returns the stats."""
    todo = [k for k, iid in enumerate(ids) if iid not in cache]
    seen: set[str] = set()
    todo = [k for k in todo if not (ids[k] in seen or seen.add(ids[k]))]
    cache.reserve(len(cache) + len(todo))
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
    return stats
