"""Curating caption outputs into (image, caption) pairs: join on recordId, validate, de-duplicate,
split. Every input record ends up in a split or in the rejects list with its reason."""

from __future__ import annotations

import json
from pathlib import Path

from carsearch.core.io import read_jsonl
from carsearch.core.vocab import known
from carsearch.features.captioning import formats
from carsearch.features.captioning.parse import CaptionError, parse_caption
from carsearch.features.split import perceptual_groups, split_of

TRUNCATED_STOPS = {"max_tokens", "length"}


def read_outputs(out_files: list[Path]) -> tuple[dict[str, dict], list[dict], dict[str, str]]:
    """recordId -> output line; rejects for malformed lines whose recordId cannot be read (named
    by file:line); and recordId -> reason for malformed/truncated lines whose recordId can."""
    outputs, rejects, problems = {}, [], {}
    for path in out_files:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    rec = formats.parse_output_line(line, where)
                except formats.FormatError as e:
                    m = formats._RID.search(line)
                    if m:
                        problems[m.group(1)] = f"bad output line: {e}"
                    else:
                        rejects.append({"id": None, "where": where, "reason": f"bad output line: {e}"})
                    continue
                outputs[rec["recordId"]] = rec
    return outputs, rejects, problems


def load_jobs(captions_dir: Path) -> dict[str, dict]:
    """input file name -> Bedrock job summary (jobs.json of the bedrock backend), if any."""
    p = Path(captions_dir) / "jobs.json"
    if not p.is_file():
        return {}
    return {j["file"]: j for j in json.loads(p.read_text())}


def _answer_problem(model_output: dict) -> str | None:
    stop = formats.stop_reason(model_output)
    if stop in formats.REFUSAL_STOPS:
        return f"model refused (stop reason {stop})"
    if stop in TRUNCATED_STOPS:
        return f"answer cut off at the token limit (stop reason {stop}; raise caption.max_tokens)"
    return None


def curate(
    input_files: list[Path],
    output_files: list[Path],
    manifest: dict[str, dict],
    root: Path,
    cfg: dict,
    seed: int,
    jobs: dict[str, dict] | None = None,
):
    """Returns (pairs by split, rejects). `manifest` maps image id -> manifest row; `jobs` (input
    file name -> job summary) explains records missing from a job that did not complete."""
    outputs, rejects, problems = read_outputs(output_files)
    jobs = jobs or {}
    requested = [(rec["recordId"], f.name) for f in input_files for rec in read_jsonl(f)]
    pairs = []
    for rid, fname in requested:
        row = manifest.get(rid)
        if row is None:
            rejects.append({"id": rid, "reason": "recordId not in the ingest manifest"})
            outputs.pop(rid, None)
            continue
        out = outputs.pop(rid, None)
        if out is None:
            reason = problems.pop(rid, None)
            if reason is None:
                reason = f"no output record (missing from {fname}.out)"
                job = jobs.get(fname)
                if job and job.get("status") not in ("Completed", "PartiallyCompleted"):
                    reason += f": job {job.get('jobName')} {job.get('status')}" + (
                        f" ({job['message']})" if job.get("message") else ""
                    )
            rejects.append({"id": rid, "path": row["path"], "reason": reason})
            continue
        if "error" in out:
            err = out["error"] or {}
            rejects.append(
                {
                    "id": rid,
                    "path": row["path"],
                    "reason": f"model error {err.get('errorCode')}: {err.get('errorMessage')}",
                }
            )
            continue
        mo = out.get("modelOutput")
        problem = _answer_problem(mo)
        try:
            text = formats.response_text(mo)
            if problem and problem.startswith("model refused"):
                raise CaptionError(f"{problem}: {text.strip()[:80]!r}")
            cap = parse_caption(text)
        except (CaptionError, formats.FormatError, AttributeError, TypeError) as e:
            msg = str(e) if problem is None or str(e).startswith("model refused") else f"{e} ({problem})"
            rejects.append({"id": rid, "path": row["path"], "reason": f"bad caption: {msg}"})
            continue
        attrs = cap.model_dump()
        missing = [k for k in cfg["require_fields"] if attrs.get(k) in (None, "", "unknown")]
        if missing:
            rejects.append({"id": rid, "path": row["path"], "reason": f"caption lacks {', '.join(missing)}"})
            continue
        caption = attrs.pop("caption")
        # the source's labels where it has them, else what the caption says; "unknown" is no label
        pairs.append(
            {
                "id": rid,
                "path": row["path"],
                "caption": caption,
                "attributes": attrs,
                "labels": known(row.get("labels")) or known(attrs),
            }
        )
    for rid in outputs:  # outputs nobody asked for
        rejects.append({"id": rid, "reason": "output record with no matching input record"})
    for rid, reason in problems.items():  # malformed lines of records nobody asked for
        rejects.append({"id": rid, "reason": reason})

    groups = perceptual_groups({p["id"]: root / p["path"] for p in pairs}, cfg["near_duplicate_max_distance"])
    by_split: dict[str, list[dict]] = {s: [] for s in cfg["splits"]}
    for p in pairs:
        rep = groups[p["id"]]
        if rep != p["id"]:
            rejects.append({"id": p["id"], "path": p["path"], "reason": f"near-duplicate of {rep}"})
            continue
        by_split[split_of(p["id"], seed, cfg["splits"])].append(p)
    return by_split, rejects
