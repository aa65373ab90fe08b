"""`carsearch judgments export --format coco|labelstudio OUT` and `carsearch judgments import FILE`:
judged hits out to annotation tools and their corrections back (carsearch.curation.annotations,
carsearch.curation.corrections). Here, beside the index, because the export finds each judged hit's
frame, box and labels in the live index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

# Label Studio's URL of a file under its local-files document root (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)
IMAGE_ROOT = "/data/local-files/?d="

judgments_app = typer.Typer(
    no_args_is_help=True, help="Judged hits to annotation tools (COCO, Label Studio) and their corrections back."
)


def _rows(root: Path, index_dir: Optional[str]):
    """The index row of a hit id, or None for every id when there is no index (a note says so)."""
    from carsearch.core.errors import CarsearchError
    from carsearch.index.search import CarSearch

    try:
        s = CarSearch(index_dir=index_dir, root=root)
    except (FileNotFoundError, ValueError, CarsearchError) as e:  # no index, or one that cannot be opened
        typer.echo(f"judgments export: note: {str(e).splitlines()[0]}: hits exported without box or labels", err=True)
        return None
    return s.get_row


@judgments_app.command("export")
def export(
    out: Path = typer.Argument(..., help="The file to write (JSON)."),
    fmt: str = typer.Option(..., "--format", help="coco | labelstudio"),
    judgments: Optional[Path] = typer.Option(None, "--judgments", help="Judgments file (default paths.judgments)."),
    index_dir: Optional[str] = typer.Option(None, "--index", help="Index folder (default paths.index_dir)."),
    image_root: str = typer.Option(
        IMAGE_ROOT, "--image-root", help="Label Studio: what goes before each image's path in data.image."
    ),
) -> None:
    """Export the judged hits, each frame once with its judged boxes, labels and judgments, as COCO
    or as Label Studio import JSON (tasks with predictions; a labeling config beside it, OUT.xml)."""
    from carsearch.core.io import write_json, write_text
    from carsearch.core.paths import repo_root, resolve
    from carsearch.curation import annotations
    from carsearch.feedback.store import judgments_file

    if fmt not in ("coco", "labelstudio"):
        typer.echo(f"error: --format {fmt!r} is not coco or labelstudio", err=True)
        raise typer.Exit(2)
    root = repo_root()
    path = resolve(judgments, Path.cwd()) if judgments else judgments_file(root)
    if not path.is_file():
        typer.echo(
            f"error: no judgments file at {path} (judge hits first: `carsearch judge`, the page, the API)", err=True
        )
        raise typer.Exit(1)
    judged = annotations.judged_frames(path, _rows(root, index_dir), root)
    for line in judged.problems + judged.notes:
        typer.echo(f"judgments export: {line}", err=True)
    if fmt == "coco":
        write_json(out, annotations.to_coco(judged, root))
    else:
        tasks = annotations.to_labelstudio(judged, root, image_root)
        write_json(out, tasks)
        write_text(out.with_suffix(".xml"), annotations.label_config(tasks))
    regions = sum(len(f.regions) for f in judged.frames)
    typer.echo(
        f"judgments export: {len(judged.frames)} frame(s), {regions} judged box(es)/picture(s) to {out} ({fmt}); "
        f"{len(judged.problems)} not exported"
        + (f"; images relative to {judged.folder}" if judged.folder else "")
        + (f"; labeling config {out.with_suffix('.xml')}" if fmt == "labelstudio" else "")
    )


@judgments_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A Label Studio JSON export or a COCO file."),
    into: Optional[Path] = typer.Option(
        None, "--into", help="The frames' folder (default: the folder the export recorded)."
    ),
    to: str = typer.Option(
        "csv", "--to", help="csv: box rows of the folder's labels.csv | coco: carsearch_corrections.json"
    ),
) -> None:
    """Import corrected boxes and labels into the frames' folder, where carsearch reads them: they
    replace the rows of the corrected files in labels.csv (index.labels_csv), other rows kept; or
    the folder's carsearch_corrections.json (COCO). Each record that cannot be used is one line."""
    from carsearch.core.params import load_config
    from carsearch.core.paths import repo_root, resolve
    from carsearch.curation import corrections

    if to not in ("csv", "coco"):
        typer.echo(f"error: --to {to!r} is not csv or coco", err=True)
        raise typer.Exit(2)
    try:
        root = repo_root()
    except FileNotFoundError:  # outside a carsearch repo: --into names the folder, labels.csv its file
        root = None
    try:
        folder = resolve(into, Path.cwd()) if into else None
        corr = corrections.read(file, folder)
        if folder is None:
            if not corr.folder:
                raise ValueError(f"{file}: records no frames' folder (not a carsearch export): give --into FOLDER")
            folder = resolve(corr.folder, root or Path.cwd())
            corr = corrections.read(file, folder)
        if not folder.is_dir():
            raise ValueError(f"--into {folder}: not a folder")
        if to == "csv":
            name = load_config(root / "params.yaml").index.labels_csv if root is not None else None
            target = folder / (name or "labels.csv")
            written, replaced = corrections.merge_labels_csv(target, corr)
        else:
            target = folder / corrections.COCO_OUT
            written, replaced = corrections.merge_coco(target, corr, folder)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        typer.echo(f"error: {str(e).splitlines()[0]}", err=True)
        raise typer.Exit(1)
    for line in corr.problems:
        typer.echo(f"judgments import: {line}", err=True)
    boxes = sum(len(e["boxes"]) for e in corr.files.values())
    typer.echo(
        f"judgments import: {len(corr.files)} file(s), {boxes} box(es) into {target} ({written} written, "
        f"{replaced} earlier {'row' if to == 'csv' else 'image'}(s) of those files replaced); "
        f"{len(corr.problems)} problem(s)"
    )
