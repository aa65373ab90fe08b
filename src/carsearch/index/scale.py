"""Scale-out embedding on Ray Data: the same code on a laptop (`ray.init()` starts a local Ray) and
on a cluster (`RAY_ADDRESS=ray://head:10001` or `--address auto` on a cluster node), unchanged.

    corpus files ──from_items──▶ map_batches(_decode)                       CPU tasks, many
                 ──▶ map_batches(_Embedder, concurrency=N, num_gpus=1)      a pool of model actors
                 ──▶ iter_batches ──▶ LanceDB table (local folder or s3://…) streamed appends

- Decoding is `carsearch.core.imaging.open_rgb` + the CLIP processor's own preprocessing
  (`carsearch.model.preprocess.ClipPreprocess`), exactly what `model.encode_images` does in one process, so
  the vectors are the same (tests/test_scale.py checks allclose).
- The model actors each load the model once (from a `save_pretrained` folder every node can read:
  a shared path, or copy it to the nodes) and take one GPU each when the cluster has GPUs.
- Rows are keyed by content id (sha256 of the bytes, like ingest); Ray Data does not keep order.
- The table has the schema of build_index's tables (`carsearch.index.arrow_rows`) and gets the
  same indices (`create_indices`), so `carsearch.index.connect(uri).open_table(...)` searches it.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from carsearch.features.sources import IMAGE_EXTS


def list_corpus(corpus: str | os.PathLike) -> list[str]:
    """Image files under a folder (sorted), or object URIs under an s3:// prefix."""
    corpus = str(corpus)
    if corpus.startswith("s3://"):
        import boto3

        bucket, _, prefix = corpus[5:].partition("/")
        s3 = boto3.client(
            "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [
                f"s3://{bucket}/{o['Key']}"
                for o in page.get("Contents", [])
                if Path(o["Key"]).suffix.lower() in IMAGE_EXTS
            ]
        return sorted(keys)
    root = Path(corpus)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus {corpus}: not a folder")
    return sorted(
        str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def _read(src: str) -> bytes:
    if src.startswith("s3://"):
        import boto3

        bucket, _, key = src[5:].partition("/")
        s3 = boto3.client(
            "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(src, "rb") as f:
        return f.read()


def _decode(batch: dict, prep, draft: bool) -> dict:
    """Batch of {"path"} -> {"id", "path", "pixels", "error"}: a CPU task (no torch, no model)."""
    from carsearch.core.imaging import ImageError, open_rgb

    ids, pix, errs = [], [], []
    size = (3, prep.crop_h, prep.crop_w)
    for src in batch["path"]:
        src, iid, err, px = str(src), "", "", np.zeros(size, np.float32)
        try:
            data = _read(src)
            iid = hashlib.sha256(data).hexdigest()[:16]
            px = prep(open_rgb(data, draft=prep.draft_size if draft else None))
        except ImageError as e:
            err = str(e) or "unreadable image"
        except Exception as e:  # noqa: BLE001  (an unreadable file or object is a reject, never a crash)
            err = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ids.append(iid)
        pix.append(px)
        errs.append(err)
    return {
        "id": np.array(ids, dtype=object),
        "path": np.array([str(p) for p in batch["path"]], dtype=object),
        "pixels": np.stack(pix) if pix else np.zeros((0, *size), np.float32),
        "error": np.array(errs, dtype=object),
    }


class _Embedder:
    """A model actor: loads the model once, embeds pixel batches (on its GPU when it has one)."""

    def __init__(self, model_dir: str):
        import torch

        from carsearch.model.clip import load_pretrained

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, _ = load_pretrained(model_dir)
        self.model.eval().to(self.device)

    def __call__(self, batch: dict) -> dict:
        torch = self.torch
        pix = torch.from_numpy(np.ascontiguousarray(batch["pixels"], dtype=np.float32))
        with torch.no_grad():
            if self.device.type == "cuda":
                pix = pix.pin_memory().to(self.device, non_blocking=True)
            feats = self.model.get_image_features(pixel_values=pix)
            feats = getattr(feats, "pooler_output", feats)
            vec = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
        return {"id": batch["id"], "path": batch["path"], "error": batch["error"], "vector": vec}


def _labels(path: str, corpus: str, key: str | None) -> dict | None:
    if not key:
        return None
    from carsearch.features.labels import folder_label

    rel = path[len(corpus) :].lstrip("/") if path.startswith(corpus) else Path(path).name
    value = folder_label(rel, key)
    return {key: value} if value else None


def embed_corpus(
    corpus: str | os.PathLike,
    out: str,
    model_dir: str | os.PathLike,
    *,
    table: str = "cars",
    concurrency: int = 2,
    batch_size: int = 64,
    num_gpus: float | None = None,
    num_cpus: float = 1.0,
    draft: bool = True,
    subfolder_key: str | None = "color",
    index_cfg: dict,
    address: str | None = None,
    paths: Iterable[str] | None = None,
    progress: bool = False,
) -> dict:
    """Embed every image of `corpus` (a folder or an s3:// prefix) with the model in `model_dir`
    on Ray Data, `concurrency` model actors (`num_gpus` each: default 1 when the cluster has GPUs,
    else 0), and write the table `table` at `out` (a LanceDB folder or URI, e.g. s3://bucket/prefix).
    Returns counts and timings; unreadable files are listed under "rejects"."""
    import ray

    from carsearch.index.store import arrow_rows, connect, create_indices
    from carsearch.model.clip import load_pretrained
    from carsearch.model.preprocess import ClipPreprocess

    corpus = str(corpus)
    paths = list(paths) if paths is not None else list_corpus(corpus)
    if not paths:
        raise ValueError(f"corpus {corpus}: no image files")
    _, processor = load_pretrained(model_dir)
    prep = ClipPreprocess.from_processor(processor)
    if not ray.is_initialized():
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS"),
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
        )
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    model_ref = f"{Path(str(model_dir)).name}"
    t0 = time.perf_counter()
    ds = ray.data.from_items(
        [{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths) // batch_size + 1, 1000))
    )
    ds = ds.map_batches(
        _decode,
        fn_kwargs={"prep": prep, "draft": draft},
        batch_size=batch_size,
        num_cpus=num_cpus,
        batch_format="numpy",
    )
    ds = ds.map_batches(
        _Embedder,
        fn_constructor_args=(str(model_dir),),
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        num_cpus=0 if num_gpus else num_cpus,
        batch_format="numpy",
    )
    db = connect(out)
    tbl, rows, rejects, seen = None, 0, [], set()
    for b in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        keep = [i for i, (iid, err) in enumerate(zip(b["id"], b["error"])) if not err and iid not in seen]
        rejects += [
            {"path": str(b["path"][i]), "reason": str(b["error"][i])} for i in range(len(b["id"])) if b["error"][i]
        ]
        if not keep:
            continue
        seen.update(str(b["id"][i]) for i in keep)
        recs = [
            {
                "id": str(b["id"][i]),
                "path": str(b["path"][i]),
                "origin": str(b["path"][i]),
                "labels": _labels(str(b["path"][i]), corpus, subfolder_key),
            }
            for i in keep
        ]
        data = arrow_rows(recs, np.asarray(b["vector"])[keep], model_ref)
        if tbl is None:
            tbl = db.create_table(table, data=data, mode="overwrite")
        else:
            tbl.add(data)
        rows += len(keep)
    embed_s = time.perf_counter() - t0
    info = create_indices(tbl, index_cfg, rows) if tbl is not None else {"search": None}
    return {
        "rows": rows,
        "rejected": len(rejects),
        "rejects": rejects,
        "out": str(out),
        "table": table,
        "search": info["search"],
        "actors": concurrency,
        "num_gpus_per_actor": num_gpus,
        "embed_seconds": round(embed_s, 2),
        "images_per_second": round(rows / embed_s, 1) if embed_s else None,
    }


def open_table(uri: str, table: str = "cars"):
    """A table written by `embed_corpus` or `index.build_table` (folder or s3:// URI)."""
    from carsearch.index.store import connect

    return connect(uri).open_table(table)


def search_table(
    tbl,
    vector,
    k: int = 10,
    where: str | None = None,
    nprobes: int | None = None,
    refine_factor: int | None = None,
    metric: str = "cosine",
) -> list[dict]:
    """The k nearest rows (metadata + `score` = 1 - distance) of a table opened by `open_table`,
    with CarSearch's filter grammar and ANN knobs."""
    from carsearch.index.query import check_where
    from carsearch.index.store import RESULT_COLUMNS

    where = check_where(where)
    q = tbl.search(np.asarray(vector, np.float32)).distance_type(metric)
    if nprobes:
        q = q.nprobes(int(nprobes))
    if refine_factor:
        q = q.refine_factor(int(refine_factor))
    q = q.select(list(RESULT_COLUMNS)).limit(int(k))
    rows = (q.where(where, prefilter=True) if where else q).to_list()
    return [
        {**{c: r[c] for c in RESULT_COLUMNS if c != "_distance"}, "score": 1.0 - float(r["_distance"])} for r in rows
    ]
