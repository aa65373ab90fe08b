"""`carsearch search "red suv seen from the front" -k 5` / `carsearch search --image car.jpg`.

Over 350 lines on purpose: one Typer app holds every command's options (what `--help` and the
generated CLI reference read); the commands' work is in the library (e.g. `index.counts.command`)."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from carsearch.index.judged_cli import judgments_app  # issue 34: `carsearch judgments export|import`
from carsearch.index.sightings_cli import sightings as sightings_command
from carsearch.index.watch_commands import watch_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Car search over your traffic images.")


@app.callback()
def _main() -> None:
    """carsearch: search the car index built by `dvc repro`."""


def _with_filter_options(func):
    """Give `func` (which takes `**filters`) one `--<name>` option per filter column of the index
    row (carsearch.core.columns), after `--where`: `--color red --color blue`, `--camera cam-a`, …,
    and `--min-<name>` / `--max-<name>` per range column (`--min-speed 30`).
    The API and the page offer the same filters."""
    from carsearch.core.columns import ROW

    if getattr(func, "_filter_options", False):  # given once (a module loaded twice, e.g. by `typer ... utils docs`)
        return func
    func._filter_options = True
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = [p.name for p in params].index("where") + 1
    opts = [
        inspect.Parameter(
            c.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=typer.Option(None, f"--{c.name.replace('_', '-')}", help=c.help),
            annotation=Optional[list[str]],
        )
        for c in ROW.columns
        if c.filter
    ] + [
        inspect.Parameter(
            key,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=typer.Option(None, f"--{key.replace('_', '-')}", help=f"Only hits with {col} {op} this."),
            annotation=Optional[float],
        )
        for key, (col, op) in ROW.ranges.items()
    ]
    func.__signature__ = sig.replace(parameters=[*params[:at], *opts, *params[at:]])
    func.__annotations__ = {**func.__annotations__, **{p.name: p.annotation for p in opts}}
    return func


def _mark_missing(hits, root: Path) -> list[bool]:
    """Which hits point to an image that is gone or changed (an index older than its images)."""
    from carsearch.index.hits import missing

    return missing(hits, root)


@app.command()
@_with_filter_options
def search(
    query: Optional[str] = typer.Argument(None, help='Text query, e.g. "red pickup seen from behind".'),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Search by this image instead of text."),
    k: int = typer.Option(5, "-k", "--top-k", min=1, help="Number of results."),
    where: Optional[str] = typer.Option(
        None, "--where", help="Filter on metadata, e.g. \"color = 'red' AND view IN ('rear', 'side')\"."
    ),
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
    after: Optional[str] = typer.Option(None, "--after", help="Only hits captured at or after, e.g. 2026-01-02T10:00."),
    before: Optional[str] = typer.Option(None, "--before", help="Only hits captured before this time."),
    sort: str = typer.Option("score", "--sort", help="Order of the k hits: score (best first) or time (earliest)."),
    csv_out: Optional[Path] = typer.Option(
        None, "--csv", help="Also write the hits as CSV (file, frame, box, camera, time, score)."
    ),
    paths_only: bool = typer.Option(
        False, "-f", "--paths", help="Print only the original files' paths, one per line (for xargs & co)."
    ),
    copy_to: Optional[Path] = typer.Option(None, "--copy-to", help="Also copy the top k originals into this folder."),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", help="Only hits at least this likely to match (calibrated confidence, 0-1)."
    ),
    **filters: Optional[list[str]],
) -> None:
    """Print rank, score, id, caption and path of the k most similar cars; for a vehicle of a frame
    also its frame and box, and the camera and capture time where known. Everything typed is
    checked by the library (carsearch.index.search), once, before the model loads."""
    if sort not in ("score", "time"):
        typer.echo(f"error: --sort: {sort!r} is not score or time", err=True)
        raise typer.Exit(1)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # transformers' disable_progress_bar(), without importing transformers (a text query may not need it)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from carsearch.core.errors import CarsearchError
    from carsearch.core.paths import repo_root
    from carsearch.index.search import CarSearch
    from carsearch.index.search import search as run_search

    filters = {name: values for name, values in filters.items() if values is not None and values != []}
    asked = dict(where=where, filters=filters, after=after, before=before, min_confidence=min_confidence)
    embed, read = query, []
    try:
        searcher = CarSearch(index_dir, model=use_model)
        if query is not None and image is None:  # motion words as filters, read once (CarSearch.understand)
            embed, asked["filters"], read = searcher.understand(query, filters)
            asked["understand"] = False
        hits = run_search(query=embed, image=image, k=k, searcher=searcher, **asked)
    except (FileNotFoundError, ValueError, CarsearchError) as e:  # ModelConfigError is a ValueError
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if sort == "time":
        hits.sort(key=lambda h: (h.time is None, h.time or 0.0, h.rank))
    for said in read:
        typer.echo(f"read {said['note']}", err=True)
    root = repo_root()
    missing = _mark_missing(hits, root)
    kind = "image" if image is not None else "text" if query is not None else "plate"  # one calibration a kind
    calibrator = searcher.calibrator(kind)
    note = searcher.confidence_note(kind) if searcher.calibration is not None else None
    _print_hits(hits, missing, root, (calibrator, note), paths_only, sort)
    _extras(hits, missing, root, csv_out=csv_out, copy_to=copy_to, png=png, title=query or f"image: {image}")
    if not hits:
        clause = searcher.where_clause(asked["filters"], where)
        typer.echo("no results" + (f" match {clause}" if clause else ""), err=True)
    elif query is not None or image is not None:  # issue 34: saved under its query id, for `carsearch judge`
        from carsearch.feedback.results import save_cli

        scope = {"after": after, "before": before, "min_confidence": min_confidence}
        qid = save_cli(root, searcher, hits, query, image, where, filters, scope)
        typer.echo(f"query id {qid}: judge a hit with `carsearch judge {qid} RANK ✓|✗`", err=True)


def _extras(hits, missing: list[bool], root: Path, csv_out, copy_to, png, title: str) -> None:
    """The CSV, the missing-files warning, the copies and the PNG strip a search was asked for."""
    if csv_out is not None:
        _write_hits_csv(hits, csv_out)
        typer.echo(f"wrote {csv_out}", err=True)
    if any(missing):
        typer.echo(
            f"warning: {sum(missing)} of {len(hits)} results point to missing files; the index is older than "
            "the images it lists: run `dvc repro build_index`",
            err=True,
        )
    if copy_to is not None:
        from carsearch.index.hits import copy_to as copy_hits

        copied = copy_hits([h for h, gone in zip(hits, missing) if not gone], copy_to, root)
        typer.echo(f"copied {len(copied)} original(s) into {copy_to}", err=True)
    if png is not None:
        from carsearch.core import originals
        from carsearch.evaluation.plots import results_grid_png

        tiles = [
            (originals.source(h.path, root) if not gone else root / h.path, h.score, True)
            for h, gone in zip(hits, missing)
        ]
        results_grid_png([(title, tiles)], png)
        typer.echo(f"wrote {png}", err=True)


def _print_hits(hits, missing: list[bool], root: Path, calibration, paths_only: bool, sort: str) -> None:
    """One line per hit (rank, score, id, caption, original, [missing file], frame/box, camera,
    time, confidence) with the confident-match divider (`calibration`: the query kind's calibrator and
    the note saying why it has none); `-f`: only the originals' paths."""
    from carsearch.index import hits as hits_mod

    divider = _divider(hits, *calibration) if sort == "score" and not paths_only else None
    for i, (h, gone) in enumerate(zip(hits, missing)):
        if paths_only:
            if not gone:
                typer.echo(hits_mod.local_original(h, root))
            continue
        if divider and i == divider[0]:
            typer.echo(divider[1])
        typer.echo(
            f"{h.rank}\t{h.score:.4f}\t{h.id}\t{h.caption}\t{hits_mod.original(h)}"
            + ("\t[missing file]" if gone else "")
            + "".join(f"\t{x}" for x in _where_seen(h))
            + (f"\tconfidence={h.confidence:.3f}" if h.confidence is not None else "")
        )
    if divider and divider[0] == len(hits) and hits:
        typer.echo(divider[1])


def _divider(hits, calibrator=None, note: str | None = None) -> tuple[int, str] | None:
    """Where the confident hits end (the index of the first one that is not) and the line shown
    there; `note`: why this query kind shows no confidence (said above the hits)."""
    if hits and note:
        return 0, f"---- {note} ----"
    if not hits or hits[0].confidence is None:
        return None
    n = next((i for i, h in enumerate(hits) if not h.confident), len(hits))
    if calibrator is not None and calibrator.threshold is None:
        target = calibrator.target_precision
        return 0, (
            "---- no hit is marked confident: no confidence level reached the "
            + (f"{target:.0%} " if target is not None else "")
            + "precision target on held-out queries (see metrics/eval.json calibration) ----"
        )
    if not n:
        return 0, "---- no confident match: these are the closest ----"
    what = f"{n} confident match{'es' if n != 1 else ''}"
    return n, f"---- {what} above; below: less likely matches ----" if n < len(hits) else f"---- {what} ----"


def _where_seen(h) -> list[str]:
    """`frame=<id> box=x1,y1,x2,y2`, `camera=…`, `plate=…`, `time=…` of a hit, where it has them."""
    from carsearch.core.when import iso

    out = []
    if h.box is not None:
        out.append(f"frame={h.frame_id} box={','.join(f'{v:.0f}' for v in h.box)}")
    if h.camera:
        out.append(f"camera={h.camera}")
    if h.plate:
        out.append(f"plate={h.plate}")
    if h.time is not None:
        out.append(f"time={iso(h.time)}")
    return out


def _write_hits_csv(hits, out: Path) -> None:
    from dataclasses import asdict

    from carsearch.core.io import write_text
    from carsearch.index.results import hits_csv

    write_text(out, hits_csv([asdict(h) for h in hits]))


@app.command()
@_with_filter_options
def counts(
    query: Optional[str] = typer.Argument(None, help="Count the top -k hits of this text search (none: every row)."),
    by: str = typer.Option("camera", "--by", help="Buckets: any of camera,hour,class,colour,direction,view,body_type."),
    line: Optional[str] = typer.Option(
        None, "--line", help="Count crossings of this line x1,y1,x2,y2 (pixels of --camera's image) per direction."
    ),
    k: int = typer.Option(1000, "-k", "--top-k", min=1, help="With a text: how many hits are counted."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter on metadata, as for search."),
    after: Optional[str] = typer.Option(None, "--after", help="Only vehicles captured at or after this time."),
    before: Optional[str] = typer.Option(None, "--before", help="Only vehicles captured before this time."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="With a text: only confident hits."),
    csv_out: Path = typer.Option(Path("counts.csv"), "--csv", help="Write the counts here (CSV)."),
    png: Path = typer.Option(Path("counts.png"), "--png", help="Write a stacked bar chart here (PNG)."),
    index_dir: Optional[str] = typer.Option(None, "--index", help="Index folder or s3://bucket/prefix."),
    **filters: Optional[list[str]],
) -> None:
    """Count vehicles (video tracks once, not per frame) per bucket, or line crossings per direction
    (--line, in the image of one --camera), of any search: its text, filters, --where and time range
    combine. Writes the counts as CSV and a stacked bar chart (PNG)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from carsearch.index.counts import command

    asked = dict(where=where, after=after, before=before, min_confidence=min_confidence)
    raise typer.Exit(command(query, by, line, k, csv_out, png, index_dir, filters, **asked))


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


@app.command()
def judge(
    query_id: str = typer.Argument(..., help="The id `carsearch search` printed for its result list (or 'last')."),
    rank: Optional[int] = typer.Argument(None, min=1, help="The rank of the hit to judge (none: walk the list)."),
    verdict: Optional[str] = typer.Argument(None, help="✓ or ✗ (also y/n, +/-)."),
) -> None:
    """Judge a hit ✓ (it matches the query) or ✗, by the query id and rank of a saved result list;
    without RANK, walk the list: y / n per hit, Enter skips, q stops. Judgments are appended to
    paths.judgments (data/feedback/judgments.jsonl): an eval set and a training signal."""
    from carsearch.feedback.commands import judge as run_judge

    run_judge(query_id, rank, verdict)


app.add_typer(judgments_app, name="judgments")
app.command("sightings")(sightings_command)  # carsearch.index.sightings_cli

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
    from carsearch.core.params import load_config
    from carsearch.core.paths import repo_root
    from carsearch.core.rejects import summarise
    from carsearch.index.alerts import summary_line
    from carsearch.index.append import add_images
    from carsearch.model.clip import ModelConfigError

    try:
        root = repo_root()
        res = add_images(paths, load_config(root / "params.yaml"), root)
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
    if (res.get("watches") or {}).get("watches"):  # conf/watchlists.yaml ran on the new rows
        typer.echo(summary_line("index add", res["watches"]))
    if res.get("outside_corpus"):
        typer.echo(
            f"index add: note: {res['outside_corpus']} of them are outside index.corpus_path; a later `dvc repro` "
            "rebuilds the index from the corpus and will not keep them (copy them into the corpus folder)",
            err=True,
        )


@index_app.command("checkout")
def index_checkout() -> None:
    """Point the live index at the version in paths.index_manifest (after `git checkout REV && dvc
    checkout`: that revision's index, while it is still on disk; see carsearch.index.manifest)."""
    from carsearch.core.params import load_config
    from carsearch.core.paths import repo_root, resolve
    from carsearch.index.manifest import checkout

    root = repo_root()
    paths = load_config(root / "params.yaml").paths
    try:
        man = checkout(resolve(paths.index_dir, root), resolve(paths.index_manifest, root))
    except (FileNotFoundError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"index checkout: live index is now {man['version']} ({man.get('rows')} rows, digest {man['digest'][:12]})"
    )


app.add_typer(watch_app, name="watch")  # carsearch watch add|list|rm|flush (issue 33)

from carsearch.cli_export import export as _export  # noqa: E402  (issue 33: evidence bundles)

app.command("export")(_with_filter_options(_export))

if __name__ == "__main__":
    sys.exit(app())
