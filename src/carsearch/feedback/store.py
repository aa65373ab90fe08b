"""The judgments file: append-only JSON Lines, safe under concurrent writers.

A writer takes an exclusive `fcntl.flock` on the file, repairs a torn tail a killed writer left (a
last line without its newline is completed with one, so it stays a single bad line instead of
gluing itself to the next record), and appends its line with ONE `write` on an `O_APPEND`
descriptor, then fsyncs. Servers and the CLI on one machine can write at once: nothing is lost,
no line is torn. A reader takes no lock; it parses every line and reports, rather than raises on,
a line that does not parse (the torn last line of a writer killed mid-write, or a hand edit)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from carsearch.core.io import append_locked
from carsearch.core.params import load_params
from carsearch.core.paths import resolve
from carsearch.feedback.record import Judgment


def judgments_file(root: Path) -> Path:
    """paths.judgments of the repo's params.yaml, resolved against `root`."""
    return resolve(load_params(Path(root) / "params.yaml")["paths"]["judgments"], Path(root))


def append(path: Path, judgments: list[Judgment] | Judgment) -> int:
    """Append records (one write for all of them, under the file lock); returns the bytes written."""
    if isinstance(judgments, Judgment):
        judgments = [judgments]
    return append_locked(path, b"".join(j.line() for j in judgments))


@dataclass
class Loaded:
    judgments: list[Judgment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each: file:line: reason


def read(path: Path) -> Loaded:
    """Every judgment of the file (none when it does not exist), and a problem line for each line
    that is not one (its number and why; a torn last line says so)."""
    out = Loaded()
    path = Path(path)
    if not path.is_file():
        return out
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn_tail = bool(lines) and lines[-1] != b""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.judgments.append(Judgment.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as e:
            last = i == len(lines) and torn_tail
            why = "torn last line (a writer was stopped mid-write)" if last else str(e).splitlines()[0][:200]
            out.problems.append(f"{path}:{i}: skipped: {why}")
    return out
