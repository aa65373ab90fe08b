"""Nothing lost, nothing crashes: `kill -9` a stage of `dvc repro` at a random moment (seeded),
then a plain `dvc repro` finishes with no manual cleanup, `dvc status` is clean, no half-written
output or temp folder is left, and an open `CarSearch` keeps answering through the kill of
build_index and the rebuild. Tiny config in a temporary copy of the repo."""

import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, copy_repo, run
from conftest import set_yaml as _set
from testkit import TINY

pytestmark = pytest.mark.slow

STAGES = (
    "ingest",
    "make_jsonl",
    "caption_batch",
    "curate_pairs",
    "finetune_clip",
    "evaluate",
    "list_corpus",
    "build_index",
    "summarize",
)
KILLED = ("ingest", "finetune_clip", "build_index")
LEFTOVER = re.compile(r"(\.tmp|\.old-|\.building-)")


def _env(repo: Path) -> dict:
    e = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo / "src")}
    e.pop("CARSEARCH_ROOT", None)
    return e


def _repro_timed(repo: Path, *args: str, kill_after: tuple[str, float] | None = None):
    """`dvc repro *args` in its own process group, its output read line by line. Returns
    ({stage: seconds its command ran: from its 'Running stage' line to DVC's next lock-file line},
    output, returncode). kill_after=(stage, s): SIGKILL the whole group `s` seconds into that stage."""
    p = subprocess.Popen(
        ["dvc", "repro", *args],
        cwd=repo,
        env=_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    lines: list[str] = []
    killer, current = None, None

    def kill(delay: float) -> None:
        time.sleep(delay)
        # only while the stage's own command runs: a kill that lands in DVC's write of dvc.lock (after
        # the command ended, faster than in the first run) tears a file DVC writes in place; the
        # stage then counts as finished before its kill and is run again, killed sooner
        if p.poll() is None and _stage_running(p.pid, kill_after[0]):
            os.killpg(p.pid, signal.SIGKILL)

    for line in p.stdout:
        lines.append(line)
        if current and re.search(r"lock file|Running stage", line):
            durations[current], current = time.monotonic() - started[current], None
        m = re.match(r"Running stage '(\w+)'", line)
        if m:
            current = m.group(1)
            started[current] = time.monotonic()
            if kill_after and m.group(1) == kill_after[0]:
                killer = threading.Thread(target=kill, args=(kill_after[1],), daemon=True)
                killer.start()
    rc = p.wait()
    if current:
        durations[current] = time.monotonic() - started[current]
    if killer:
        killer.join()
    return durations, "".join(lines), rc


def _stage_running(pgid: int, stage: str) -> bool:
    """Whether `python -m carsearch.stages.<stage>` runs in process group `pgid` (read from /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == pgid:
                if f"carsearch.stages.{stage}" in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    return True
        except (OSError, ProcessLookupError):
            continue
    return False


def _leftovers(repo: Path) -> list[str]:
    return [
        str(p.relative_to(repo))
        for top in ("data", "models")
        for p in (repo / top).rglob("*")
        if LEFTOVER.search(p.name)
    ]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("kill") / "repo")
    (repo / "conf/model/clip_test.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    config = repo / "conf/config.yaml"
    text = re.sub(r"- data: \w+", "- data: demo", config.read_text())
    config.write_text(re.sub(r"- model: \w+", "- model: clip_test", text))
    _set(config, {"epochs": 2, "batch_size": 16})
    _set(repo / "conf/data/_base.yaml", {"demo.n_images": 48, "demo.size": 64, "demo.colors": ["red", "blue", "white"]})
    _set(repo / "conf/eval/default.yaml", {"by_combo": False, "zero_shot": ["color"], "n_examples": 2})
    run(["python", "scripts/compose_params.py"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny config"], repo)
    durations, out, rc = _repro_timed(repo)
    assert rc == 0, out[-4000:]
    assert set(durations) == set(STAGES), out[-4000:]
    print("stage seconds:", {s: round(t, 1) for s, t in durations.items()})
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], repo)
    return repo, durations


def _kill_when_writing(repo: Path, stage: str, pattern: str) -> None:
    """SIGKILL `dvc repro -f -s stage` the moment its temp output folder (`pattern`) exists."""
    p = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", stage],
        cwd=repo,
        env=_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while p.poll() is None and not list(repo.glob(pattern)):
        time.sleep(0.002)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, f"{stage} finished before it could be killed while writing {pattern}"
    assert list(repo.glob(pattern))


def _recover(repo: Path, stage: str, what: str) -> None:
    """A plain `dvc repro` finishes, `dvc status` is clean, no temp folder is left."""
    t = time.monotonic()
    p = run(["dvc", "repro"], repo, check=False)
    assert p.returncode == 0, f"dvc repro after kill -9 of {stage} {what}:\n{p.stdout[-4000:]}"
    reran = re.findall(r"Running stage '(\w+)'", p.stdout)
    print(f"kill -9 {stage} {what}: dvc repro re-ran {reran} in {time.monotonic() - t:.0f}s")
    if _leftovers(repo) and f"Stage '{stage}' is cached - skipping run" in p.stdout:
        # DVC restored the stage from its run cache without running it: the killed run's hidden
        # temp folder (gitignored) goes at the stage's next real run
        assert all(re.match(r"\.\w+\.tmp-", Path(x).name) for x in _leftovers(repo)), _leftovers(repo)
        run(["dvc", "repro", "-f", "-s", stage], repo)
    status = run(["dvc", "status"], repo).stdout
    # list_corpus is always_changed (it lists the corpus on every repro): nothing else may be listed
    assert "up to date" in status or status.split() == ["list_corpus:", "always", "changed"], status
    assert not _leftovers(repo), _leftovers(repo)
    assert (repo / "models/finetuned/model.safetensors").is_file()


def _kill_and_recover(repo: Path, stage: str, delay: float) -> None:
    for _ in range(4):  # a stage that finished before its kill is run again, killed sooner
        _, out, rc = _repro_timed(repo, "-f", "-s", stage, kill_after=(stage, delay))
        assert rc in (-signal.SIGKILL, 0), out[-3000:]
        if rc == -signal.SIGKILL:
            break
        delay /= 2
    assert rc == -signal.SIGKILL, f"{stage} always finished before its kill"
    _recover(repo, stage, f"{delay:.1f}s in")


def test_kill_9_ingest_while_writing_its_output(repo):
    repo, _ = repo
    _kill_when_writing(repo, "ingest", "data/.raw.tmp-*")
    _recover(repo, "ingest", "while data/raw was being written")


@pytest.mark.parametrize("stage", ["ingest", "finetune_clip"])
def test_kill_9_then_repro_recovers(repo, stage):
    repo, durations = repo
    delay = random.Random(f"kill-{stage}").uniform(0.1, 0.9) * durations[stage]
    _kill_and_recover(repo, stage, delay)


def test_kill_9_build_index_while_searching(repo):
    from carsearch.index.search import CarSearch

    repo, durations = repo
    searcher = CarSearch(root=repo)
    assert len(searcher.text("a red sedan", k=3)) == 3
    errors: list[BaseException] = []
    done = threading.Event()
    count = [0]

    def keep_searching():
        while not done.is_set():
            try:
                hits = searcher.text("a blue car", k=3)
                assert len(hits) == 3, hits
                count[0] += 1
            except BaseException as e:  # noqa: BLE001 -- every failure is a test failure
                errors.append(e)
            time.sleep(0.02)

    t = threading.Thread(target=keep_searching, daemon=True)
    t.start()
    try:
        delay = random.Random("kill-build_index").uniform(0.1, 0.9) * durations["build_index"]
        _kill_and_recover(repo, "build_index", delay)
    finally:
        done.set()
        t.join(30)
    assert not errors, errors[:3]
    assert count[0] > 0
    assert searcher.refresh() and len(searcher.text("a white van", k=3)) == 3
