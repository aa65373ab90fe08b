"""The suite leaves the repo it runs from as it found it (tests/repo_guard.py, registered by
tests/conftest.py): a small suite in a scratch "repo" that writes into it fails the session, under
pytest-xdist as `make test` runs it, and one that does not passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from repo_guard import changes, snapshot

TESTS = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
from repo_guard import RepoGuard

def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RepoGuard(Path(__file__).parent), "carsearch-repo-guard")
"""

CLEAN = """
def test_in_tmp_path(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "last.pt").write_bytes(b"x")
"""

DIRTY = """
from pathlib import Path

def test_writes_a_checkpoint_into_the_repo():
    d = Path(__file__).parent / "models" / "checkpoints"
    d.mkdir(parents=True)
    (d / "last.pt").write_bytes(b"a toy model")

def test_changes_a_tracked_file():
    p = Path(__file__).parent / "params.yaml"
    p.write_text(p.read_text() + "lr: 1\\n")
"""


def _suite(root: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "conftest.py").write_text(CONFTEST)
    for name, text in files.items():
        (root / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CARSEARCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), *args, str(root)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def test_snapshot_sees_new_removed_and_changed_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jpg").write_bytes(b"a")
    (tmp_path / "gone.txt").write_text("x")
    (tmp_path / "__pycache__").mkdir()
    before = snapshot(tmp_path)
    (tmp_path / "data" / "a.jpg").write_bytes(b"ab")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / ".carsearch" / "embed_cache").mkdir(parents=True)
    (tmp_path / ".carsearch" / "embed_cache" / "x.npy").write_bytes(b"")
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"")  # Python's own cache: not watched
    assert changes(before, snapshot(tmp_path)) == [
        ".carsearch/embed_cache/x.npy (new)",
        "data/a.jpg (changed)",
        "gone.txt (removed)",
    ]


def test_a_suite_that_writes_into_its_repo_fails_under_xdist(tmp_path):
    p = _suite(tmp_path / "dirty", {"test_clean.py": CLEAN, "test_dirty.py": DIRTY}, "-n", "2", "--dist", "loadfile")
    assert p.returncode == 1, p.stdout
    assert "3 passed" in p.stdout and "the tests changed 2 file(s) of the repo they ran from" in p.stdout, p.stdout
    assert "models/checkpoints/last.pt (new)" in p.stdout and "params.yaml (changed)" in p.stdout, p.stdout


def test_a_suite_that_leaves_its_repo_alone_passes(tmp_path):
    p = _suite(tmp_path / "clean", {"test_clean.py": CLEAN}, "-p", "no:xdist")
    assert p.returncode == 0 and "1 passed" in p.stdout and "changed" not in p.stdout, p.stdout
