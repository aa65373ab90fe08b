"""The pull-request report: `dvc metrics diff` and `dvc params diff` against a base revision, as
Markdown. The CI workflow (.github/workflows/pr-report.yml) posts exactly what
`carsearch report --base <branch>` prints locally."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


class ReportError(RuntimeError):
    pass


def _dvc() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def _run(args: list[str], cwd: Path) -> str:
    try:
        p = subprocess.run([_dvc(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ReportError("dvc not found on PATH") from None
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise ReportError(f"`dvc {' '.join(args)}` failed: {msg[-1] if msg else p.returncode}")
    return p.stdout.strip()


def _table_or_empty(md: str) -> str:
    """dvc prints a bare header when nothing changed: treat that as no change."""
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    return md if len(rows) > 2 else ""


def pr_report(base: str = "main", head: str | None = None, root: str | os.PathLike | None = None,
              title: str = "carsearch: pipeline report") -> str:
    """Markdown with the metrics and params diff of `head` (default: the workspace) against `base`."""
    from .paths import repo_root

    cwd = Path(root) if root else repo_root()
    revs = [base] + ([head] if head else [])
    metrics = _table_or_empty(_run(["metrics", "diff", *revs, "--md"], cwd))
    params = _table_or_empty(_run(["params", "diff", *revs, "--md"], cwd))
    against = f"`{head}`" if head else "this workspace"
    out = [f"## {title}", "", f"{against} against `{base}`.", "", "### Metrics (`dvc metrics diff`)", "",
           metrics or "No metric changed.", "", "### Params (`dvc params diff`)", "", params or "No param changed.", ""]
    return "\n".join(out)
