"""A test never writes into the repo it runs from: the session fails if the suite changed it.

`RepoGuard` (registered by tests/conftest.py in the controlling process only: under pytest-xdist the
workers never register it) lists every file under the repo (the working tree and the ignored outputs:
models/, data/, .carsearch/, metrics/, mlruns.db, ...) with its size and mtime when the session
starts, lists it again when the session ends (after every worker is done) and, where anything was
added, removed or changed, prints what and sets the exit status to "tests failed", even when every
test passed. Caches that Python and the tools keep for themselves (`__pycache__`, `.pytest_cache`,
`.ruff_cache`, ...) and DVC's own cache and experiment workspaces are not watched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".import_linter_cache"}
SKIP_PATHS = {os.path.join(".dvc", "cache"), os.path.join(".dvc", "tmp")}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{path relative to root: (size, mtime_ns)} of every file (links not followed)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [
            d for d in dirnames if d not in SKIP_DIRS and os.path.normpath(os.path.join(rel_dir, d)) not in SKIP_PATHS
        ]
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # removed while we looked
                continue
            out[os.path.normpath(os.path.join(rel_dir, name))] = (st.st_size, st.st_mtime_ns)
    return out


def changes(before: dict, after: dict) -> list[str]:
    """One line per path added, removed or changed (size or mtime), sorted."""
    out = [f"{p} (new)" for p in after.keys() - before.keys()]
    out += [f"{p} (removed)" for p in before.keys() - after.keys()]
    out += [f"{p} (changed)" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(out)


class RepoGuard:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.before: dict | None = None
        self.found: list[str] = []

    def pytest_sessionstart(self, session) -> None:
        self.before = snapshot(self.root)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if self.before is None:
            return
        self.found = changes(self.before, snapshot(self.root))
        if self.found and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.found:
            return
        tr = terminalreporter
        tr.section(f"FAILED: the tests changed {len(self.found)} file(s) of the repo they ran from", sep="!", red=True)
        tr.line(
            f"{self.root}: a test must work in a tmp_path copy, never here (or something else changed it meanwhile)"
        )
        for line in self.found[:40]:
            tr.line(f"  {line}", red=True)
        if len(self.found) > 40:
            tr.line(f"  ... and {len(self.found) - 40} more")
