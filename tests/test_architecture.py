"""The layout keeps its promises: imports run one way (import-linter contracts in pyproject.toml), no
import cycles, no private name borrowed from another module, imports inside functions only where
start-up time needs them, and every DVC stage declares every module it runs, so `dvc status`
catches a change to any of them (checked on the source, then with real `dvc status`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import importgraph as g

ROOT = Path(__file__).resolve().parents[1]

# Modules that import project code inside functions, and why: a cold `carsearch search` pays for
# every import (torch, transformers, lancedb are seconds each here), so these import on use.
LAZY_IMPORTS = {
    "carsearch.cli": "each command imports only what it runs (cold query start-up)",
    "carsearch.index.judged_cli": "registered in carsearch.cli: `carsearch judgments` imports its work only when run",
    "carsearch.index.sightings_cli": "`carsearch sightings`, registered in cli.py: it imports what it runs when it runs",
    "carsearch.cli_export": "`carsearch export` is registered in carsearch.cli: imported by every command",
    "carsearch.index.search": "params.yaml and the model's hash are read only when a query needs them",
    "carsearch.index.planning": "params.yaml (index.plate_search) is read only when a plate query needs it",
    "carsearch.index.encoder": "a cold query loads torch/transformers only when the NumPy towers cannot serve it",
    "carsearch.index.query": "a text query does not import the image reader (PIL, pillow-heif); an image query does",
    "carsearch.index.scale": "opening a table imports lancedb only when it is called",
    "carsearch.index.ray_engine": "Ray, and the model code in Ray's workers, load only with index.engine=ray",
    "carsearch.model.visionenc": "the NumPy tower stays importable without PIL preprocessing until an image comes",
    "carsearch.serve.app": "an app given a searcher (tests, embedding) never imports the index code",
    "carsearch.serve.service": "the service starts without torch; the model loads on the first query that needs it",
}


def stage_modules() -> dict[str, str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        cmd = st["cmd"].split()
        assert cmd[:2] == ["python", "-m"], f"stage {name}: cmd should be `python -m carsearch.stages.…`"
        out[name] = cmd[2]
    return out


def declared_deps(stage: str) -> list[Path]:
    st = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return [ROOT / d for d in st.get("deps", []) if isinstance(d, str) and d.startswith("src/")]


def runs_code(path: Path) -> bool:
    """An empty `__init__.py` runs nothing: a change that gives it code makes it count."""
    return bool(path.read_text().strip())


def test_import_linter_contracts_hold():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_import_cycles():
    assert g.cycles() == []


def test_no_private_name_imported_from_another_module():
    bad = [
        f"{m}:{line} imports {attr} from {mod}"
        for m in g.all_modules()
        for mod, attr, line, _ in g.imports_of(m)
        if attr.startswith("_") and mod != m
    ]
    assert bad == []


def test_imports_inside_functions_only_where_start_up_needs_them():
    bad = [
        f"{m}:{line} imports {mod} inside a function"
        for m in g.all_modules()
        if m not in LAZY_IMPORTS
        for mod, _, line, in_function in g.imports_of(m)
        if in_function
    ]
    assert bad == []


def test_graph_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The walker itself: an import in a function body and a relative import are both followed."""
    pkg = tmp_path / "carsearch"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from .b import x\n    return x\n")
    (pkg / "sub" / "b.py").write_text("from carsearch.sub import c\nx = 1\n")
    (pkg / "sub" / "c.py").write_text("")
    monkeypatch.setattr(g, "SRC", tmp_path)
    for fn in (g.imports_of, g.imported_modules, g.direct_deps):
        fn.cache_clear()
    try:
        assert g.closure("carsearch.sub.a") == {
            "carsearch",
            "carsearch.sub",
            "carsearch.sub.a",
            "carsearch.sub.b",
            "carsearch.sub.c",
        }
    finally:
        for fn in (g.imports_of, g.imported_modules, g.direct_deps):
            fn.cache_clear()


@pytest.mark.parametrize("stage", list(stage_modules()))
def test_stage_deps_cover_every_module_it_runs(stage):
    module = stage_modules()[stage]
    deps = declared_deps(stage)
    missing = []
    for m in sorted(g.closure(module)):
        f = g.module_file(m)
        if runs_code(f) and not any(f == d or d in f.parents for d in deps):
            missing.append(str(f.relative_to(ROOT)))
    assert missing == [], f"dvc.yaml stage {stage}: add these to deps (or a folder above them): {missing}"


def test_stage_deps_name_only_existing_code():
    for stage in stage_modules():
        for d in declared_deps(stage):
            assert d.exists(), f"dvc.yaml stage {stage}: dep {d.relative_to(ROOT)} does not exist"


def _deepest_function_module(module: str) -> Path:
    """A module the stage runs that holds a function (not its entry point): what a reviewer would edit."""
    for m in sorted(g.closure(module), key=lambda m: (-m.count("."), m)):
        f = g.module_file(m)
        if m != module and "\ndef " in f.read_text():
            return f
    raise AssertionError(module)


@pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc not on PATH")
def test_dvc_status_sees_a_change_in_any_module_a_stage_runs(tmp_path):
    """The reviewer's experiment with real dvc: edit a helper module each stage runs (for curate_pairs
    the split function) and `dvc status` must name that file as a changed dep of that stage."""
    for item in ("dvc.yaml", "dvc.lock", "params.yaml", "conf", "src"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / item)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    edited = {name: _deepest_function_module(mod) for name, mod in stage_modules().items()}
    edited["curate_pairs"] = g.module_file("carsearch.curation.split")
    for f in set(edited.values()):
        copy = tmp_path / f.relative_to(ROOT)
        copy.write_text(copy.read_text() + "\n\ndef _reviewer_edit():\n    return 1\n")
    out = subprocess.run(["dvc", "status", "--json"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    for stage, f in edited.items():
        rel = str(f.relative_to(ROOT))
        changed = [
            p for entry in status.get(stage, []) if isinstance(entry, dict) for p in entry.get("changed deps", {})
        ]
        assert any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in changed), (
            f"stage {stage}: editing {rel} is not seen by dvc status ({status.get(stage)})"
        )


def test_search_api_import_path_kept():
    out = subprocess.run(
        [sys.executable, "-c", "from carsearch.search import CarSearch; print(CarSearch.__module__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "carsearch.index.search"


def test_no_module_over_350_lines_without_a_reason():
    import ast

    long = []
    for m in g.all_modules():
        f = g.module_file(m)
        text = f.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > 360 and "350 lines" not in doc:
            long.append(f"{f.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert long == [], "split these, or say in the module docstring why they stay one piece"


def test_pyproject_ships_every_package_and_the_emulators_beside_the_product():
    """`src/carsearch/` is what users import; the emulators are a sibling package (declared in
    pyproject, so an install has them for the tests) that the product never imports (import-linter)."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(str(ROOT / find["where"][0]), include=find["include"]))
    code_dirs = {
        ".".join(p.parent.relative_to(ROOT / "src").parts)
        for p in (ROOT / "src").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert code_dirs <= found, f"not shipped (no __init__.py or not included): {sorted(code_dirs - found)}"
    assert {"carsearch_emulators", "carsearch.sources", "carsearch.captioning"} <= found
    assert not (ROOT / "src/carsearch/emulator").exists() and not (ROOT / "src/carsearch/features").exists()
