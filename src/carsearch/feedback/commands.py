"""`carsearch judge`: judge a hit of a saved result list by rank, or walk the list interactively."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from carsearch.core.paths import repo_root
from carsearch.feedback import results, store
from carsearch.feedback.record import parse_verdict


def judge(query_id: str, rank: Optional[int], verdict: Optional[str]) -> None:
    """`carsearch judge` (its help is in carsearch.cli)."""
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
                yield h["rank"], parse_verdict(word)
                break
            except ValueError as e:
                typer.echo(str(e), err=True)


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)
