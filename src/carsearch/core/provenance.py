"""Where a figure came from: the machine and the commit a stage ran on, written into its
metrics/<stage>.json as `provenance` (the results page prints it under each table).

`provenance(root)` = {"commit": git HEAD (None outside a git checkout), "dirty": whether the code
(src/, conf/, dvc.yaml, params.yaml) differs from that commit, "machine": {"cpu": model name,
"cores": usable CPUs, "ram_gib": total memory, "gpu": the CUDA devices' names or "none",
"load_1m": the 1-minute load average when the stage started (how busy the machine was)},
"at": UTC time}. Every fact is best effort: a fact that cannot be read is None, never an error.
Written by finetune_clip, evaluate and build_index (train.json, eval.json, index.json). The data
stages' files (ingest, caption, curate) and metrics/summary.json carry none of it: they are the same
bytes on every machine (docs/REPRODUCIBILITY.md), which a machine's name would break.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

CODE = ("src", "conf", "dvc.yaml", "params.yaml")  # what a figure's commit is about


def _run(args: list[str], cwd: Path | None = None) -> tuple[int, str] | None:
    try:
        p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.returncode, p.stdout.strip()


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return " ".join(line.split(":", 1)[1].split()) or None
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (a container's share)
    except (AttributeError, OSError):
        return os.cpu_count()


def ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, OSError, ValueError):
        return None


def gpu() -> str:
    """The CUDA devices' names ("none" without one): torch's view when torch is already loaded,
    else nvidia-smi's (a stage that never loads torch does not load it for this)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            return "none"
        except Exception:  # noqa: BLE001 - a broken driver is "none" here, the stage itself reports it
            return "none"
    if shutil.which("nvidia-smi"):
        got = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
        if got and got[0] == 0 and got[1]:
            return ", ".join(x.strip() for x in got[1].splitlines() if x.strip())
    return "none"


def load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": cores(), "ram_gib": ram_gib(), "gpu": gpu(), "load_1m": load_1m()}


def commit(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD's full hash, whether the code differs from it); (None, None) outside a git checkout."""
    head = _run(["git", "rev-parse", "--verify", "HEAD"], cwd=root)
    if not head or head[0] != 0 or not head[1]:
        return None, None
    diff = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=root)
    return head[1], (bool(diff[1]) if diff and diff[0] == 0 else None)


def provenance(root: Path) -> dict:
    h, dirty = commit(Path(root))
    return {
        "commit": h,
        "dirty": dirty,
        "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def stamped(figures: dict, root: Path) -> dict:
    """`figures` with the `provenance` of this run (a stage's metrics file as written)."""
    return {**figures, "provenance": provenance(root)}
