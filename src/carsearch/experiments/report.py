"""The pull-request report, as Markdown: is the change in retrieval quality real, then the
`dvc metrics diff` (quality first, run time and cost in their own section) and the `dvc params diff`
against a base revision. The CI workflow (.github/workflows/pr-report.yml) posts exactly what
`carsearch report --base <branch>` prints locally.

Signal or noise: both revisions' per-query results (metrics/eval_queries.csv, written by
`evaluate`) are joined on the query, and a paired bootstrap over those queries gives a confidence
interval of the change of each headline metric of the fine-tuned model. A change is "significant"
when that interval excludes 0 and "within noise" when it does not. Without a per-query file in the
base revision, the report says so in one line and shows the plain diff."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from carsearch.core.errors import CarsearchError
from carsearch.core.paths import repo_root
from carsearch.evaluation.stats import DIRECTIONS, bootstrap_settings, paired_bootstrap, read_query_csv
from carsearch.experiments.headline import STAGE_FILES

QUERIES_FILE = "eval_queries.csv"
MODEL = "finetuned"  # the model whose change the report tests (the base model is the untrained reference)
RUNTIME = re.compile(
    r"seconds|_s$|_secs?$|time|duration|elapsed|wall|tokens|usd|cost|price|per_s(ec)?$|throughput", re.I
)
_DIR_NAMES = {"text_to_image": "text→image", "image_to_image": "image→image"}


class ReportError(CarsearchError, RuntimeError):
    pass


def _dvc() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def _run(args: list[str], cwd: Path) -> str:
    try:
        p = subprocess.run([_dvc(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ReportError("dvc not found on PATH") from None
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise ReportError(f"`dvc {' '.join(args)}` failed: {msg[-1] if msg else p.returncode}")
    return p.stdout.strip()


def _table_or_empty(md: str) -> str:
    """dvc prints a bare header when nothing changed: treat that as no change."""
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    return md if len(rows) > 2 else ""


def _read(cwd: Path, rev: str | None, path: str) -> str | None:
    """A file of revision `rev` (path relative to `cwd`), or of the workspace when rev is None."""
    if rev is None:
        f = cwd / path
        return f.read_text(encoding="utf-8") if f.is_file() else None
    p = subprocess.run(["git", "show", f"{rev}:./{path}"], cwd=cwd, capture_output=True, check=False)
    return p.stdout.decode("utf-8") if p.returncode == 0 else None


def _params(cwd: Path, rev: str | None) -> dict:
    try:
        return yaml.safe_load(_read(cwd, rev, "params.yaml") or "") or {}
    except yaml.YAMLError:
        return {}


def _queries_path(params: dict) -> str:
    d = str(((params.get("paths") or {}).get("metrics_dir")) or "metrics")
    return f"{d.rstrip('/')}/{QUERIES_FILE}"


def _bootstrap(head: dict, workspace: dict) -> dict:
    """`eval.bootstrap` of the head revision; of the workspace for a revision from before it existed."""
    for params in (head, workspace):
        try:
            return bootstrap_settings(params["eval"]["bootstrap"])
        except (KeyError, TypeError, ValueError):
            continue
    raise ReportError("eval.bootstrap: not in params.yaml of the head revision or of the workspace (run `dvc exp run`)")


# ------------------------------------------------------------------ signal or noise
def _metric_order(name: str) -> tuple:
    kind = 0 if name.startswith("recall@") else 1 if name.startswith("map@") else 2
    m = re.search(r"@(\d+)$", name)
    return kind, int(m.group(1)) if m else 0


def significance(old_csv: str, new_csv: str, n: int = 1000, seed: int = 0, confidence: float = 0.95) -> list[dict]:
    """Paired bootstrap of every headline metric of the fine-tuned model over the queries both
    per-query files share: [{direction, metric, queries, old, new, diff, ci, verdict, better, worse,
    old_queries, new_queries}] (old/new are means over the shared queries)."""
    old, new = read_query_csv(old_csv), read_query_csv(new_csv)
    out = []
    for d in DIRECTIONS:
        o, h = old.get(d, {}), new.get(d, {})
        common = [q for q in h if q in o]
        cols = sorted(
            {c[len(MODEL) + 1 :] for q in common[:1] for c in h[q] if c.startswith(f"{MODEL}_")}
            & {c[len(MODEL) + 1 :] for q in common[:1] for c in o[q] if c.startswith(f"{MODEL}_")},
            key=_metric_order,
        )
        for metric in cols:
            col = f"{MODEL}_{metric}"
            a = np.array([o[q].get(col, np.nan) for q in common])
            b = np.array([h[q].get(col, np.nan) for q in common])
            ok = ~(np.isnan(a) | np.isnan(b))
            res = paired_bootstrap(a[ok], b[ok], n=n, seed=seed, confidence=confidence)
            out.append({"direction": d, "metric": metric, "old_queries": len(o), "new_queries": len(h), **res})
    return out


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def _significance_md(rows: list[dict], base: str, against: str, conf: float, n: int, seed: int) -> list[str]:
    pct = f"{conf * 100:g} %"
    lines = [
        f"| Metric ({MODEL} model) | `{base}` | {against} | Change | {pct} CI of change | queries better / worse | |",
        "|---|---|---|---|---|---|---|",
    ]
    marks = {"significant": "**significant**", "within noise": "within noise", "no change": "no change"}
    for r in rows:
        arrow = "" if r["verdict"] != "significant" else (" ▲" if r["diff"] > 0 else " ▼")
        lo, hi = r["ci"]
        lines.append(
            f"| {_DIR_NAMES.get(r['direction'], r['direction'])} {r['metric']} | {r['old']:.4f} | {r['new']:.4f} | "
            f"{_signed(r['diff'])} | [{_signed(lo)}, {_signed(hi)}] | {r['better']} / {r['worse']} | "
            f"{marks.get(r['verdict'], r['verdict'])}{arrow} |"
        )
    notes = []
    for d in dict.fromkeys(r["direction"] for r in rows):
        r = next(x for x in rows if x["direction"] == d)
        note = f"{r['queries']} {_DIR_NAMES.get(d, d)} queries"
        if r["queries"] != r["old_queries"] or r["queries"] != r["new_queries"]:
            note += f" (of {r['old_queries']} in `{base}` and {r['new_queries']} in {against}: the query set changed)"
        notes.append(note)
    lines += [
        "",
        f"Paired bootstrap over the queries both revisions ran ({'; '.join(notes)}), {n} resamples, "
        f"seed {seed}. **significant**: the {pct} interval of the mean per-query change excludes 0; "
        "within noise: it does not, so a different sample of test queries could show no change or the "
        "opposite one. Training noise (another seed or machine) is not in these intervals: see "
        'docs/REPRODUCIBILITY.md, "Reading a PR report".',
    ]
    return lines


# ------------------------------------------------------------------ plain diff, split
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.3g}"
    return str(v)


def _diff_tables(diff: dict, base: str, head_label: str) -> tuple[str, str]:
    """(quality table, run-time table) from `dvc metrics diff --json`."""
    quality, runtime = [], []
    for path, metrics in sorted(diff.items()):
        for name, d in sorted(metrics.items()):
            if name.startswith("provenance."):  # the machine and commit of the run, not a figure
                continue
            row = f"| {path} | {name} | {_fmt(d.get('old'))} | {_fmt(d.get('new'))} | {_fmt(d.get('diff'))} |"
            (runtime if RUNTIME.search(name.rsplit(".", 1)[-1]) else quality).append(row)
    head = [f"| Path | Metric | {base} | {head_label} | Change |", "|---|---|---|---|---|"]
    return ("\n".join(head + quality) if quality else ""), ("\n".join(head + runtime) if runtime else "")


def pr_report(
    base: str = "main",
    head: str | None = None,
    root: str | os.PathLike | None = None,
    title: str = "carsearch: pipeline report",
) -> str:
    """Markdown report of `head` (default: the workspace) against `base`: the paired significance
    of the retrieval metrics, the metrics diff (quality, then run time and cost) and the params diff."""
    cwd = Path(root) if root else None
    if cwd is None:
        cwd = repo_root()
    revs = [base] + ([head] if head else [])
    # every stage's full figures (not only the headline in metrics/summary.json, the declared metric)

    head_params = _params(cwd, head)
    mdir = str(((head_params.get("paths") or {}).get("metrics_dir")) or "metrics").rstrip("/")
    raw = _run(["metrics", "diff", *revs, "--json", "--targets", *(f"{mdir}/{f}" for f in STAGE_FILES)], cwd)
    diff = json.loads(raw) if raw.strip() else {}
    params = _table_or_empty(_run(["params", "diff", *revs, "--md"], cwd))
    against = f"`{head}`" if head else "this workspace"
    head_label = head or "workspace"

    bs = _bootstrap(head_params, _params(cwd, None))
    qhead = _queries_path(head_params)
    qbase = _queries_path(_params(cwd, base))
    old_csv, new_csv = _read(cwd, base, qbase), _read(cwd, head, qhead)

    out = [f"## {title}", "", f"{against} against `{base}`.", "", "### Retrieval quality: signal or noise", ""]
    rows = significance(old_csv, new_csv, bs["n"], bs["seed"], bs["confidence"]) if old_csv and new_csv else []
    if old_csv is None:
        out.append(f"`{base}` has no per-query results ({qbase}): no significance test, the plain diff follows.")
    elif new_csv is None:
        out.append(
            f"{against} has no per-query results ({qhead}; run `dvc repro`): no significance test, "
            "the plain diff follows."
        )
    elif not rows or all(r["queries"] == 0 for r in rows):
        out.append(
            f"`{base}` and {against} share no query (the test split changed): no significance test, "
            "the plain diff follows."
        )
    else:
        out += _significance_md([r for r in rows if r["queries"]], base, against, bs["confidence"], bs["n"], bs["seed"])
    quality, runtime = _diff_tables(diff, base, head_label)
    out += [
        "",
        "### Quality metrics (`dvc metrics diff`)",
        "",
        quality or "No quality metric changed.",
        "",
        "### Run time and cost",
        "",
        runtime or "No run-time figure changed.",
        "",
        "### Params (`dvc params diff`)",
        "",
        params or "No param changed.",
        "",
    ]
    return "\n".join(out)
