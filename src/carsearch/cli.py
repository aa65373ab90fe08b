"""`carsearch search "red suv seen from the front" -k 5` / `carsearch search --image car.jpg`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Car search over your traffic images.")


@app.callback()
def _main() -> None:
    """carsearch: search the car index built by `dvc repro`."""


@app.command()
def search(
    query: Optional[str] = typer.Argument(None, help='Text query, e.g. "red pickup seen from behind".'),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Search by this image instead of text."),
    k: int = typer.Option(5, "-k", "--top-k", min=1, help="Number of results."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL filter on metadata, e.g. \"color = 'red'\"."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index folder (default: paths.index_dir)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write the results as a PNG strip."),
) -> None:
    """Print rank, score, id, caption and path of the k most similar cars."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    from .model import ModelConfigError

    hf_logging.disable_progress_bar()
    from .search import search as run_search

    if image is not None and not image.is_file():
        typer.echo(f"error: image not found: {image}", err=True)
        raise typer.Exit(1)
    try:
        hits = run_search(query=query, image=image, k=k, where=where, index_dir=index_dir)
    except (FileNotFoundError, ValueError, ModelConfigError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for h in hits:
        typer.echo(f"{h.rank}\t{h.score:.4f}\t{h.id}\t{h.caption}\t{h.path}")
    if png is not None:
        from .paths import repo_root
        from .plots import results_grid_png

        root = repo_root()
        results_grid_png([(query or f"image: {image}", [(root / h.path, h.score, True) for h in hits])], png)
        typer.echo(f"wrote {png}", err=True)


@app.command()
def report(
    base: str = typer.Option("main", "--base", help="Base revision (branch, tag or commit) to compare against."),
    head: Optional[str] = typer.Option(None, "--head", help="Revision to report on (default: the workspace)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the Markdown to this file."),
) -> None:
    """Markdown `dvc metrics diff` + `dvc params diff` against BASE (what CI comments on a pull request)."""
    from .report import ReportError, pr_report

    try:
        md = pr_report(base=base, head=head)
    except (ReportError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(md)
    if out is not None:
        out.write_text(md + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(app())
