"""`carsearch sightings ID` (registered in cli.py with one line): the vehicle's sightings per camera,
in time order, confident ones first (`index.sightings`). Light at import: the work loads lazily."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer


def _line(s: dict) -> str:
    from carsearch.core.when import iso

    p = "-" if s["probability"] is None else f"{s['probability']:.2f}"
    parts = [f"  {iso(s.get('time')) or '(no time)'}", s["id"], f"p={p}", f"look {s['score']:.3f}"]
    if s.get("plate"):
        parts.append(f"plate {s['plate']}")
    if s.get("travel_s") is not None:
        w = s.get("travel_window")
        parts.append(f"travel {s['travel_s']:.0f}s" + (f" (window {w[0]:.0f}-{w[1]:.0f}s)" if w else ""))
    return "  ".join(parts)


def result_lines(res) -> list[str]:
    """The command's lines: a summary, then per camera (in the order the vehicle reached them) its
    sightings in time order, confident ones first."""
    from carsearch.core.sightings import timeline

    q = res.query
    out = [
        f"sightings of {q.get('id') or 'the photo'}"
        + (f" ({q['camera']}, {q['time']})" if q.get("camera") else "")
        + f": seen at {res.cameras()} other camera(s), {res.cameras(True)} confident"
    ]
    if res.note:
        out.append(f"note: {res.note}")
    for title, rows in (("confident", res.confident), ("others", res.others)):
        if rows:
            out.append(f"{title}:")
            for g in timeline(rows):
                out.append(f" {g['camera'] or '(no camera)'}: {len(g['sightings'])}")
                out += [_line(s) for s in g["sightings"]]
    return out


def sightings(
    image_id: Optional[str] = typer.Argument(None, help="An indexed hit's id (as search prints it)."),
    track: Optional[str] = typer.Option(None, "--track", help="A video track's id instead of a hit."),
    image: Optional[Path] = typer.Option(None, "--image", help="A photo of the vehicle instead of a hit."),
    plate: Optional[str] = typer.Option(None, "--plate", help="With --image: the vehicle's plate, if known."),
    k: int = typer.Option(50, "-k", help="How many candidates (nearest by appearance) are weighed."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON instead of lines."),
    index_dir: Optional[str] = typer.Option(None, "--index", help="Index folder or s3://bucket/prefix."),
) -> None:
    """Where else was this vehicle seen? Its sightings at every camera and time, grouped by camera in
    time order, each with a calibrated same-vehicle probability (appearance, plate and the camera
    network's travel times); confident sightings first, the rest apart."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from carsearch.core.errors import CarsearchError
    from carsearch.index.search import CarSearch
    from carsearch.index.sightings import Sightings

    given = [x for x in (image_id, track, image) if x is not None]
    if len(given) != 1:
        typer.echo("error: give one of: a hit ID, --track or --image", err=True)
        raise typer.Exit(1)
    try:
        sg = Sightings(CarSearch(index_dir))
        if image_id is not None:
            res = sg.of_id(image_id, k)
        elif track is not None:
            res = sg.of_track(track, k)
        else:
            res = sg.of_image(str(image), k, plate=plate)
    except (FileNotFoundError, ValueError, CarsearchError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if as_json:
        from carsearch.core.when import iso

        def plain(r):
            return {k: (iso(v) if k == "time" else v) for k, v in r.items() if k != "vector"}

        typer.echo(json.dumps(res.as_dict(plain), default=str))
    else:
        typer.echo("\n".join(result_lines(res)))
