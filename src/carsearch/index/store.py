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
import itertools
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from carsearch.core.columns import ROW
from carsearch.core.io import write_json
from carsearch.curation.rows import row_table

META_FILE = "carsearch_index.json"
MODEL_SUBDIR = "model"
IMAGES_SUBDIR = "images"  # corpus images read from a folder or S3 (content-addressed, shared by versions)


def with_vectors(meta: pa.Table, vectors: np.ndarray, model_ref: str) -> pa.Table:
    """Rows as `rows.row_table` columns + their vectors -> the table's Arrow schema."""
    if meta.num_rows != len(vectors):
        raise ValueError(f"{meta.num_rows} rows but {len(vectors)} vectors")
    dim = vectors.shape[1] if len(vectors) else 0
    meta = meta.add_column(
        meta.schema.get_field_index("frame_id"), "model_ref", pa.array([model_ref] * meta.num_rows, pa.string())
    )
    flat = pa.array(np.asarray(vectors, np.float32).ravel(), pa.float32())
    return meta.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))


def as_table(rows) -> pa.Table:
    """Rows as given (`rows.row_table` columns), or row dicts made into those columns."""
    return rows if isinstance(rows, pa.Table) else row_table(rows)


def arrow_rows(rows: list[dict], vectors: np.ndarray, model_ref: str) -> pa.Table:
    """Rows (id, path, caption, split, labels/attributes) + vectors -> the table's Arrow schema."""
    return with_vectors(row_table(rows), vectors, model_ref)


# from the row's declaration (carsearch.core.columns): low-cardinality attributes get a bitmap per
# value (fast `where` prefilters), ids and times a BTREE, the captions the full-text index
BITMAP_COLUMNS = tuple(c for c, kind in ROW.indexed.items() if kind == "BITMAP")
BTREE_COLUMNS = tuple(c for c, kind in ROW.indexed.items() if kind == "BTREE")
FTS_COLUMN = next(c for c, kind in ROW.indexed.items() if kind == "FTS")
# what a search returns (never the vector); VEHICLE_COLUMNS where the table has them (built since boxes)
RESULT_COLUMNS = (*(c for c in ROW.hit if c not in ROW.optional), "_distance")
VEHICLE_COLUMNS = tuple(c for c in ROW.hit if c in ROW.optional)


ANN_INDEX_TYPES = ("IVF_HNSW_SQ", "IVF_PQ")


def ann_partitions(rows: int, cfg: dict) -> int:
    """`index.num_partitions`, or (null/0) about one partition per `index.rows_per_partition` rows
    (measured, docs/scale.md), never more partitions than rows/8."""
    n = cfg["num_partitions"]
    if not n:
        n = max(1, round(rows / int(cfg["rows_per_partition"])))
    return int(max(1, min(int(n), max(1, rows // 8))))


def create_ann_index(tbl, cfg: dict, rows: int | None = None) -> str:
    """The vector index of `index.ann_index` (IVF_HNSW_SQ by default, or IVF_PQ searched with a
    refine step); its parameters are chosen by measurement (benchmarks/bench_index.py, docs/scale.md)."""
    import lancedb.index

    rows = tbl.count_rows() if rows is None else rows
    kind = str(cfg["ann_index"]).upper()
    metric, parts = cfg["metric"], ann_partitions(rows, cfg)
    if kind == "IVF_HNSW_SQ":
        conf = lancedb.index.IvfHnswSq(
            distance_type=metric,
            num_partitions=parts,
            m=int(cfg["hnsw_m"]),
            ef_construction=int(cfg["hnsw_ef_construction"]),
        )
    elif kind == "IVF_PQ":
        dim = tbl.schema.field("vector").type.list_size
        sub = int(cfg["num_sub_vectors"] or max(1, dim // 8))  # null: dim / 8
        if dim % sub:
            raise ValueError(f"index.num_sub_vectors: {sub} does not divide the vector dimension {dim}")
        conf = lancedb.index.IvfPq(distance_type=metric, num_partitions=parts, num_sub_vectors=sub)
    else:
        raise ValueError(f"index.ann_index: {kind!r} is not one of {', '.join(ANN_INDEX_TYPES)}")
    # lancedb 0.40: with `config=` the first argument is the column name
    tbl.create_index("vector", config=conf)
    return kind


def create_scalar_indices(tbl, columns: dict[str, str] | None = None) -> list[str]:
    """BITMAP indices on the low-cardinality attribute columns and a BTREE on `id` (fast `where`
    prefilters and id look-ups); columns missing from the table are skipped."""
    import lancedb.index

    names = set(tbl.schema.names)
    columns = columns or {**{c: "BITMAP" for c in BITMAP_COLUMNS}, **{c: "BTREE" for c in BTREE_COLUMNS}}
    done = []
    for col, kind in columns.items():
        if col in names:
            tbl.create_index(
                col, config=lancedb.index.Bitmap() if kind == "BITMAP" else lancedb.index.BTree(), replace=True
            )
            done.append(f"{col}:{kind}")
    return done


def create_fts_index(tbl, column: str = FTS_COLUMN) -> bool:
    """Lance's native full-text (inverted) index on the captions (works offline; no tantivy)."""
    import lancedb.index

    if column not in tbl.schema.names:
        return False
    tbl.create_index(column, config=lancedb.index.FTS(), replace=True)
    return True


def create_indices(tbl, cfg: dict, rows: int | None = None) -> dict:
    """Every index a table gets: the ANN index at >= `index.ann_min_rows` rows (else search is exact
    brute force), scalar indices (`index.scalar_indices`) and the caption FTS index (`index.fts`).
    Returns {"search": kind, "scalar": [...], "fts": bool, "seconds": {...}}."""
    rows = tbl.count_rows() if rows is None else rows
    out: dict = {"search": "brute force (exact)", "scalar": [], "fts": False, "seconds": {}}
    if rows >= int(cfg["ann_min_rows"]):
        t = time.perf_counter()
        out["search"] = create_ann_index(tbl, cfg, rows)
        out["seconds"]["ann"] = round(time.perf_counter() - t, 2)
    if rows and cfg["scalar_indices"]:
        t = time.perf_counter()
        out["scalar"] = create_scalar_indices(tbl)
        out["seconds"]["scalar"] = round(time.perf_counter() - t, 2)
    if rows and cfg["fts"]:
        t = time.perf_counter()
        out["fts"] = create_fts_index(tbl)
        out["seconds"]["fts"] = round(time.perf_counter() - t, 2)
    return out


def row_batches(rows: pa.Table, vectors, batch_rows: int = 8192):
    """(rows, their vectors) `batch_rows` at a time; `vectors`: a matrix in row order, or
    `ids -> matrix` (the embedding cache's `get`), so all vectors are never in memory at once."""
    for a in range(0, rows.num_rows, batch_rows):
        part = rows.slice(a, batch_rows)
        yield part, vectors(part.column("id").to_pylist()) if callable(vectors) else vectors[a : a + batch_rows]


def table_batches(rows: pa.Table, vectors, model_ref: str, batch_rows: int = 8192):
    """The table as Arrow record batches of `batch_rows` rows (`row_batches`): the whole table is
    never in memory at once."""
    for part, vec in row_batches(rows, vectors, batch_rows):
        yield from with_vectors(part, vec, model_ref).to_batches()


def build_table(db_dir: Path | str, table: str, rows, vectors, model_ref: str, cfg: dict, batch_rows: int = 8192):
    """Write the table (`rows`: `rows.row_table` columns or row dicts, in the given order,
    streamed `batch_rows` at a time; `vectors` as in `row_batches`) into the LanceDB database at
    `db_dir` (a folder or an object-store URI such as s3://bucket/prefix) and create its indices.
    Returns (table, kind)."""
    rows = as_table(rows)
    batches = table_batches(rows, vectors, model_ref, batch_rows)
    first = next(batches, None)
    if first is None:
        data = with_vectors(rows, np.zeros((0, 0), np.float32), model_ref)
    else:
        data = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
    tbl = connect(db_dir).create_table(table, data=data, mode="overwrite")
    return tbl, create_indices(tbl, cfg, rows.num_rows)["search"]


def is_uri(location) -> bool:
    """An object-store location (s3://, gs://, az://...) rather than a local path."""
    return "://" in str(location) and not str(location).startswith("file://")


def storage_options(uri: str) -> dict:
    """LanceDB storage options for an object-store URI: credentials come from the boto3 chain
    (env, profile, SSO, instance role) and `AWS_ENDPOINT_URL(_S3)` is honoured (S3-compatible
    stores, moto); an http:// endpoint allows plain HTTP."""
    if not str(uri).startswith(("s3://", "s3a://")):
        return {}
    opts: dict = {}
    try:
        import boto3

        session = boto3.Session()
        creds = session.get_credentials()
        if creds is not None:
            c = creds.get_frozen_credentials()
            opts.update(aws_access_key_id=c.access_key, aws_secret_access_key=c.secret_key)
            if c.token:
                opts["aws_session_token"] = c.token
        if session.region_name:
            opts["region"] = session.region_name
    except Exception:  # noqa: BLE001  (no boto3 / no credentials: let the object store's own chain try)
        pass
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
    return opts


def connect(location, **kw):
    """lancedb.connect for a folder or an object-store URI (with `storage_options` for s3://)."""
    import lancedb

    if is_uri(location):
        return lancedb.connect(
            str(location), storage_options={**storage_options(str(location)), **kw.pop("storage_options", {})}, **kw
        )
    return lancedb.connect(str(location), **kw)


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


def rows_left_out(index_dir: Path, keep_ids) -> list[dict]:
    """Rows of the live version whose ids are not in `keep_ids` (an Arrow array or a list: the
    rebuild's) as {id, origin}: images added by `carsearch index add` outside the corpus, or gone
    from it. [] when there is no live version."""
    meta = read_meta(index_dir)
    if not meta or not meta.get("version"):
        return []
    try:
        live = connect(meta.get("table_uri") or index_dir / meta["version"]).open_table(meta["table"])
        cols = live.search().select(["id", "origin"]).limit(None).to_arrow()  # not the vectors
    except Exception:  # noqa: BLE001 - an unreadable live version has nothing to compare: the rebuild replaces it
        return []
    keep = keep_ids.combine_chunks() if isinstance(keep_ids, pa.ChunkedArray) else pa.array(list(keep_ids), pa.string())
    gone = cols.filter(pc.invert(pc.is_in(cols["id"], value_set=keep)))
    return gone.select(["id", "origin"]).to_pylist()


def ids_not_live(index_dir: Path, ids) -> list[str] | None:
    """The ids (an Arrow array: the rebuild's) that the live version lacks: the rows a rebuild adds,
    which the watchlists run on. None when there is no readable live version (every row is new)."""
    meta = read_meta(index_dir)
    if not meta or not meta.get("version"):
        return None
    try:
        live = connect(meta.get("table_uri") or index_dir / meta["version"]).open_table(meta["table"])
        have = live.search().select(["id"]).limit(None).to_arrow().column("id").combine_chunks()
    except Exception:  # noqa: BLE001 - an unreadable live version: every row counts as new
        return None
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else pa.array(list(ids), pa.string())
    return ids.filter(pc.invert(pc.is_in(ids, value_set=have))).to_pylist()


def new_version() -> str:
    """A version name: sorts by build time (to the microsecond: two builds in one second still sort
    in build order, which `prune` and the fallback to the previous version rely on), unique."""
    now = time.time_ns() // 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000))
    return f"v-{stamp}-{now % 1_000_000:06d}-{uuid.uuid4().hex[:4]}"


def publish(index_dir: Path, stage: Path, meta: dict, keep: int = 2, version: str | None = None) -> str:
    """Rename the built `stage` to a version folder, point META_FILE at it (atomic replace), then
    delete versions older than the `keep` newest and leftovers of killed builds."""
    version = version or new_version()
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
