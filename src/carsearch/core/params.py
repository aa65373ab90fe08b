"""Reading the composed `params.yaml` (what DVC wrote from conf/ plus `-S` overrides)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from carsearch.core.errors import CarsearchError
from carsearch.core.io import clean_stale
from carsearch.core.paths import repo_root, resolve
from carsearch.core.schema import ConfigError, validate_params


class ParamsError(CarsearchError, ValueError):
    pass


def load_params(path: str | Path | None = None, validate: bool = True) -> dict[str, Any]:
    """params.yaml as a dict, checked against the schema in `carsearch.core.schema` (one-line ParamsError
    naming the key, the value and what is allowed)."""
    p = Path(path) if path else repo_root() / "params.yaml"
    if not p.is_file():
        raise ParamsError(f"{p}: not found; run `dvc exp run` once (it composes conf/ into params.yaml)")
    with open(p, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{p}: top level is not a mapping")
    if validate:
        label = p.name if p.resolve() == (repo_root() / "params.yaml").resolve() else str(p)
        try:
            params = validate_params(params, label, root=p.parent)
        except ConfigError as e:
            raise ParamsError(str(e)) from None
    return params


def get(params: dict, dotted: str) -> Any:
    """`get(params, "train.lr")` with a one-line error naming the missing key."""
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ParamsError(f"params.yaml: missing key {dotted!r}")
        cur = cur[part]
    return cur


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(now: dict, before: dict) -> list[str]:
    """Sorted dotted keys whose values differ between two params dicts (present in only one counts)."""
    a, b = flatten(now), flatten(before)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def run_stage(main) -> None:
    """Run a stage entry point; expected errors become one line on stderr and exit code 1."""
    try:
        clean_leftovers()
        main()
    except (CarsearchError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def clean_leftovers() -> None:
    """Before any stage: remove what a killed stage left beside the pipeline's output folders
    (DVC may restore a killed stage's output from its run cache without running it again, so the
    stage itself would never see its own leftovers)."""
    try:
        paths, root = load_params(validate=False).get("paths") or {}, repo_root()
    except (ParamsError, FileNotFoundError):
        return
    for key in ("raw_dir", "jsonl_dir", "captions_dir", "pairs_dir", "model_dir"):
        if paths.get(key):
            clean_stale(resolve(paths[key], root))


def check_params() -> dict[str, Any]:
    """`load_params()` for a stage's entry point outside `run_stage` (one line and exit 1 on a bad value)."""
    try:
        return load_params()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
