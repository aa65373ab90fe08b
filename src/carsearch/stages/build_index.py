"""Stage build_index: embed every image of the corpus (by default every ingested image; or a
folder / S3 prefix of your own photos: `index.corpus`) into LanceDB with the promoted model.
Embeddings are cached per (image hash, model hash): a rebuild embeds only new images. The new
index is published atomically beside the old one (see carsearch.index).

Promotion gate (carsearch.index.promotion): the fine-tuned model (or the best WiSE-FT candidate)
is used only if it beats the base model on `index.promote.metric` (from metrics/eval.json, e.g.
`text_to_image.recall@5`) by more than `index.promote.min_gain`; otherwise the base model. The model is copied into the index version,
so search never depends on `models/finetuned` (which fine-tuning rewrites). metrics/index.json
says which model, why, and which registered MLflow version and content hash built the index.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import shutil
import sys
import time

import pyarrow.compute as pc
from tqdm import tqdm

from carsearch.core import originals
from carsearch.core.confidence import reference_rows
from carsearch.core.io import dir_hash, write_json, write_jsonl
from carsearch.core.params import ParamsError, load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.rejects import summarise
from carsearch.curation import corpus
from carsearch.experiments import tracking
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
    new_version,
    publish,
    read_meta,
    rows_left_out,
    write_meta,
)
from carsearch.model.clip import encode_images, load_clip, load_pretrained, save_clip
from carsearch.model.wiseft import save_interpolated


def promoted_model(params: dict, root, decision: dict, stage):
    """Load the model the gate chose and copy it into the index version folder `stage/model`.
    Returns (model, processor, model_dir relative to the index version (or a hub id), model_ref
    "<where it came from>@<content hash>", registry info)."""
    paths = params["paths"]
    model_copy = stage / MODEL_SUBDIR
    if decision["use"].startswith("wise_ft_"):  # (1 - alpha) base + alpha fine-tuned, travels in the index
        save_interpolated(
            params["model"], params["train"]["seed"], resolve(paths["model_dir"], root), decision["alpha"], model_copy
        )
        model, processor = load_pretrained(model_copy)
        content = dir_hash(model_copy)
        ref = f"{decision['use']}:{paths['model_dir']}@{dir_hash(resolve(paths['model_dir'], root))}"
        return (
            model,
            processor,
            MODEL_SUBDIR,
            f"{ref}@{content}",
            {"name": None, "version": None, "wise_ft": decision["alpha"], "content_hash": content},
        )
    if decision["use"] == "finetuned":
        ft_dir = resolve(paths["model_dir"], root)
        if not ft_dir.is_dir():
            raise FileNotFoundError(f"build_index: {paths['model_dir']} not found; run finetune_clip first")
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
            "source_dir": paths["model_dir"],
        }
        if reg:
            tracking.setup(params["mlflow"])
            mv = tracking.find_model_version(reg)
            if mv is not None:
                registered["registry_checked"] = True
                if mv["tags"].get("content_hash") not in (None, content):
                    raise ValueError(
                        f"build_index: {paths['model_dir']} (hash {content}) is not what "
                        f"{reg['name']} v{reg['version']} registered ({mv['tags']['content_hash']})"
                    )
        return model, processor, MODEL_SUBDIR, f"{paths['model_dir']}@{content}", registered
    spec = params["model"]
    model, processor = load_clip(spec, seed=params["train"]["seed"])
    if spec.get("kind") == "pretrained" and not resolve(spec["pretrained"], root).is_dir():
        content, model_dir = f"hub:{spec['pretrained']}", spec["pretrained"]  # a hub id: loaded by name
    else:  # the random-init tiny model (or a local pretrained dir) travels inside the index
        save_clip(model, processor, model_copy)
        content, model_dir = dir_hash(model_copy), MODEL_SUBDIR
    return (
        model,
        processor,
        model_dir,
        f"base:{spec.get('pretrained') or spec.get('name')}@{content}",
        {"name": None, "version": None, "base_model": spec.get("name"), "content_hash": content},
    )


def give_back_memory() -> None:
    """Return freed heap to the OS (glibc keeps it: what reading the corpus and embedding freed
    would otherwise stay in the stage's RSS under LanceDB's write and ANN build, the peak of a
    large build)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["index"]
    promote = cfg["promote"] or {"metric": None}  # null: always the fine-tuned model
    eval_file = resolve(paths["metrics_dir"], root) / "eval.json"
    if promote["metric"]:
        if not eval_file.is_file():
            raise FileNotFoundError(f"build_index: {eval_file} not found; run the evaluate stage first")
        decision = promotion_decision(
            json.loads(eval_file.read_text()),
            promote["metric"],
            float(promote["min_gain"]),
            promote["set"],
        )
    else:
        decision = {"use": "finetuned", "reason": "no promotion gate configured (index.promote.metric: null)"}

    index_dir = resolve(paths["index_dir"], root)
    t0 = time.perf_counter()
    rows, rejects, notes = corpus.gather(
        params, root, index_dir / IMAGES_SUBDIR, progress=lambda it: tqdm(it, desc="read corpus", unit="img")
    )
    give_back_memory()
    if not rows.num_rows:
        raise ValueError(f"build_index: the corpus ({cfg['corpus']}) has no usable image; nothing to index")
    keep = int(cfg["keep_versions"])
    stage, version = begin(index_dir), None
    try:
        model, processor, model_dir, model_ref, registered = promoted_model(params, root, decision, stage)
        content = registered["content_hash"]
        cache = open_embed_cache(cfg, content)
        if note := damage_note(cache, "build_index"):
            print(note, flush=True)
        bs = int(cfg["batch_size"])
        workers = cfg["num_workers"]  # decode processes feeding the model (model.loader); null: one per spare core

        def encode(locs):  # index.engine=local: this process (+ its decode workers)
            return encode_images(
                model,
                processor,
                [originals.source(p, root) for p in locs],  # a chunk at a time (S3: downloaded here)
                batch_size=bs,
                num_workers=workers,
                draft=bool(cfg["decode_draft"]),
            )

        chunk = max(512, 32 * bs)  # decode workers start once per chunk; each chunk is cached as it finishes
        if cfg["engine"] == "ray":  # the same step on Ray Data (carsearch.index.ray_engine)
            encode = ray_engine.encoder(stage / model_dir if model_dir == MODEL_SUBDIR else model_dir, root, cfg)
            chunk = int(cfg["ray"]["chunk"])
        elif cfg["engine"] != "local":
            raise ParamsError(f"index.engine: {cfg['engine']!r} is not local or ray")
        # locations, read (local or S3) a chunk at a time; from here on the vectors are read from
        # the cache a table batch at a time (no second full-corpus matrix, no full Arrow table)
        ids = rows.column("id").to_pylist()
        estats = embed_missing(ids, rows.column("path").to_pylist(), cache, encode, chunk=chunk, progress=True)
        ref_n, seed = int(params["eval"]["calibration"]["reference_rows"]), int(params["train"]["seed"])
        calibration_note = ship_calibration(  # evaluate's fit of this model, into the version
            resolve(paths["metrics_dir"], root) / "calibration.json",
            decision["use"],
            cache.get([ids[k] for k in reference_rows(len(ids), ref_n, seed)]),
            stage,
        )
        del ids
        give_back_memory()
        version = new_version()
        # index.uri: the table goes straight to object storage (LanceDB on S3); the local version
        # keeps the model and the pointer, and the bucket gets both too (carsearch.index.remote)
        table_loc = remote.join(cfg["uri"], version) if cfg["uri"] else stage
        try:
            _, kind = build_table(table_loc, cfg["table"], rows, cache.get, model_ref, cfg)
        except Exception as e:  # noqa: BLE001 - lance's object-store errors: one line naming the bucket
            if not cfg["uri"]:
                raise
            raise remote.RemoteIndexError(
                f"index.uri {cfg['uri']}: cannot write the table: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
            ) from None
        if rejects:
            write_jsonl(stage / "rejects.jsonl", rejects)
        before = read_meta(index_dir) or {}  # the live version's corpus: was it this one?
        switched = bool(before.get("version")) and (before.get("corpus"), before.get("corpus_path")) != (
            cfg["corpus"],
            cfg["corpus_path"],
        )
        left_out = rows_left_out(index_dir, rows.column("id"))  # e.g. `index add` outside the corpus
        if left_out:
            write_jsonl(stage / "left_out.jsonl", left_out)
        if notes.get("frames_without_vehicle"):  # kept as whole-frame rows, and listed
            write_jsonl(stage / "no_vehicle.jsonl", [{"path": p} for p in notes["frames_without_vehicle"]])
        boxed = rows.filter(pc.is_valid(rows["box"]))  # rows that are a box of a frame (the rest: whole images)
        vehicles = boxed.num_rows
        summary = {
            "rows": rows.num_rows,
            "vehicles": vehicles,
            "tracks": notes.get("tracks", 0),  # video vehicles linked across frames: one row each
            "detected_frames": notes.get("detected_frames", 0),  # frames the detector (detect.model) ran on
            "frames_without_vehicle": len(notes.get("frames_without_vehicle", [])),
            "dim": cache.dim,
            "search": kind,
            "model": decision["use"],
            "corpus": cfg["corpus"],
            "corpus_path": cfg["corpus_path"],
            "rejected": len(rejects),
            **({"uri": cfg["uri"]} if cfg["uri"] else {}),
            "model_dir": model_dir,
            "model_ref": model_ref,
            "content_hash": content,
            "registered_model": registered,
            "promotion": decision,
            "calibration": calibration_note,
            **estats,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        search_defaults = {k: cfg[k] for k in ("nprobes", "refine_factor")}  # per-query defaults of CarSearch
        where = {"uri": cfg["uri"], "table_uri": table_loc} if cfg["uri"] else {}
        publish(
            index_dir,
            stage,
            {
                "table": cfg["table"],
                "metric": cfg["metric"],
                "created": time.time(),
                **summary,
                **search_defaults,
                **where,
            },
            keep=keep,
            version=version,
        )
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if (
            cfg["uri"] and version and not (index_dir / version).is_dir()
        ):  # a table written to the bucket, never published
            with contextlib.suppress(Exception):
                remote.delete_prefix(remote.join(cfg["uri"], version) + "/")
        raise
    if decision["use"] == "finetuned" and registered.get("registry_checked"):
        # the registry alias follows the index: @champion = the version the live index was built with
        previous = tracking.set_champion(registered)
        registered.update(
            alias=tracking.CHAMPION,
            uri=f"models:/{registered['name']}@{tracking.CHAMPION}",
            previous_champion=None if previous is None else int(previous),
        )
        write_meta(index_dir, {**(read_meta(index_dir) or {}), "registered_model": registered})
    if cfg["uri"]:  # the model, then the pointer: a searcher anywhere opens CarSearch("s3://…")
        model_local = index_dir / version / model_dir if model_dir == MODEL_SUBDIR else None
        remote.publish(cfg["uri"], version, model_local, read_meta(index_dir) or {}, keep=keep)
        print(f"build_index: published {version} to {cfg['uri']} (table, model, pointer)")
    # the DVC artifact: the published pointer + a digest of rows and vectors (carsearch.index.manifest)
    index_manifest.write(
        resolve(paths["index_manifest"], root), read_meta(index_dir) or {}, index_manifest.digest(rows, cache.get)
    )
    index_rel = paths["index_dir"]
    write_json(
        resolve(paths["metrics_dir"], root) / "index.json",
        # what the embedding cache held is machine state, not a property of the index: not a metric
        {
            **{
                k: v
                for k, v in summary.items()
                if k not in ("seconds", "embed_seconds", "embedded", "cached", "images_per_second")
            },
            # which version held the alias before depends on this machine's registry history: pointer only
            "registered_model": {k: v for k, v in registered.items() if k != "previous_champion"},
        },
    )
    for line in summarise(rejects, "file", f"{index_rel}/{version}/rejects.jsonl"):
        print(f"build_index: {line}")
    if notes.get("frames_without_vehicle"):
        empty = notes["frames_without_vehicle"]
        print(
            f"build_index: {len(empty)} frame{'s' if len(empty) != 1 else ''} without a vehicle box (annotated without one, or none detected), e.g. "
            f"{empty[0]}; each stays one whole-frame row; listed in {index_rel}/{version}/no_vehicle.jsonl"
        )
    if left_out and switched:
        print(
            f"build_index: the previous index was built from another corpus ({before.get('corpus')} "
            f"{before.get('corpus_path') or ''}); its {len(left_out)} rows not in this corpus ({cfg['corpus']} "
            f"{cfg['corpus_path'] or ''}) are not kept; listed in {index_rel}/{version}/left_out.jsonl"
        )
    elif left_out:
        print(
            f"build_index: {len(left_out)} rows of the previous index are not in the corpus and not in this one "
            f"(added by `carsearch index add` outside index.corpus_path, or deleted), e.g. {left_out[0]['origin']}; "
            f"listed in {index_rel}/{version}/left_out.jsonl; to keep them, put their files in the corpus"
        )
    reg_txt = (
        f", registered {registered['name']} v{registered['version']}"
        if registered and registered.get("version")
        else ""
    )
    what = (
        f"{rows.num_rows} images"
        if not vehicles
        else (
            f"{rows.num_rows} rows ({vehicles} vehicles in {pc.count_distinct(boxed['frame_id']).as_py()} "
            f"frames, {rows.num_rows - vehicles} whole image{'s' if rows.num_rows - vehicles != 1 else ''})"
        )
    )
    print(
        f"build_index: {what} ({estats['embedded']} embedded, {estats['cached']} from the embedding cache) "
        f"into {index_rel}/{version}/{cfg['table']} ({kind}) with the {decision['use']} model {model_ref}{reg_txt}; "
        f"{decision['reason']}"
    )


if __name__ == "__main__":
    run_stage(main)
