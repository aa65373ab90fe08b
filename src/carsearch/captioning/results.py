"""What a captioning run produced, whatever the backend: its outputs reconciled with its inputs
(every record answered, failed or reported missing, none lost) and what the tokens cost
(conf/pricing.yaml)."""

from __future__ import annotations

from pathlib import Path

from carsearch.captioning import formats
from carsearch.core.io import read_jsonl, write_jsonl

OK_STATES = ("Completed", "PartiallyCompleted")  # Bedrock job states whose outputs are complete


def reconcile(input_files: list[Path], out_dir: Path, jobs_by_file: dict | None = None) -> dict:
    """Join `.jsonl.out` lines to the input records by recordId. Writes `failed_records.jsonl`
    (recordId, file, reason) for every input record without a usable output line and returns
    counts and token totals."""
    jobs_by_file = jobs_by_file or {}
    failed, n_records, ok, tokens_in, tokens_out, extra = [], 0, 0, 0, 0, []
    for path in input_files:
        ids = [r["recordId"] for r in read_jsonl(path)]
        n_records += len(ids)
        outs, problems = {}, {}
        out_path = out_dir / f"{path.name}.out"
        if out_path.is_file():
            with open(out_path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = formats.parse_output_line(line, f"{out_path.name}:{lineno}")
                    except formats.FormatError as e:
                        m = formats._RID.search(line)
                        if m:
                            problems[m.group(1)] = str(e)
                        else:
                            extra.append({"recordId": None, "file": out_path.name, "reason": str(e)})
                        continue
                    outs[rec["recordId"]] = rec
        job = jobs_by_file.get(path.name) or {}
        for rid in ids:
            rec = outs.pop(rid, None)
            if rec is None:
                why = problems.pop(rid, None)
                if why is None:
                    why = f"missing from {out_path.name}"
                    if job and job.get("status") not in OK_STATES:
                        why += (
                            f" (job {job.get('jobName')} {job.get('status')}"
                            + (f": {job['message']}" if job.get("message") else "")
                            + ")"
                        )
                failed.append({"recordId": rid, "file": path.name, "reason": why})
            elif "error" in rec:
                err = rec.get("error") or {}
                failed.append(
                    {
                        "recordId": rid,
                        "file": path.name,
                        "reason": f"model error {err.get('errorCode')}: {err.get('errorMessage')}",
                    }
                )
            else:
                ok += 1
                try:
                    i, o = formats.usage_tokens(rec["modelOutput"])
                except (AttributeError, TypeError, ValueError):
                    i = o = 0
                tokens_in += i
                tokens_out += o
        for rid in outs:
            extra.append(
                {"recordId": rid, "file": out_path.name, "reason": "output record with no matching input record"}
            )
    write_jsonl(out_dir / "failed_records.jsonl", failed + extra)
    return {
        "records": n_records,
        "succeeded": ok,
        "failed": len(failed),
        "unmatched_output_lines": len(extra),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "failed_records": failed + extra,
    }


# ------------------------------------------------------------------ cost
def load_prices(path: Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def price_for(prices: dict, model_id: str, mode: str = "batch") -> dict | None:
    """USD per 1,000 input/output tokens for a model id (longest matching key, region prefix ignored)."""
    table = prices.get(mode) or {}
    mid = formats.base_model_id(model_id)
    for key in sorted(table, key=len, reverse=True):
        if mid == key or mid.startswith(key):
            return table[key]
    return None


def estimate_cost(
    prices: dict, model_id: str, input_tokens: int, output_tokens: int, mode: str = "batch"
) -> float | None:
    p = price_for(prices, model_id, mode)
    if p is None:
        return None
    return round(input_tokens / 1000 * float(p["input"]) + output_tokens / 1000 * float(p["output"]), 6)
