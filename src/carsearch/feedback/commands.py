"""`carsearch judge`: judge a hit of a saved result list by rank, or walk the list interactively."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from carsearch.feedback import results, store


def judge(
    query_id: str = typer.Argument(..., help="The id `carsearch search` printed for its result list (or 'last')."),
    rank: Optional[int] = typer.Argument(None, min=1, help="The rank of the hit to judge (none: walk the list)."),
    verdict: Optional[str] = typer.Argument(None, help="✓ or ✗ (also y/n, +/-)."),
) -> None:
    """Judge a hit ✓ (it matches the query) or ✗, by the query id and rank of a saved result list;
    without RANK, walk the list: y / n per hit, Enter skips, q stops. Judgments are appended to
    paths.judgments (data/feedback/judgments.jsonl): an eval set and a training signal."""
    from carsearch.core.paths import repo_root

    root = repo_root()
    try:
        saved = results.load(root, query_id)
        if rank is not None and verdict is None:
            raise ValueError("give the verdict after the rank: ✓ or ✗ (also y/n, +/-)")
        todo = [(rank, verdict)] if rank is not None else list(_walk(saved))
        made = [results.judgment(saved, r, v) for r, v in todo]
        path = store.judgments_file(root)
    except (LookupError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {str(e).splitlines()[0]}", err=True)
        raise typer.Exit(1)
    if made:
        store.append(path, made)
    for j in made:
        typer.echo(f"judged {j.query_id} #{j.hit.rank} {j.hit.id}: {'✓' if j.verdict else '✗'}")
    typer.echo(f"{len(made)} judgment(s) appended to {_rel(path, root)}", err=True)


def _walk(saved: dict):
    """(rank, verdict) pairs typed for the hits of a saved list (y/n/+/-/✓/✗, Enter skips, q stops)."""
    q = saved["query"]
    typer.echo(f"query {saved['query_id']}: {q.get('text') or q.get('image_id') or q.get('image_sha')}", err=True)
    for h in saved["hits"]:
        while True:
            typer.echo(
                f"#{h['rank']} {h['id']} {h.get('path') or ''}  ✓/✗ (y/n, Enter skips, q stops)? ", err=True, nl=False
            )
            word = sys.stdin.readline()
            if not word or word.strip().lower() == "q":
                return
            if not word.strip():
                break
            try:
                from carsearch.feedback.record import parse_verdict

                yield h["rank"], parse_verdict(word)
                break
            except ValueError as e:
                typer.echo(str(e), err=True)


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)
