"""`carsearch index add PATH…`: append new images to the live index between repros, with the model
that built it, skipping images already there (by content hash). Embeddings go through the same
cache as build_index, so a later `dvc repro` (with the files in the corpus) ends in the same table
without embedding them again."""

from __future__ import annotations

from pathlib import Path

from carsearch.core import originals
from carsearch.core.paths import resolve
from carsearch.core.schema import Index, Params
from carsearch.curation import corpus, crops
from carsearch.detection import footage
from carsearch.index import remote
from carsearch.index.alerts import run_watches
from carsearch.index.embed_cache import damage_note, embed_missing, open_embed_cache
from carsearch.index.search import CarSearch
from carsearch.index.store import IMAGES_SUBDIR, META_FILE, arrow_rows, read_meta, write_meta
from carsearch.sources import files as data
from carsearch.sources.labels import folder_label


def _settings(cfg: Params, root: Path) -> corpus.RowSettings:
    """As build_index's (`index.build.read_corpus`): curate_pairs' crops are linked, not cut again."""
    made = crops.made(resolve(cfg.paths.pairs_dir, root))
    return corpus.RowSettings(cfg.data, cfg.curate.boxes, cfg.detect, cfg.train.seed, made)


def _file_rows(p: Path, cfg: Params, root: Path, images_dir: Path, pairs: dict, seen: dict):
    """One file as the build of its folder would make it: that folder's annotations, capture time
    relative to it, a video's frames and tracks, the detector for frames without boxes."""
    key, video = cfg.index.subfolder_key, cfg.data.video
    value = folder_label(f"{p.parent.name}/{p.name}", key) if key else None
    items = footage.expand_videos(
        [(str(p), p.read_bytes(), {key: value} if value else None, None)], video.fps, video.max_frames
    )
    ann = data.folder_boxes(p.parent, cfg.index.labels_csv)
    return corpus.stored_rows(
        items,
        images_dir,
        root,
        "folder",
        (cfg.data.max_pixels, cfg.data.max_edge),
        pairs,
        boxes=(ann, p.parent),
        settings=_settings(cfg, root),
        capture=(str(p.parent), cfg.data.capture),
        by_reference=True,
        seen=seen,
    )


def _rows(paths: list[Path], cfg: Params, root: Path, images_dir: Path, progress=None):
    """(rows, rejects) of files and folders, by the build's row builder (`corpus.corpus_runs`)."""
    pairs = corpus.pairs_by_id(resolve(cfg.paths.pairs_dir, root), cfg.curate.splits)
    rows, rejects, seen = [], [], {}
    for p in paths:
        if p.is_dir():
            runs = corpus.corpus_runs(
                "folder", p.resolve(), cfg.index, _settings(cfg, root), root, images_dir, pairs, progress, seen
            )
        elif p.is_file():
            runs = [_file_rows(p.resolve(), cfg, root, images_dir, pairs, seen)]
        else:
            runs = [([], [{"path": str(p), "reason": "not found"}], {})]
        for got, bad, _ in runs:
            rows += got
            rejects += bad
    return rows, rejects


def add_images(paths: list[str | Path], cfg: Params, root: Path, progress=None) -> dict:
    """Append the images under `paths` (files or folders) to the current index, rows made as a build
    makes them (`cfg`: the typed params.yaml). Returns counts and the rejects (every input is added,
    skipped as already indexed, or rejected with a reason)."""
    index_dir = resolve(cfg.paths.index_dir, root)
    s = CarSearch(index_dir, root=root, plate_search=cfg.index.plate_search)  # the live version and its model
    meta = s.meta
    rows, rejects = _rows([Path(p) for p in paths], cfg, root, index_dir / IMAGES_SUBDIR, progress)
    have = set(s.table.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist())  # ids only, not vectors
    new = [r for r in rows if r["id"] not in have]
    out = {
        "added": len(new),
        "already_indexed": len(rows) - len(new),
        "rejected": len(rejects),
        "rejects": rejects,
        "version": meta.get("version"),
    }
    if not new:
        return out
    cache = open_embed_cache(cfg.index, meta["content_hash"], root)
    ids = [r["id"] for r in new]
    stats = embed_missing(
        ids, [r["path"] for r in new], cache, lambda ps: s.embed_images([originals.source(p, root) for p in ps])
    )
    data = arrow_rows(new, cache.get(ids), meta.get("model_ref") or "")
    s.table.add(
        data.select([c for c in s.table.schema.names if c in data.column_names])
    )  # the table's order; an older table has fewer
    fresh = read_meta(index_dir) or meta
    if fresh.get("version") == meta.get("version"):  # a rebuild published meanwhile wins; else count the rows
        fresh = {
            **fresh,
            "rows": s.table.count_rows(),
            "added_since_build": fresh.get("added_since_build", 0) + len(new),
        }
        write_meta(index_dir, fresh)
        if fresh.get("uri"):  # the table is in a bucket (index.uri): its pointer says so too
            remote.put_json(remote.join(fresh["uri"], META_FILE), fresh)
    outside = [r for r in new if not _inside(r.get("origin") or "", cfg.index, root)]
    watched = run_watches(s, root, ids)  # the watchlists, on the appended rows only (index.alerts)
    return {
        **out,
        **stats,
        "outside_corpus": len(outside),
        "cache_note": damage_note(cache, "index add"),
        "watches": watched,
    }


def _inside(origin: str, cfg: Index, root: Path) -> bool:
    """Whether a later `dvc repro` will index this file too (it lies under the configured corpus)."""
    if cfg.corpus != "folder" or not cfg.corpus_path:
        return False
    try:
        Path(origin).resolve().relative_to(resolve(cfg.corpus_path, root).resolve())
        return True
    except ValueError:
        return False
