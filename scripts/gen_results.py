"""The docs site's Results page, built from metrics/*.json (see scripts/gen_docs.py): the figures
`dvc repro` wrote, each table naming its file and the commit that wrote that file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def committed(rel: str) -> str:
    """Which commit committed a metrics file (its message tells how the run went)."""
    line = _git("log", "-1", "--format=%h|%cs|%s", "--", rel)
    if not line:
        return "not committed (this workspace's own run)"
    h, date, subject = line.split("|", 2)
    return f"committed in `{h}` ({date}): {_md(subject)}"


# the data stages give the same bytes on every machine (docs/REPRODUCIBILITY.md): no machine to name
BIT_EXACT = ("metrics/ingest.json", "metrics/caption.json", "metrics/curate.json")


def ran_on(data: dict | None, rel: str = "") -> str:
    """The machine and commit a stage ran on (its file's `provenance`, carsearch.core.provenance)."""
    p = (data or {}).get("provenance") if isinstance(data, dict) else None
    if rel in BIT_EXACT:
        return "the same bytes on every machine (a bit-exact data stage: [Reproducibility](REPRODUCIBILITY.md))"
    if not isinstance(p, dict):
        return "machine and commit not recorded (written before stages recorded them)"
    m = p.get("machine") or {}
    ram = f", {m['ram_gib']:g} GiB" if m.get("ram_gib") is not None else ""
    load = f", load {m['load_1m']}" if m.get("load_1m") is not None else ""
    where = (
        f"{m.get('cpu') or 'unknown CPU'} ({m.get('cores') or '?'} cores{ram}), GPU: {m.get('gpu') or 'unknown'}{load}"
    )
    c = p.get("commit")
    what = f"commit `{c[:7]}`" + (" with uncommitted code changes" if p.get("dirty") else "") if c else "no git commit"
    return f"ran at {p.get('at') or '?'} on {_md(where)}, {what}"


def provenance(rel: str, data: dict | None = None) -> str:
    """One line under a table: its file, the machine and commit its stage ran on, the commit that committed it."""
    return f"`{rel}`: {ran_on(data, rel)}; {committed(rel)}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "—" if v is None else str(v)


def _ci(d: dict, key: str) -> str:
    ci = d.get(f"{key}_ci")
    return _fmt(d.get(key)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def headline_files(summ: dict) -> list[str]:
    """The stage files the headline's figures come from (carsearch.experiments.headline), in order."""
    try:
        from carsearch.experiments.headline import HEADLINE
    except ImportError:  # the package not importable: every stage file that could feed it
        return ["eval.json", "train.json", "caption.json", "index.json"]
    cols = {c: f for c, f, _ in HEADLINE}
    files = [cols.get(k, "eval.json" if k.startswith("set_") else None) for k in summ]
    return list(dict.fromkeys(f for f in files if f))


def results_page(metrics_dir: Path | None = None) -> str:
    """The page, from `metrics_dir` (default: the repo's metrics/)."""
    m = {p.stem: json.loads(p.read_text()) for p in sorted(Path(metrics_dir or ROOT / "metrics").glob("*.json"))}
    ev, tr, ix, summ = m.get("eval", {}), m.get("train", {}), m.get("index", {}), m.get("summary", {})
    lines = [
        "# Results",
        "",
        "Built from `metrics/*.json` when the site is built (`scripts/gen_docs.py`), so these figures are",
        "the ones `dvc repro` wrote and cannot drift from them. Each table names the file it comes from,",
        "the machine and commit its stage ran on (CPU, cores, memory, GPU, load when it started: the",
        "`provenance` the stage wrote into it), and the commit that committed it. Your own run:",
        "`make repro`, then `dvc metrics show` (or rebuild this site).",
        "",
        "## Headline (`metrics/summary.json`)",
        "",
        f"`metrics/summary.json`: {committed('metrics/summary.json')}. Its figures come from the stages' files:",
        "",
        *[f"- {provenance(f'metrics/{n}', m.get(n[:-5]))}" for n in headline_files(summ)],
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in summ.items()]
    lines += ["", "## Retrieval (`metrics/eval.json`)", "", provenance("metrics/eval.json", ev), ""]
    lines += [
        "Test split, 95 % bootstrap intervals over the queries.",
        "",
        "| model | text→image R@5 | text→image mAP@10 | image→image R@5 | vehicle R@5 | vehicle MRR |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("base", "finetuned"):
        e = ev.get(name, {})
        t2i, i2i, veh = e.get("text_to_image", {}), e.get("image_to_image", {}), e.get("vehicles", {})
        veh = veh.get("vehicle", {}) if isinstance(veh, dict) else {}
        lines.append(
            f"| {name} | {_ci(t2i, 'recall@5')} | {_fmt(t2i.get('map@10'))} | {_ci(i2i, 'recall@5')} | "
            f"{_fmt(veh.get('recall@5'))} | {_fmt(veh.get('mrr'))} |"
        )
    box = ev.get("box_recall")
    if isinstance(box, dict) and box:
        flat = {k: v for k, v in _flatten(box).items() if not isinstance(v, (list, dict))}
        lines += ["", "Box recall at IoU >= 0.5 against the renderer's boxes (`box_recall`): "]
        lines += [", ".join(f"{k} {_fmt(v)}" for k, v in flat.items())]
    zs = {n: ev.get(n, {}).get("zero_shot", {}) for n in ("base", "finetuned")}
    if zs["base"]:
        lines += ["", "Zero-shot attribute accuracy:", "", "| attribute | base | fine-tuned |", "|---|---|---|"]
        for a, v in zs["base"].items():
            lines.append(f"| {a} | {_fmt(v)} | {_fmt(zs['finetuned'].get(a))} |")
    lines += [
        "",
        "Hit confidence, held out (out-of-fold over queries; [Hit confidence](search/confidence.md)):",
        "",
        "| model | source | queries | hits | match rate | ECE | threshold | confident precision | coverage | recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in ev.get("calibration", {}).items():
        for src, h in c.get("held_out", {}).items():
            lines.append(
                f"| {name} | {src} | {h.get('queries')} | {h.get('hits')} | {_fmt(h.get('base_rate'))} | "
                f"{_fmt(h.get('ece'))} | {_fmt(c.get('threshold'))} | {_fmt(h.get('confident_precision'))} | "
                f"{_fmt(h.get('confident_coverage'))} | {_fmt(h.get('confident_recall'))} |"
            )
    cal = ix.get("calibration", {})
    lines += ["", "## Index and hit confidence (`metrics/index.json`)", "", provenance("metrics/index.json", ix), ""]
    lines += [
        f"- rows: {_fmt(ix.get('rows'))}, vehicles: {_fmt(ix.get('vehicles'))}, model: `{ix.get('model')}`",
        f"- calibration: target precision {_fmt(cal.get('target_precision'))}, "
        f"threshold {_fmt(cal.get('threshold'))}, target reached: {cal.get('target_reached')}",
    ]
    lines += ["", "## Training (`metrics/train.json`)", "", provenance("metrics/train.json", tr), ""]
    lines += ["| figure | value |", "|---|---|"] + [
        f"| `{k}` | {_fmt(v)} |" for k, v in tr.items() if not isinstance(v, (dict, list))
    ]
    for stage in ("ingest", "curate", "caption"):
        if stage in m:
            lines += ["", f"## {stage} (`metrics/{stage}.json`)", "", provenance(f"metrics/{stage}.json", m[stage]), ""]
            lines += ["| figure | value |", "|---|---|"] + [
                f"| `{k}` | {_fmt(v)} |" for k, v in m[stage].items() if not isinstance(v, (dict, list))
            ]
    return "\n".join(lines) + "\n"
