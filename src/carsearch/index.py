"""The LanceDB table of image vectors plus metadata, published atomically.

Layout of `index_dir`: one folder per build, `v-<time>-<hash>/` (a LanceDB database holding the
table, plus `model/`, the model that embedded it), and `carsearch_index.json`, the pointer readers
follow (which version, which model, how many rows). A build writes a new version beside the live
one and then replaces the pointer with one rename: a reader sees the old index or the new one,
never a half-written one, and an open reader keeps working on the old version (kept until the
build after next). A killed build leaves only a `.building-*` folder, removed by the next build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from .io import write_json

META_FILE = "carsearch_index.json"
ATTRS = ("make", "model", "model_id", "body_type", "color", "view", "scene")
MODEL_SUBDIR = "model"
IMAGES_SUBDIR = "images"  # corpus images read from a folder or S3 (content-addressed, shared by versions)


def dir_hash(path: Path) -> str:
    """Content hash of a model directory (weights and configs), to record what built an index."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".json", ".bin", ".txt"} and p.name != "carsearch_run.json":
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def arrow_rows(rows: list[dict], vectors: np.ndarray, model_ref: str) -> pa.Table:
    """Rows (id, path, caption, split, labels/attributes) + vectors -> the table's Arrow schema."""
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    dim = vectors.shape[1] if len(vectors) else 0
    cols = {
        "id": [r["id"] for r in rows],
        "path": [r["path"] for r in rows],
        "caption": [r.get("caption") or "" for r in rows],
        "split": [r.get("split") or "" for r in rows],
    }
    for a in ATTRS:
        cols[a] = [str((r.get("labels") or {}).get(a) or (r.get("attributes") or {}).get(a) or "") for r in rows]
    cols["labels_json"] = [json.dumps(r.get("labels") or {}, sort_keys=True) for r in rows]
    cols["origin"] = [r.get("origin") or "" for r in rows]
    cols["model_ref"] = [model_ref] * len(rows)
    return pa.table({**{k: pa.array(v, pa.string()) for k, v in cols.items()},
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).ravel(), pa.float32()), dim)})


def create_ann_index(tbl, cfg: dict) -> str:
    import lancedb.index

    # lancedb 0.40: with `config=` the first argument is the column name
    tbl.create_index("vector", config=lancedb.index.IvfHnswSq(
        distance_type=cfg.get("metric", "cosine"), num_partitions=int(cfg.get("num_partitions", 256))))
    return "IVF_HNSW_SQ"


def build_table(db_dir: Path, table: str, rows: list[dict], vectors: np.ndarray, model_ref: str, cfg: dict):
    """Write the table (rows in the given order) into the LanceDB database at `db_dir`."""
    import lancedb

    tbl = lancedb.connect(str(db_dir)).create_table(table, data=arrow_rows(rows, vectors, model_ref), mode="overwrite")
    kind = "brute force (exact)"
    if len(rows) >= int(cfg.get("ann_min_rows", 100_000)):
        kind = create_ann_index(tbl, cfg)
    return tbl, kind


# ----------------------------------------------------------------- versions and the pointer
def begin(index_dir: Path) -> Path:
    """A fresh folder to build the next version in (invisible to readers until `publish`)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    stage = index_dir / f".building-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    return stage


def read_meta(index_dir: Path) -> dict | None:
    p = Path(index_dir) / META_FILE
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None


def write_meta(index_dir: Path, meta: dict) -> None:
    write_json(Path(index_dir) / META_FILE, meta)


def publish(index_dir: Path, stage: Path, meta: dict, keep: int = 2) -> str:
    """Rename the built `stage` to a version folder, point META_FILE at it (atomic replace), then
    delete versions older than the `keep` newest and leftovers of killed builds."""
    version = f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    os.replace(stage, index_dir / version)
    write_meta(index_dir, {**meta, "version": version})
    prune(index_dir, keep)
    return version


def versions(index_dir: Path) -> list[Path]:
    return sorted(p for p in Path(index_dir).glob("v-*") if p.is_dir())


def prune(index_dir: Path, keep: int = 2) -> None:
    meta = read_meta(index_dir) or {}
    live = meta.get("version")
    vs = [v for v in versions(index_dir) if v.name != live]
    for old in vs[: max(0, len(vs) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in Path(index_dir).glob(".building-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    for legacy in ("base_model", f"{meta.get('table', 'cars')}.lance"):  # layout before versions
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(Path(index_dir) / legacy)


def copy_model(src: Path, dst: Path) -> None:
    """Copy a model folder into the index version (a copy, not links: the source is rewritten by
    the next fine-tuning, the index must keep the model that embedded it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("carsearch_run.json"))
