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


def _filters(color, view, body_type, make, model, split) -> dict:
    return {"color": color, "view": view, "body_type": body_type, "make": make, "model": model, "split": split}


def _mark_missing(hits, root: Path) -> list[bool]:
    """Which hits point to an image that is gone (an index older than its images)."""
    return [not (root / h.path).is_file() for h in hits]


@app.command()
def search(
    query: Optional[str] = typer.Argument(None, help='Text query, e.g. "red pickup seen from behind".'),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Search by this image instead of text."),
    k: int = typer.Option(5, "-k", "--top-k", min=1, help="Number of results."),
    where: Optional[str] = typer.Option(
        None, "--where", help="Filter on metadata, e.g. \"color = 'red' AND view IN ('rear', 'side')\"."
    ),
    color: Optional[list[str]] = typer.Option(None, "--color", help="Only this colour (repeat for any of several)."),
    view: Optional[list[str]] = typer.Option(None, "--view", help="Only this view: front, rear, side, three-quarter."),
    body_type: Optional[list[str]] = typer.Option(None, "--body-type", help="Only this body type (sedan, suv, ...)."),
    make: Optional[list[str]] = typer.Option(None, "--make", help="Only this make."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Only this car model."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only this split (train, val, test)."),
    index_dir: Optional[str] = typer.Option(
        None, "--index", help="Index folder or s3://bucket/prefix (default: paths.index_dir)."
    ),
    use_model: Optional[str] = typer.Option(
        None,
        "--use-model",
        help="Embed the query with this CLIP model instead of "
        "the index's own: a folder, hub id or models:/carsearch-clip@champion.",
    ),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write the results as a PNG strip."),
    camera: Optional[list[str]] = typer.Option(
        None, "--camera", help="Only hits from this camera (repeat for several)."
    ),
    after: Optional[str] = typer.Option(None, "--after", help="Only hits captured at or after, e.g. 2026-01-02T10:00."),
    before: Optional[str] = typer.Option(None, "--before", help="Only hits captured before this time."),
    sort: str = typer.Option("score", "--sort", help="Order of the k hits: score (best first) or time (earliest)."),
    csv_out: Optional[Path] = typer.Option(
        None, "--csv", help="Also write the hits as CSV (file, frame, box, camera, time, score)."
    ),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", help="Only hits at least this likely to match (calibrated confidence, 0-1)."
    ),
) -> None:
    """Print rank, score, id, caption and path of the k most similar cars; for a vehicle of a frame
    also its frame and box, and the camera and capture time where known."""
    from carsearch.index.query import QueryError, build_where, check_confidence, check_image, check_text, scope_where

    try:  # everything the user typed is checked before the model loads
        if query is None and image is None:
            raise QueryError("nothing to search for: give a text query or --image")
        if query is not None and image is not None:
            raise QueryError("give a text query or --image, not both")
        query = check_text(query) if image is None else None
        image = check_image(image) if image is not None else None
        where = build_where(_filters(color, view, body_type, make, model, split), where)
        scope = dict(camera=camera or None, after=after, before=before)
        scope_where(**scope)  # bad times fail here, before the model loads
        scope["min_confidence"] = check_confidence(min_confidence)
        if sort not in ("score", "time"):
            raise QueryError(f"--sort: {sort!r} is not score or time")
    except QueryError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # transformers' disable_progress_bar(), without importing transformers (a text query may not need it)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from carsearch.core.errors import CarsearchError
    from carsearch.core.paths import repo_root
    from carsearch.index.search import search as run_search

    try:
        hits = run_search(query=query, image=image, k=k, where=where, index_dir=index_dir, model=use_model, **scope)
    except (FileNotFoundError, ValueError, CarsearchError) as e:  # ModelConfigError is a ValueError
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if sort == "time":
        hits.sort(key=lambda h: (h.time is None, h.time or 0.0, h.rank))
    root = repo_root()
    missing = _mark_missing(hits, root)
    divider = _divider(hits) if sort == "score" else None
    for i, (h, gone) in enumerate(zip(hits, missing)):
        if divider and i == divider[0]:
            typer.echo(divider[1])
        typer.echo(
            f"{h.rank}\t{h.score:.4f}\t{h.id}\t{h.caption}\t{h.path}"
            + ("\t[missing file]" if gone else "")
            + "".join(f"\t{x}" for x in _where_seen(h))
            + (f"\tconfidence={h.confidence:.3f}" if h.confidence is not None else "")
        )
    if divider and divider[0] == len(hits) and hits:
        typer.echo(divider[1])
    if csv_out is not None:
        _write_hits_csv(hits, csv_out)
        typer.echo(f"wrote {csv_out}", err=True)
    if any(missing):
        typer.echo(
            f"warning: {sum(missing)} of {len(hits)} results point to missing files; the index is older than "
            "the images it lists: run `dvc repro build_index`",
            err=True,
        )
    if not hits:
        typer.echo("no results" + (f" match {where}" if where else ""), err=True)
    if png is not None:
        from carsearch.evaluation.plots import results_grid_png

        results_grid_png([(query or f"image: {image}", [(root / h.path, h.score, True) for h in hits])], png)
        typer.echo(f"wrote {png}", err=True)


def _divider(hits) -> tuple[int, str] | None:
    """Where the confident hits end (the index of the first one that is not) and the line shown there."""
    if not hits or hits[0].confidence is None:
        return None
    n = next((i for i, h in enumerate(hits) if not h.confident), len(hits))
    if not n:
        return 0, "---- no confident match: these are the closest ----"
    what = f"{n} confident match{'es' if n != 1 else ''}"
    return n, f"---- {what} above; below: less likely matches ----" if n < len(hits) else f"---- {what} ----"


def _where_seen(h) -> list[str]:
    """`frame=<id> box=x1,y1,x2,y2`, `camera=…`, `time=…` of a hit, where it has them."""
    from carsearch.features.capture import iso

    out = []
    if h.box is not None:
        out.append(f"frame={h.frame_id} box={','.join(f'{v:.0f}' for v in h.box)}")
    if h.camera:
        out.append(f"camera={h.camera}")
    if h.time is not None:
        out.append(f"time={iso(h.time)}")
    return out


def _write_hits_csv(hits, out: Path) -> None:
    from dataclasses import asdict

    from carsearch.core.io import write_text
    from carsearch.index.search import hits_csv

    write_text(out, hits_csv([asdict(h) for h in hits]))


@app.command()
def report(
    base: str = typer.Option("main", "--base", help="Base revision (branch, tag or commit) to compare against."),
    head: Optional[str] = typer.Option(None, "--head", help="Revision to report on (default: the workspace)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the Markdown to this file."),
) -> None:
    """Markdown report against BASE (what CI comments on a pull request): headline metrics marked
    significant / within noise by a paired bootstrap over per-query results, the metrics diff
    (quality, then run time and cost) and the params diff."""
    from carsearch.experiments.report import ReportError, pr_report

    try:
        md = pr_report(base=base, head=head)
    except (ReportError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(md)
    if out is not None:
        out.write_text(md + "\n", encoding="utf-8")


@app.command()
def serve(
    host: Optional[str] = typer.Option(
        None, "--host", help="Address to bind (default serve.host: 127.0.0.1, loopback only)."
    ),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default serve.port: 8000; 0 picks a free one)."),
    index_dir: Optional[str] = typer.Option(
        None, "--index", help="Index folder or s3://bucket/prefix (default: paths.index_dir)."
    ),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Bind beyond loopback without a token (serve.token / $CARSEARCH_TOKEN)."
    ),
) -> None:
    """Run the search service: the web page at http://HOST:PORT/, the JSON API at /api/v1 (OpenAPI at /docs).
    Loads the model and the index once; a rebuilt index is picked up without a restart."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from carsearch.core.params import ParamsError
    from carsearch.model.clip import ModelConfigError
    from carsearch.serve import serve as run_service
    from carsearch.serve.guards import ServeConfigError

    try:
        run_service(host=host, port=port, index_dir=index_dir, access_log=access_log, insecure=insecure)
    except (FileNotFoundError, ParamsError, ModelConfigError, ServeConfigError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)


index_app = typer.Typer(no_args_is_help=True, help="Manage the car index between repros.")
app.add_typer(index_app, name="index")


@index_app.command("add")
def index_add(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (sub-folder names label the images)."),
) -> None:
    """Append new images to the live index with the model that built it; images already indexed
    (same content) are skipped. Put them in your corpus folder too, and the next `dvc repro` ends
    in the same table without embedding them again (embeddings are cached)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from carsearch.core.params import load_params
    from carsearch.core.paths import repo_root
    from carsearch.core.rejects import summarise
    from carsearch.index.append import add_images
    from carsearch.model.clip import ModelConfigError

    try:
        root = repo_root()
        res = add_images(paths, load_params(root / "params.yaml"), root)
    except (FileNotFoundError, ValueError, ModelConfigError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for line in summarise(res["rejects"], "file"):
        typer.echo(f"index add: {line}", err=True)
    if res.get("cache_note"):
        typer.echo(res["cache_note"], err=True)
    typer.echo(
        f"index add: {res['added']} added, {res['already_indexed']} already indexed, {res['rejected']} rejected "
        f"(index version {res['version']})"
    )
    if res.get("outside_corpus"):
        typer.echo(
            f"index add: note: {res['outside_corpus']} of them are outside index.corpus_path; a later `dvc repro` "
            "rebuilds the index from the corpus and will not keep them (copy them into the corpus folder)",
            err=True,
        )


@app.command("embed-ray")
def embed_ray(
    corpus: str = typer.Option(..., "--corpus", help="Folder or s3:// prefix of images to embed."),
    out: str = typer.Option(
        ..., "--out", help="LanceDB location to write: a folder or an object-store URI (s3://bucket/prefix)."
    ),
    model_dir: Optional[Path] = typer.Option(
        None, "--model", help="save_pretrained folder of the model (default: the live index's model)."
    ),
    table: str = typer.Option("cars", "--table", help="Table name."),
    workers: int = typer.Option(2, "--workers", min=1, help="Model actors (one GPU each when the cluster has GPUs)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", min=1, help="Images per batch (default: index.batch_size)."
    ),
    gpus: Optional[float] = typer.Option(
        None, "--gpus", min=0, help="GPUs per actor (default: 1 if the cluster has GPUs, else 0)."
    ),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Embed a corpus on Ray Data (a pool of model actors) into a LanceDB table: the same command
    on a laptop and on a cluster (docs/scale.md). Needs `pip install -e '.[ray]'`."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import ray  # noqa: F401
    except ImportError:
        typer.echo("error: Ray is not installed: pip install -e '.[ray]'", err=True)
        raise typer.Exit(1)
    from carsearch.core.params import load_params
    from carsearch.core.paths import repo_root, resolve
    from carsearch.core.rejects import summarise
    from carsearch.index.scale import embed_corpus
    from carsearch.index.store import read_meta
    from carsearch.model.clip import ModelConfigError

    try:
        root = repo_root()
        params = load_params(root / "params.yaml")
        cfg = params["index"]
        if model_dir is None:
            index_dir = resolve(params["paths"]["index_dir"], root)
            meta = read_meta(index_dir)
            if not meta or not meta.get("version"):
                raise FileNotFoundError(f"no index at {index_dir} to take the model from; pass --model DIR")
            model_dir = index_dir / meta["version"] / meta["model_dir"]
        res = embed_corpus(
            corpus,
            out,
            model_dir,
            table=table,
            concurrency=workers,
            batch_size=batch_size or int(cfg["batch_size"]),
            num_gpus=gpus,
            address=address,
            draft=bool(cfg["decode_draft"]),
            subfolder_key=cfg["subfolder_key"],
            index_cfg=cfg,
        )
    except (FileNotFoundError, ValueError, ModelConfigError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for line in summarise(res["rejects"], "file"):
        typer.echo(f"embed-ray: {line}", err=True)
    typer.echo(
        f"embed-ray: {res['rows']} images into {res['out']} table {res['table']} ({res['search']}), "
        f"{res['rejected']} rejected, {res['actors']} actors x {res['num_gpus_per_actor']:g} GPU, "
        f"{res['images_per_second']} img/s"
    )


if __name__ == "__main__":
    sys.exit(app())
