"""The project's own import graph, read from the source (AST): every `import` of a carsearch module,
at module level or inside a function, with the package `__init__` files an import runs. Used by
tests/test_architecture.py to check the layering and that each DVC stage declares what it runs."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "carsearch"
PACKAGES = (PACKAGE, "carsearch_world")  # the product and the offline world beside it


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def all_modules() -> list[str]:
    out = []
    for p in sorted(q for pkg in PACKAGES for q in (SRC / pkg).rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def imports_of(name: str) -> tuple[tuple[str, str, int, bool], ...]:
    """(imported module, imported name or '', line, inside a function) for each project import."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []

    def visit(node, in_func: bool):
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] in PACKAGES:
                        out.append((a.name, "", child.lineno, f))
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    mod = ".".join(here[: len(here) - child.level + 1] + ([mod] if mod else []))
                if mod.split(".")[0] in PACKAGES:
                    for a in child.names:
                        out.append((mod, a.name, child.lineno, f))
            visit(child, f)

    visit(tree, False)
    return tuple(out)


@cache
def imported_modules(name: str) -> frozenset[str]:
    """The project modules `name` names in its imports (`from a.b import c`: a.b.c if that is a module)."""
    out = set()
    for mod, attr, _, _ in imports_of(name):
        target = f"{mod}.{attr}" if attr and module_file(f"{mod}.{attr}") else mod
        if module_file(target) is None:
            raise AssertionError(f"{name} imports {target}, which is not a module of the package")
        out.add(target)
    out.discard(name)
    return frozenset(out)


@cache
def direct_deps(name: str) -> frozenset[str]:
    """Modules that importing `name` runs directly: the imported modules and the packages above them."""
    deps = set(imported_modules(name))
    for m in imported_modules(name):
        deps.update(_parents(m))
    deps.discard(name)
    return frozenset(deps)


def closure(name: str) -> set[str]:
    """Every project module that running `name` can execute (transitively, imports in functions too)."""
    seen, todo = set(), [name, *_parents(name)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(direct_deps(m))
    return seen


def cycles() -> list[list[str]]:
    """Import cycles: strongly connected components of more than one module (Tarjan) in the graph of
    the imports modules write (a package's `__init__` re-exporting its own modules is not a cycle)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in imported_modules(v):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in all_modules():
        if m not in index:
            strong(m)
    return out
