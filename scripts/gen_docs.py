"""The docs site's generated pages, made from the code at build time (never committed, so never stale).

- reference/config.md: every key of params.yaml: its default (conf/ composed as DVC composes it),
  its type and range (the pydantic schema, carsearch.core.schema) and its meaning (conf/'s comment);
  then what each other option of a group (`-S caption=bedrock_claude`) changes.
- reference/cli.md: the `carsearch` command's own help (typer's `utils docs`).
- reference/api.md + reference/openapi.json: the service's OpenAPI (FastAPI's `app.openapi()`).
- results.md: the figures of metrics/*.json, with the commit that wrote them (scripts/gen_results.py).

Used as an mkdocs hook (`hooks:` in mkdocs.yml: `mkdocs build` adds the pages), or run alone:
`python scripts/gen_docs.py OUT_DIR` writes them into OUT_DIR to read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # gen_results beside this file (mkdocs loads hooks by path)

from gen_results import results_page  # noqa: E402

GROUPS = ("paths", "data", "caption", "curate", "model", "train", "eval", "detect", "index", "serve")


# ------------------------------------------------------------------ conf/ comments
def conf_comments(path: Path) -> dict[str, str]:
    """{dotted key: its comment} of one conf file: the comment block just above a key and the
    comment after it on its line (plus the comment-only lines that continue it, aligned under it)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    shared: tuple[int, str] | None = None  # a block comment over a run of plain keys (`seed`, `lr`, ...)
    last_key, last_col = None, -1
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped:
            above, last_col, shared = [], -1, None
            continue
        if stripped.startswith("#"):
            col = len(raw) - len(raw.lstrip())
            if last_key and col == last_col:  # continues the trailing comment of the key above
                out[last_key] += " " + stripped.lstrip("#").strip()
            else:
                above.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*)\s*:(.*)$", raw)
        if not m or stripped.startswith("- "):
            above, last_col = [], -1
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        dotted = ".".join(k for _, k in stack)
        value, hash_, trailing = _split_comment(rest)
        interp = re.fullmatch(r"\s*\$\{(\w+)\}\s*", value)
        if interp and not trailing.strip():
            trailing = f"the top-level `{interp.group(1)}`"
        if above and not trailing.strip():
            shared = (indent, " ".join(above))
        elif above or trailing.strip() or (shared and shared[0] != indent):
            shared = None
        text = " ".join(above + ([trailing.strip()] if trailing.strip() else []))
        if not text and shared and shared[0] == indent and value.strip():
            text = shared[1]
        if text and key != "defaults":
            out[dotted] = text
        last_key = dotted if key != "defaults" and dotted in out else None
        last_col = len(raw) - len(trailing) - 1 if hash_ else -1
        above = []
    return out


def _split_comment(rest: str) -> tuple[str, str, str]:
    """`value  # comment` -> (value, '#', comment), ignoring a # inside quotes."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i], "#", rest[i + 1 :]
    return rest, "", ""


def _compose(overrides: list[str] | None = None) -> dict:
    """conf/ composed exactly as `dvc exp run -S ...` does (DVC's hydra helper), as a dict."""
    import tempfile

    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(ROOT / "conf"), None, "config", str(ROOT), overrides or [])
        return yaml.safe_load(out.read_text())


def _flatten(d: dict, prefix: str = "", types: dict | None = None, base: str = "") -> dict[str, object]:
    """Dotted keys of nested sections; a mapping-typed key (`curate.splits`) stays one value."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not (types or {}).get(base + key, "").startswith("mapping"):
            out.update(_flatten(v, key + ".", types, base))
        else:
            out[key] = v
    return out


def _raw_defaults() -> dict[str, str]:
    """The default option of each group (conf/config.yaml's defaults list)."""
    conf = yaml.safe_load((ROOT / "conf/config.yaml").read_text())
    return {k: v for item in conf["defaults"] if isinstance(item, dict) for k, v in item.items()}


def _group_comments(group: str, option: str) -> dict[str, str]:
    """Comments of a group's keys: its chosen option's file first, then the files it builds on."""
    folder = ROOT / "conf" / group
    files = [folder / f"{option}.yaml"] + sorted(p for p in folder.glob("*.yaml") if p.stem != option)
    out: dict[str, str] = {}
    for f in files:
        for k, v in conf_comments(f).items():
            out.setdefault(k, v)
    return out


# ------------------------------------------------------------------ schema types
def _type_of(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].split("/")[-1]
        return _type_of(defs[name], defs) if name in defs else f"`{name}`"
    if "anyOf" in prop or "oneOf" in prop:
        alts = [_type_of(p, defs) for p in prop.get("anyOf", prop.get("oneOf"))]
        return " or ".join(dict.fromkeys(alts))
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    t = prop.get("type")
    if t == "array":
        return "list of " + (_type_of(prop["items"], defs) if "items" in prop else "values")
    if t == "object":
        if "properties" in prop:
            return "section"
        extra = prop.get("additionalProperties")
        return "mapping" + (f" of {_type_of(extra, defs)}" if isinstance(extra, dict) and extra else "")
    bounds = []
    for key, sym in (
        ("minimum", ">="),
        ("ge", ">="),
        ("exclusiveMinimum", ">"),
        ("gt", ">"),
        ("maximum", "<="),
        ("le", "<="),
        ("exclusiveMaximum", "<"),
        ("lt", "<"),
    ):
        if key in prop:
            bounds.append(f"{sym} {prop[key]:g}")
    if "minLength" in prop and t == "string":
        bounds.append("not empty")
    if "pattern" in prop:
        bounds.append(f"matching `{prop['pattern']}`")
    name = {"integer": "integer", "number": "number", "string": "text", "boolean": "true/false", "null": "null"}.get(
        t, t or "any"
    )
    return name + (f" ({', '.join(bounds)})" if bounds else "")


def _schema_types() -> dict[str, str]:
    """{dotted key: type and range} from the pydantic schema of params.yaml."""
    from carsearch.core.schema import Params

    schema = Params.model_json_schema()
    defs = schema.get("$defs", {})
    out: dict[str, str] = {}

    def walk(props: dict, prefix: str) -> None:
        for k, p in props.items():
            target = defs[p["$ref"].split("/")[-1]] if "$ref" in p else p
            if "properties" in target:
                walk(target["properties"], f"{prefix}{k}.")
            elif "oneOf" in target or ("anyOf" in target and all("$ref" in a for a in target["anyOf"])):
                for alt in target.get("oneOf", target.get("anyOf")):
                    walk(defs[alt["$ref"].split("/")[-1]].get("properties", {}), f"{prefix}{k}.")
            else:
                out.setdefault(f"{prefix}{k}", _type_of(p, defs))

    walk(schema["properties"], "")
    return out


def _cell(v: object) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return "`" + s.replace("|", "\\|") + "`" if s != "" else '`""`'


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def config_reference() -> str:
    params = _compose()
    types = _schema_types()
    chosen = _raw_defaults()
    lines = [
        "# Configuration reference",
        "",
        "Generated from the code when the site is built (`scripts/gen_docs.py`): every key of",
        "`params.yaml` as DVC composes it from `conf/` (the only home of defaults), its type and range",
        "from the pydantic schema that checks it before any stage runs (`carsearch.core.schema`), and",
        "its meaning from the comment beside it in `conf/`. Change a key for one experiment with",
        "`dvc exp run -S key=value`; change a default in `conf/`.",
        "",
    ]
    top = {k: v for k, v in params.items() if k not in GROUPS}
    sections = [("top level", "conf/config.yaml", top, conf_comments(ROOT / "conf/config.yaml"), "")]
    for g in GROUPS:
        sections.append((f"`{g}`", f"conf/{g}/{chosen[g]}.yaml", params[g], _group_comments(g, chosen[g]), f"{g}."))
    missing = 0
    for title, src, values, comments, prefix in sections:
        group = prefix.rstrip(".")
        lines += [f"## {title}", "", f"Default from `{src}`" + (f" (`{group}={chosen[group]}`)." if group else "."), ""]
        lines += ["| key | default | type | meaning |", "|---|---|---|---|"]
        for key, value in _flatten(values, types=types, base=prefix).items():
            meaning = comments.get(key) or comments.get(key.split(".")[-1]) or ""
            if not meaning:  # a parent's comment covers its children (`lock: none | all | N`)
                parent = key.rsplit(".", 1)[0] if "." in key else ""
                meaning = comments.get(parent, "") if parent else ""
            missing += not meaning
            lines.append(
                f"| `{prefix}{key}` | {_cell(value)} | {_md(types.get(prefix + key, ''))} | {_md(meaning) or '—'} |"
            )
        lines.append("")
        if group:
            lines += _options(group, chosen[group], params[group])
    return "\n".join(lines) + "\n"


def _options(group: str, default: str, base: dict) -> list[str]:
    others = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))
    others = [o for o in others if o != default]
    if not others:
        return []
    out = [f"Other options of `{group}` and the keys they change:", ""]
    flat_base = _flatten(base)
    for opt in others:
        flat = _flatten(_compose([f"{group}={opt}"])[group])
        changed = {k: v for k, v in flat.items() if flat_base.get(k, object()) != v}
        doc = _first_comment(ROOT / "conf" / group / f"{opt}.yaml")
        body = ", ".join(f"`{group}.{k}={json.dumps(v)}`" for k, v in changed.items()) or "nothing else"
        out.append(f"- `-S {group}={opt}`" + (f": {_md(doc)}" if doc else "") + f" Sets {body}.")
    return out + [""]


def _first_comment(path: Path) -> str:
    lines = []
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if s.startswith("#"):
            lines.append(s.lstrip("#").strip())
        elif s and lines:
            break
    return " ".join(lines)


# ------------------------------------------------------------------ CLI
def cli_reference() -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env["COLUMNS"] = "100"
    out = subprocess.run(
        [sys.executable, "-m", "typer", "carsearch.cli", "utils", "docs", "--name", "carsearch"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    body = out.split("\n", 1)[1] if out.startswith("# ") else out
    return (
        "# Command-line reference\n\nGenerated from the `carsearch` command's own help when the site is built "
        "(`carsearch --help`, `carsearch search --help`, ...).\n\n" + body.replace("\n## ", "\n## ")
    )


# ------------------------------------------------------------------ API
def openapi_spec() -> dict:
    """The service's OpenAPI, from the FastAPI app itself (no index needed: the schema is the routes')."""
    from carsearch.core.schema import validate_params
    from carsearch.serve.app import create_app

    settings = validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()), root=ROOT).serve
    app = create_app(
        searcher=SimpleNamespace(root=ROOT, index_dir=None, encoder=SimpleNamespace()), settings=settings, root=ROOT
    )
    return app.openapi()


def api_reference(spec: dict) -> str:
    lines = [
        "# HTTP API reference",
        "",
        "Generated from the service's OpenAPI when the site is built (`app.openapi()` of",
        "`carsearch.serve.app`). A running `carsearch serve` serves the same document at",
        "`/openapi.json` and an interactive page at `/docs` (offline: no CDN). The static copy:",
        "[openapi.json](openapi.json). How to use it: [Search › HTTP API](../search/api.md).",
        "",
        "| method | path | what |",
        "|---|---|---|",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            what = (op.get("description") or op.get("summary") or "").strip().split("\n")[0]
            lines.append(f"| `{method.upper()}` | `{path}` | {_md(what)} |")
    lines += ["", "## Schemas", ""]
    for name, sch in sorted(spec.get("components", {}).get("schemas", {}).items()):
        props = sch.get("properties", {})
        if not props:
            continue
        lines += [f"### {name}", "", _md(sch.get("description", "").strip()), ""]
        lines += ["| field | type | description |", "|---|---|---|"]
        for k, p in props.items():
            lines.append(f"| `{k}` | {_md(_type_of(p, {}))} | {_md(p.get('description', '').strip())} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ all pages
def pages() -> dict[str, str]:
    spec = openapi_spec()
    return {
        "reference/config.md": config_reference(),
        "reference/cli.md": cli_reference(),
        "reference/api.md": api_reference(spec),
        "reference/openapi.json": json.dumps(spec, indent=2) + "\n",
        "results.md": results_page(),
    }


def on_files(files, config):  # mkdocs hook: add the generated pages to the site
    from mkdocs.structure.files import File

    for uri, content in pages().items():
        files.append(File.generated(config, uri, content=content))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-generated")
    for uri, content in pages().items():
        (out / uri).parent.mkdir(parents=True, exist_ok=True)
        (out / uri).write_text(content)
        print(out / uri)
