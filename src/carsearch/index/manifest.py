"""The index's DVC artifact: a small manifest instead of the LanceDB folder in `.dvc/cache`.

`data/index` is a DVC output with `cache: false` (its versions are not copied into the cache on
every build); the tracked, content-addressed artifact is `paths.index_manifest`: the pointer of
the version the build published (version, table, rows, model and its content hash, corpus) plus
`digest`, a sha256 over the rows (id, path) and their vectors in table order. `dvc checkout` of
an old revision restores that revision's manifest (and dvc.lock); the index folder is left as it
is. `carsearch index checkout` then points the live index back at the manifest's version while
it is still on disk (`index.keep_versions`), else says to `dvc repro build_index`, which rebuilds
it from the embedding cache (nothing embedded again) and gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from carsearch.core.io import write_json
from carsearch.index.store import as_table, row_batches, write_meta


def digest(rows, vectors, batch_rows: int = 8192) -> str:
    """sha256 of the rows' ids and paths, then their vectors (float32), in order; `rows` and
    `vectors` as `store.build_table` takes them, read `batch_rows` at a time."""
    rows, h = as_table(rows), hashlib.sha256()
    for batch in rows.select(["id", "path"]).to_batches(batch_rows):
        h.update("".join(f"{i}\t{p}\n" for i, p in zip(*(c.to_pylist() for c in batch.columns))).encode())
    for _, vec in row_batches(rows, vectors, batch_rows):
        h.update(np.ascontiguousarray(vec, np.float32).tobytes())
    return h.hexdigest()


def write(path: Path, meta: dict, rows_digest: str) -> dict:
    """Write the manifest (atomically) from the published pointer `meta`."""
    out = {**meta, "digest": rows_digest}
    write_json(Path(path), out)
    return out


def checkout(index_dir: Path, path: Path) -> dict:
    """Point the live index at the manifest's version (the pointer it was published with). Returns
    the manifest; FileNotFoundError naming what to do when the version is no longer on disk."""
    try:
        man = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no index manifest (run `dvc repro build_index`, or `dvc checkout`)") from None
    version = man["version"]
    vdir = Path(index_dir) / version
    if not vdir.is_dir():
        raise FileNotFoundError(
            f"{path}: index version {version} is no longer in {index_dir} (index.keep_versions); "
            "`dvc repro build_index` rebuilds it from the embedding cache"
        )
    write_meta(index_dir, {k: v for k, v in man.items() if k != "digest"})
    return man
