"""Reading the composed `params.yaml` (what DVC wrote from conf/ plus `-S` overrides)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from carsearch.core.errors import CarsearchError
from carsearch.core.io import clean_stale, refused_write
from carsearch.core.paths import repo_root, resolve
from carsearch.core.schema import ConfigError, Params, validate_params


class ParamsError(CarsearchError, ValueError):
    pass


def load_config(path: str | Path | None = None) -> Params:
    """params.yaml as the typed `Params` (carsearch.core.schema), checked: a bad value is one
    ParamsError line naming the key, the value and what is allowed. Stages pass its sections on
    (`cfg.index`, `cfg.data`), never the whole of it, to library functions."""
    raw, p = _read(path)
    try:
        return validate_params(raw, _label(p), root=p.parent)
    except ConfigError as e:
        raise ParamsError(str(e)) from None


def load_params(path: str | Path | None = None, validate: bool = True) -> dict[str, Any]:
    """params.yaml as the plain mapping it holds (checked unless `validate=False`), for what compares
    or logs the file as written; code that reads settings uses `load_config`."""
    if validate:
        return load_config(path).as_dict()
    return _read(path)[0]


def _label(p: Path) -> str:
    """How errors name the file: `params.yaml` for the repo's own, else its path (also outside a repo:
    a params file given by path is read from anywhere)."""
    try:
        own = (repo_root() / "params.yaml").resolve()
    except FileNotFoundError:
        own = None
    return p.name if p.resolve() == own else str(p)


def _read(path: str | Path | None) -> tuple[dict, Path]:
    p = Path(path) if path else repo_root() / "params.yaml"
    if not p.is_file():
        raise ParamsError(f"{p}: not found; run `dvc exp run` once (it composes conf/ into params.yaml)")
    with open(p, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{p}: top level is not a mapping")
    return params, p


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
    except (OSError, shutil.Error) as e:  # a refused write outside the atomic writers: still one line
        found = refused_write(e)
        if found is None:
            raise
        print(f"error: cannot write {found[0]}: {found[1]}", file=sys.stderr)
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


def check_params() -> Params:
    """`load_config()` for a stage's entry point outside `run_stage` (one line and exit 1 on a bad value)."""
    try:
        return load_config()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
