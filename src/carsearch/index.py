"""The LanceDB table of image vectors plus metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

META_FILE = "carsearch_index.json"
ATTRS = ("make", "model", "model_id", "body_type", "color", "view", "scene")


def dir_hash(path: Path) -> str:
    """Content hash of a model directory (weights and configs), to record what built an index."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".json", ".bin", ".txt"} and p.name != "carsearch_run.json":
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_table(db_dir: Path, table: str, rows: list[dict], vectors: np.ndarray, model_ref: str, cfg: dict):
    import lancedb
    import lancedb.index

    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    dim = vectors.shape[1]
    cols = {
        "id": [r["id"] for r in rows],
        "path": [r["path"] for r in rows],
        "caption": [r.get("caption", "") for r in rows],
        "split": [r.get("split", "") for r in rows],
    }
    for a in ATTRS:
        cols[a] = [str((r.get("labels") or {}).get(a) or (r.get("attributes") or {}).get(a) or "") for r in rows]
    cols["labels_json"] = [json.dumps(r.get("labels") or {}, sort_keys=True) for r in rows]
    cols["model_ref"] = [model_ref] * len(rows)
    data = pa.table({**{k: pa.array(v, pa.string()) for k, v in cols.items()},
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim)})
    db = lancedb.connect(str(db_dir))
    tbl = db.create_table(table, data=data, mode="overwrite")
    kind = "brute force (exact)"
    if len(rows) >= int(cfg.get("ann_min_rows", 100_000)):
        tbl.create_index(vector_column_name="vector", config=lancedb.index.IvfFlat(
            distance_type=cfg.get("metric", "cosine"), num_partitions=int(cfg.get("num_partitions", 256))))
        kind = "IVF_FLAT"
    return tbl, kind
