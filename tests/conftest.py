import compileall
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DASHCAM = REPO.parent / "shared" / "fixtures" / "dashcam"
BIN = Path(sys.executable).parent


def run(cmd, cwd, check=True, env=None, timeout=900):
    """Run a command with the venv first on PATH; return CompletedProcess (stdout+stderr in .stdout)."""
    e = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    e.pop("CARSEARCH_ROOT", None)
    if (Path(cwd) / "src" / "carsearch").is_dir():  # a repo copy runs its own code, not the editable install's
        e["PYTHONPATH"] = str(Path(cwd) / "src")
    p = subprocess.run(
        cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-4000:]}")
    return p


def copy_repo(dest: Path) -> Path:
    """A copy of the working tree (tracked + untracked-not-ignored files) as a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, stdout=subprocess.PIPE, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, stdout=subprocess.DEVNULL)
    # the copy's stages run its own src/: compiled once here, not in every stage process (where
    # PYTHONDONTWRITEBYTECODE is set, Python never writes the .pyc files itself)
    compileall.compile_dir(dest / "src", quiet=1, workers=0)
    return dest


def set_yaml(path: Path, updates: dict) -> None:
    """Set dotted keys in a YAML file (a conf/ group or params.yaml of a repo copy)."""
    import yaml

    cfg = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        cur = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            cur = cur[p]
        cur[last] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def dashcam_dir():
    if not DASHCAM.is_dir():
        pytest.skip("../shared/fixtures/dashcam not present")
    return DASHCAM


def pytest_configure(config):
    import require_all

    if require_all.enabled():  # CARSEARCH_REQUIRE_ALL=1 (.ci/run): a skip is a failure
        config.pluginmanager.register(require_all, "carsearch-require-all")
    # in the controlling process only (an xdist worker has `workerinput`): it looks at the repo
    # before the first worker starts and after the last one ends
    if not hasattr(config, "workerinput"):
        from repo_guard import RepoGuard

        config.pluginmanager.register(RepoGuard(REPO), "carsearch-repo-guard")


# The longest files first: `make test` runs them on two xdist workers, one worker per file, and the
# suite can end no sooner than its longest file; started first, it runs beside all the others.
SLOWEST_FIRST = ("test_pipeline_e2e.py", "test_kill.py", "test_own_photos_e2e.py", "test_ddp.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept
