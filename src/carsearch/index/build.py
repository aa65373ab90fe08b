"""The build_index stage's work, as a library: `run(cfg, root, registry) -> BuiltIndex` gates the
model, reads the corpus, embeds what the cache lacks, publishes the new version (and its DVC
manifest, and the bucket copy under `index.uri`); `index_metrics` / `summary_lines` say what it did.

`registry` is the MLflow model registry (`carsearch.experiments.tracking`, passed in by the stage:
the index layer does not import experiments): it checks the fine-tuned model is the registered one
and moves the @champion alias to the version the live index was built with.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from carsearch.core import originals
from carsearch.core.confidence import reference_rows
from carsearch.core.io import dir_hash, reporting_refused_writes, write_jsonl
from carsearch.core.params import ParamsError
from carsearch.core.paths import resolve
from carsearch.core.schema import Params
from carsearch.curation import corpus, crops
from carsearch.index import manifest as index_manifest
from carsearch.index import ray_engine, remote
from carsearch.index.calibration import ship_calibration
from carsearch.index.embed_cache import damage_note, embed_missing, open_embed_cache
from carsearch.index.promotion import promotion_decision
from carsearch.index.store import (
    IMAGES_SUBDIR,
    MODEL_SUBDIR,
    begin,
    build_table,
    copy_model,
    ids_not_live,
    new_version,
    publish,
    read_meta,
    rows_left_out,
    write_meta,
)
from carsearch.model.clip import encode_images, load_clip, load_pretrained, save_clip
from carsearch.model.wiseft import save_interpolated


@dataclass
class BuiltIndex:
    """What `run` published: `summary` (the version's meta and index.json), the corpus `rows`, the
    `rejects` and `notes` of reading it, and the rows of the previous index left out."""

    version: str
    summary: dict
    rows: pa.Table
    rejects: list
    notes: dict
    left_out: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    switched: bool = False
    vectors: Callable | None = None  # ids -> vectors (the embedding cache)
    new_ids: list | None = None  # ids the previous live version lacked (None: none was live): the watches' rows


def decide(cfg: Params, root: Path) -> dict:
    """The promotion gate (carsearch.index.promotion) on metrics/eval.json: which model to index."""
    promote = cfg.index.promote
    if promote is None or not promote.metric:  # null: always the fine-tuned model
        return {"use": "finetuned", "reason": "no promotion gate configured (index.promote.metric: null)"}
    eval_file = resolve(cfg.paths.metrics_dir, root) / "eval.json"
    if not eval_file.is_file():
        raise FileNotFoundError(f"build_index: {eval_file} not found; run the evaluate stage first")
    return promotion_decision(json.loads(eval_file.read_text()), promote.metric, promote.min_gain, promote.set)


def _finetuned(cfg: Params, root: Path, model_copy: Path, registry):
    rel = cfg.paths.model_dir
    ft_dir = resolve(rel, root)
    if not ft_dir.is_dir():
        raise FileNotFoundError(f"build_index: {rel} not found; run finetune_clip first")
    content = dir_hash(ft_dir)
    copy_model(ft_dir, model_copy)
    model, processor = load_pretrained(model_copy)
    run_file = ft_dir / "carsearch_run.json"
    run = json.loads(run_file.read_text()) if run_file.is_file() else {}
    reg = run.get("registered_model") or {}
    registered = {
        "name": reg.get("name"),
        "version": reg.get("version"),
        "mlflow_run_id": run.get("mlflow_run_id"),
        "content_hash": content,
        "registry_checked": False,
        "source_dir": rel,
    }
    if reg and registry is not None:
        registry.setup(cfg.mlflow)
        mv = registry.find_model_version(reg)
        if mv is not None:
            registered["registry_checked"] = True
            if mv["tags"].get("content_hash") not in (None, content):
                raise ValueError(
                    f"build_index: {rel} (hash {content}) is not what "
                    f"{reg['name']} v{reg['version']} registered ({mv['tags']['content_hash']})"
                )
    return model, processor, MODEL_SUBDIR, f"{rel}@{content}", registered


def promoted_model(cfg: Params, root: Path, decision: dict, stage: Path, registry=None):
    """Load the model the gate chose and copy it into the index version folder `stage/model`.
    Returns (model, processor, model_dir relative to the index version (or a hub id), model_ref
    "<where it came from>@<content hash>", registry info)."""
    rel, model_copy, spec = cfg.paths.model_dir, stage / MODEL_SUBDIR, cfg.model
    if decision["use"].startswith("wise_ft_"):  # (1 - alpha) base + alpha fine-tuned, travels in the index
        save_interpolated(spec, cfg.train.seed, resolve(rel, root), decision["alpha"], model_copy)
        model, processor = load_pretrained(model_copy)
        content = dir_hash(model_copy)
        ref = f"{decision['use']}:{rel}@{dir_hash(resolve(rel, root))}"
        info = {"name": None, "version": None, "wise_ft": decision["alpha"], "content_hash": content}
        return model, processor, MODEL_SUBDIR, f"{ref}@{content}", info
    if decision["use"] == "finetuned":
        return _finetuned(cfg, root, model_copy, registry)
    model, processor = load_clip(spec, seed=cfg.train.seed)
    pretrained = getattr(spec, "pretrained", None)
    if spec.kind == "pretrained" and not resolve(pretrained, root).is_dir():
        content, model_dir = f"hub:{pretrained}", pretrained  # a hub id: loaded by name
    else:  # the random-init tiny model (or a local pretrained dir) travels inside the index
        save_clip(model, processor, model_copy)
        content, model_dir = dir_hash(model_copy), MODEL_SUBDIR
    info = {"name": None, "version": None, "base_model": spec.name, "content_hash": content}
    return model, processor, model_dir, f"base:{pretrained or spec.name}@{content}", info


def give_back_memory() -> None:
    """Return freed heap to the OS (glibc keeps it: what reading the corpus and embedding freed
    would otherwise stay in the stage's RSS under LanceDB's write and ANN build, the peak of a
    large build)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def read_corpus(cfg: Params, root: Path, index_dir: Path) -> tuple[pa.Table, list, dict]:
    """The corpus rows `index.corpus` names (carsearch.curation.corpus), checked with `data`'s limits."""
    made = crops.made(resolve(cfg.paths.pairs_dir, root))  # curate_pairs' crops: linked, not cut again
    settings = corpus.RowSettings(cfg.data, cfg.curate.boxes, cfg.detect, cfg.train.seed, made)
    rows, rejects, notes = corpus.gather(
        cfg.index,
        cfg.paths,
        cfg.curate.splits,
        settings,
        root,
        index_dir / IMAGES_SUBDIR,
        progress=lambda it: tqdm(it, desc="read corpus", unit="img"),
    )
    give_back_memory()
    if not rows.num_rows:
        raise ValueError(f"build_index: the corpus ({cfg.index.corpus}) has no usable image; nothing to index")
    return rows, rejects, notes


def _encoder(cfg: Params, root: Path, model, processor, stage: Path, model_dir: str):
    """(encode(locations) -> vectors, chunk) of `index.engine`: this process (+ its decode workers) or Ray."""
    c = cfg.index
    if c.engine == "ray":  # the same step on Ray Data (carsearch.index.ray_engine)
        return ray_engine.encoder(stage / model_dir if model_dir == MODEL_SUBDIR else model_dir, root, c), c.ray.chunk
    if c.engine != "local":
        raise ParamsError(f"index.engine: {c.engine!r} is not local or ray")

    def encode(locs):
        return encode_images(
            model,
            processor,
            [originals.source(p, root) for p in locs],  # a chunk at a time (S3: downloaded here)
            batch_size=c.batch_size,
            num_workers=c.num_workers,  # decode processes feeding the model (model.loader); null: one per spare core
            draft=c.decode_draft,
        )

    return encode, max(512, 32 * c.batch_size)  # decode workers start once per chunk; each chunk cached as it ends


def _write_table(cfg: Params, stage: Path, version: str, rows, cache, model_ref: str) -> tuple[str, str]:
    """(table location, search kind): the table into the version folder, or straight to `index.uri`."""
    c = cfg.index
    table_loc = remote.join(c.uri, version) if c.uri else stage
    try:
        _, kind = build_table(table_loc, c.table, rows, cache.get, model_ref, c)
    except Exception as e:  # noqa: BLE001 - lance's object-store errors: one line naming the bucket
        if not c.uri:
            raise
        raise remote.RemoteIndexError(
            f"index.uri {c.uri}: cannot write the table: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        ) from None
    return table_loc, kind


def _summary(cfg: Params, rows, rejects, notes, cache, kind, decision, model_info, calibration_note, estats) -> dict:
    model_dir, model_ref, registered = model_info
    c = cfg.index
    return {
        "rows": rows.num_rows,
        "vehicles": pc.sum(pc.is_valid(rows["box"])).as_py() or 0,  # rows that are a box of a frame
        "tracks": notes.get("tracks", 0),  # video vehicles linked across frames: one row each
        "detected_frames": notes.get("detected_frames", 0),  # frames the detector (detect.model) ran on
        "frames_without_vehicle": len(notes.get("frames_without_vehicle", [])),
        "dim": cache.dim,
        "search": kind,
        "model": decision["use"],
        "corpus": c.corpus,
        "corpus_path": c.corpus_path,
        "rejected": len(rejects),
        **({"uri": c.uri} if c.uri else {}),
        "model_dir": model_dir,
        "model_ref": model_ref,
        "content_hash": registered["content_hash"],
        "registered_model": registered,
        "promotion": decision,
        "calibration": calibration_note,
        **estats,
    }


def _build_version(cfg: Params, root: Path, index_dir: Path, stage: Path, data, registry, t0: float) -> BuiltIndex:
    """Embed, write the table and the side files into `stage`, publish it as the new version."""
    rows, rejects, notes, decision = data
    c = cfg.index
    model, processor, model_dir, model_ref, registered = promoted_model(cfg, root, decision, stage, registry)
    cache = open_embed_cache(c, registered["content_hash"], root)
    if note := damage_note(cache, "build_index"):
        print(note, flush=True)
    encode, chunk = _encoder(cfg, root, model, processor, stage, model_dir)
    # locations, read (local or S3) a chunk at a time; from here on the vectors are read from
    # the cache a table batch at a time (no second full-corpus matrix, no full Arrow table)
    ids = rows.column("id").to_pylist()
    estats = embed_missing(ids, rows.column("path").to_pylist(), cache, encode, chunk=chunk, progress=True)
    calibration_note = ship_calibration(  # evaluate's fit of this model, into the version
        resolve(cfg.paths.metrics_dir, root) / "calibration.json",
        decision["use"],
        cache.get([ids[k] for k in reference_rows(len(ids), cfg.eval.calibration.reference_rows, cfg.train.seed)]),
        stage,
    )
    del ids
    give_back_memory()
    version = new_version()
    built = BuiltIndex(version, {}, rows, rejects, notes)
    # index.uri: the table goes straight to object storage (LanceDB on S3); the local version
    # keeps the model and the pointer, and the bucket gets both too (carsearch.index.remote)
    try:
        table_loc, kind = _write_table(cfg, stage, version, rows, cache, model_ref)
        if rejects:
            write_jsonl(stage / "rejects.jsonl", rejects)
        built.before = read_meta(index_dir) or {}  # the live version's corpus: was it this one?
        built.switched = bool(built.before.get("version")) and (
            built.before.get("corpus"),
            built.before.get("corpus_path"),
        ) != (c.corpus, c.corpus_path)
        built.new_ids = ids_not_live(index_dir, rows.column("id"))
        built.left_out = rows_left_out(index_dir, rows.column("id"))  # e.g. `index add` outside the corpus
        if built.left_out:
            write_jsonl(stage / "left_out.jsonl", built.left_out)
        if notes.get("frames_without_vehicle"):  # kept as whole-frame rows, and listed
            write_jsonl(stage / "no_vehicle.jsonl", [{"path": p} for p in notes["frames_without_vehicle"]])
        info = (model_dir, model_ref, registered)
        built.summary = _summary(cfg, rows, rejects, notes, cache, kind, decision, info, calibration_note, estats)
        built.summary["seconds"] = round(time.perf_counter() - t0, 2)
        meta = {"table": c.table, "metric": c.metric, "created": time.time(), **built.summary}
        meta.update(nprobes=c.nprobes, refine_factor=c.refine_factor)  # per-query defaults of CarSearch
        meta.update({"uri": c.uri, "table_uri": table_loc} if c.uri else {})
        publish(index_dir, stage, meta, keep=c.keep_versions, version=version)
    except BaseException:
        if c.uri and not (index_dir / version).is_dir():  # a table written to the bucket, never published
            with contextlib.suppress(Exception):
                remote.delete_prefix(remote.join(c.uri, version) + "/")
        raise
    built.vectors = cache.get
    return built


def _after_publish(cfg: Params, index_dir: Path, built: BuiltIndex, registry) -> None:
    """The registry alias follows the index (@champion = the version the live index was built
    with); under `index.uri` the model, then the pointer go to the bucket."""
    s, c = built.summary, cfg.index
    registered = s["registered_model"]
    if s["model"] == "finetuned" and registered.get("registry_checked") and registry is not None:
        previous = registry.set_champion(registered)
        registered.update(
            alias=registry.CHAMPION,
            uri=f"models:/{registered['name']}@{registry.CHAMPION}",
            previous_champion=None if previous is None else int(previous),
        )
        write_meta(index_dir, {**(read_meta(index_dir) or {}), "registered_model": registered})
    if c.uri:  # a searcher anywhere opens CarSearch("s3://…")
        model_local = index_dir / built.version / s["model_dir"] if s["model_dir"] == MODEL_SUBDIR else None
        remote.publish(c.uri, built.version, model_local, read_meta(index_dir) or {}, keep=c.keep_versions)
        print(f"build_index: published {built.version} to {c.uri} (table, model, pointer)")


def run(cfg: Params, root: Path, registry=None) -> BuiltIndex:
    """Build and publish a new index version from the configured corpus (module doc); the live
    index is untouched until the new version is complete."""
    decision = decide(cfg, root)
    index_dir = resolve(cfg.paths.index_dir, root)
    t0 = time.perf_counter()
    rows, rejects, notes = read_corpus(cfg, root, index_dir)
    stage, rel = begin(index_dir), cfg.paths.index_dir
    try:
        with reporting_refused_writes(f"the live index ({rel}) is unchanged", stage, f"{rel}/<new version>"):
            built = _build_version(cfg, root, index_dir, stage, (rows, rejects, notes, decision), registry, t0)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _after_publish(cfg, index_dir, built, registry)
    index_manifest.write(  # the DVC artifact: the published pointer + a digest of rows and vectors
        resolve(cfg.paths.index_manifest, root), read_meta(index_dir) or {}, index_manifest.digest(rows, built.vectors)
    )
    return built
