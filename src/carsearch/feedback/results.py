"""Result lists the CLI can judge later: `carsearch search` saves each list under its query id
(`.carsearch/results/<query_id>.json`, written atomically; `last` names the newest), and
`carsearch judge QUERY-ID RANK ✓` reads the hit at RANK back from it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from carsearch.core.io import write_json, write_text
from carsearch.feedback.record import Hit, Judgment, Query

RESULTS_DIR = Path(".carsearch") / "results"  # beside the embed cache: local state, never data


class ResultsError(LookupError):
    """A query id or rank the saved result lists do not know: one line saying what is known."""


def save(root: Path, query: Query, hits: list[dict], index_version=None, model_hash=None) -> str:
    """Save a result list (hits: dicts with id, rank, path/origin, box) under its query id."""
    folder = Path(root) / RESULTS_DIR
    body = {
        "query_id": query.id,
        "query": query.model_dump(),
        "index_version": index_version,
        "model_hash": model_hash,
        "hits": [
            Hit(id=h["id"], rank=int(h["rank"]), path=h.get("path") or None, box=h.get("box")).model_dump()
            for h in hits
        ],
    }
    write_json(folder / f"{query.id}.json", body)
    write_text(folder / "last", query.id + "\n")
    return query.id


def load(root: Path, query_id: str) -> dict:
    folder = Path(root) / RESULTS_DIR
    if query_id == "last":
        last = folder / "last"
        if not last.is_file():
            raise ResultsError("no saved result list yet: run `carsearch search` first")
        query_id = last.read_text().strip()
    f = folder / f"{query_id}.json"
    if not re.fullmatch(r"[0-9a-f]{12}", query_id) or not f.is_file():
        known = sorted(p.stem for p in folder.glob("*.json"))[-5:] if folder.is_dir() else []
        raise ResultsError(
            f"no saved result list {query_id!r} in {folder} (known: {', '.join(known) or 'none'}; "
            "`carsearch search` prints the id of each list it saves)"
        )
    return json.loads(f.read_text())


def judgment(saved: dict, rank: int, verdict, source: str = "cli") -> Judgment:
    """The judgment of the hit at `rank` of a saved result list."""
    by_rank = {h["rank"]: h for h in saved["hits"]}
    if rank not in by_rank:
        ranks = sorted(by_rank)
        span = f"ranks {ranks[0]}-{ranks[-1]}" if ranks else "no hits"
        raise ResultsError(f"query {saved['query_id']} has no hit at rank {rank} (its saved list has {span})")
    return Judgment.make(
        Query.model_validate(saved["query"]),
        Hit.model_validate(by_rank[rank]),
        verdict,
        index_version=saved.get("index_version"),
        model_hash=saved.get("model_hash"),
        source=source,
    )


def save_cli(root: Path, searcher, hits, text, image, where, filters: dict, scope: dict) -> str:
    """Save the result list of `carsearch search` (hits: index.search.Hit) under its query id."""
    canon = {k: list(v) if isinstance(v, (list, tuple)) else [str(v)] for k, v in filters.items() if v or v == 0}
    if where:
        canon["where"] = [where]
    for k, v in scope.items():
        if v:
            canon[k] = [str(x) for x in (v if isinstance(v, list) else [v])]
    if image is not None:
        query = Query(kind="upload", image_sha=hashlib.sha256(Path(image).read_bytes()).hexdigest(), filters=canon)
    else:
        query = Query(kind="text", text=text, filters=canon)
    meta = getattr(searcher, "meta", {}) or {}
    rows = [{"id": h.id, "rank": h.rank, "path": h.path, "box": h.box} for h in hits]
    return save(root, query, rows, meta.get("version"), meta.get("content_hash"))
