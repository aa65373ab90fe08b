"""One base for every error carsearch raises on bad input or bad state (a file, a record, a key, a
model): `CarsearchError`. Each is one line that names what is wrong and how to fix it; the CLI and
the stages print it without a traceback and exit 1. Each subsystem's error keeps the built-in base
it had (`ValueError`, `RuntimeError`) so callers that caught those still do."""

from __future__ import annotations


class CarsearchError(Exception):
    """An expected failure, reported as one line (no traceback)."""
