"""`carsearch export`: an evidence bundle (a zip: originals, crops with boxes, clips, manifest) of
chosen hits or of a search's hits (carsearch.index.export; docs/search/export.md). Registered in
`carsearch.cli` (which gives it the filter options)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def export(
    query: Optional[str] = typer.Argument(None, help="Bundle the top -k hits of this text search."),
    ids: Optional[list[str]] = typer.Option(None, "--id", help="Bundle this hit (its id; repeat for several)."),
    ids_file: Optional[Path] = typer.Option(
        None, "--ids-file", help="Bundle the hits whose ids are in this file, one a line."
    ),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Bundle the top -k hits of this image search."),
    k: int = typer.Option(20, "-k", "--top-k", min=1, help="With a search: how many hits go in."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter on metadata, as for search."),
    after: Optional[str] = typer.Option(None, "--after", help="Only hits captured at or after this time."),
    before: Optional[str] = typer.Option(None, "--before", help="Only hits captured before this time."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="Only hits at least this likely."),
    out: Path = typer.Option(Path("evidence.zip"), "--out", "-o", help="Write the bundle (zip) here."),
    margin: Optional[float] = typer.Option(
        None,
        "--margin",
        min=0,
        help="Seconds of video before first seen and after last seen (default serve.export_clip_margin_s).",
    ),
    index_dir: Optional[str] = typer.Option(None, "--index", help="Index folder or s3://bucket/prefix."),
    **filters: Optional[list[str]],
) -> None:
    """Write an evidence bundle: a zip of the chosen hits (--id, --ids-file) or of a search's top -k
    (a text, --image, or only filters such as --plate): each hit's original, its crop with the box
    drawn, for a video track the clip from first seen to last seen plus margins, and a manifest
    (CSV + JSON: ids, files, cameras, times, plates, confidences, the query, the index version).
    Ids that are not indexed, and files that could not go in, are listed in rejects.csv."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from dataclasses import asdict

    from carsearch.core.errors import CarsearchError
    from carsearch.core.params import load_params
    from carsearch.core.paths import repo_root
    from carsearch.index.export import export as run_export
    from carsearch.index.search import CarSearch
    from carsearch.index.search import search as run_search

    filters = {n: v for n, v in filters.items() if v is not None and v != []}
    chosen = list(ids or [])
    try:
        if ids_file is not None:
            chosen += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        root = repo_root()
        if margin is None:
            margin = float(load_params(root / "params.yaml")["serve"]["export_clip_margin_s"])
        searcher = CarSearch(index_dir)
        asked = dict(where=where, filters=filters, after=after, before=before, min_confidence=min_confidence)
        if chosen and (query or image):
            raise ValueError("give ids (--id / --ids-file) or a search, not both")
        if chosen:
            res = run_export(searcher, ids=chosen, dest=out, root=root, margin_s=margin)
        else:
            hits = [asdict(h) for h in run_search(query=query, image=image, k=k, searcher=searcher, **asked)]
            q = {"text": query, "image": str(image) if image else None, "k": k, **asked}
            res = run_export(searcher, hits=hits, query=q, dest=out, root=root, margin_s=margin)
    except (FileNotFoundError, ValueError, CarsearchError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for r in res["rejects"]:
        typer.echo(f"export: {r['reason']}", err=True)
    typer.echo(f"export: {res['hits']} hits, {res['files']} files, {len(res['rejects'])} rejects -> {out}")
