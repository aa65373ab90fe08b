"""Where things live: the repo root and every configured path, independent of the working dir.

DVC runs queued/temp experiments in a copy under `<repo>/.dvc/tmp/exps/<name>/`. Stage outputs
must be written relative to that copy (DVC collects them from there), but state that must outlive
the experiment (the MLflow store) belongs to the *original* repo: `shared_root()` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER = "dvc.yaml"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The workspace the stage runs in: `$CARSEARCH_ROOT`, else the nearest folder up with dvc.yaml."""
    env = os.environ.get("CARSEARCH_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for p in (here, *here.parents):
        if (p / MARKER).is_file():
            return p
    raise FileNotFoundError(f"no {MARKER} found in {here} or its parents; run from inside the carsearch repo")


def shared_root(start: str | os.PathLike | None = None) -> Path:
    """The original repo even inside a DVC temp experiment workspace (`.dvc/tmp/exps/...`)."""
    root = repo_root(start)
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def resolve(path: str | os.PathLike, root: Path | None = None) -> Path:
    """An absolute path for a configured (repo-relative) path."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or repo_root()) / p


def mlflow_uri(configured: str | None = None) -> str:
    """`$MLFLOW_TRACKING_URI`, else a sqlite store in the original repo root."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured and "://" in configured and not configured.startswith("sqlite:///"):
        return configured
    rel = (configured or "sqlite:///mlruns.db").removeprefix("sqlite:///")
    path = Path(rel) if Path(rel).is_absolute() else shared_root() / rel
    return f"sqlite:///{path}"
