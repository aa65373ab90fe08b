"""Curating caption outputs into (image, caption) pairs: join on recordId, validate, de-duplicate,
split. Every input record ends up in a split or in the rejects list with its reason."""

from __future__ import annotations

from pathlib import Path

from . import formats
from .captions import CaptionError, parse_caption
from .data import perceptual_groups, split_of
from .io import read_jsonl


def read_outputs(out_files: list[Path]) -> tuple[dict[str, dict], list[dict]]:
    """recordId -> output line, plus rejects for malformed lines (named by file:line)."""
    outputs, rejects = {}, []
    for path in out_files:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    import json

                    rec = json.loads(line)
                    rid = rec["recordId"]
                except (ValueError, KeyError, TypeError) as e:
                    rejects.append({"id": None, "where": f"{path.name}:{lineno}", "reason": f"malformed output line ({type(e).__name__})"})
                    continue
                outputs[rid] = rec
    return outputs, rejects


def curate(input_files: list[Path], output_files: list[Path], manifest: dict[str, dict], root: Path, cfg: dict, seed: int):
    """Returns (pairs by split, rejects). `manifest` maps image id -> manifest row."""
    outputs, rejects = read_outputs(output_files)
    requested = [rec["recordId"] for f in input_files for rec in read_jsonl(f)]
    pairs = []
    for rid in requested:
        row = manifest.get(rid)
        if row is None:
            rejects.append({"id": rid, "reason": "recordId not in the ingest manifest"})
            continue
        out = outputs.pop(rid, None)
        if out is None:
            rejects.append({"id": rid, "path": row["path"], "reason": "no output record (missing from .jsonl.out)"})
            continue
        if "error" in out:
            err = out["error"] or {}
            rejects.append({"id": rid, "path": row["path"], "reason": f"model error {err.get('errorCode')}: {err.get('errorMessage')}"})
            continue
        try:
            cap = parse_caption(formats.response_text(out.get("modelOutput")))
        except (CaptionError, formats.FormatError) as e:
            rejects.append({"id": rid, "path": row["path"], "reason": f"bad caption: {e}"})
            continue
        attrs = cap.model_dump()
        missing = [k for k in cfg.get("require_fields", []) if attrs.get(k) in (None, "", "unknown")]
        if missing:
            rejects.append({"id": rid, "path": row["path"], "reason": f"caption lacks {', '.join(missing)}"})
            continue
        caption = attrs.pop("caption")
        pairs.append({"id": rid, "path": row["path"], "caption": caption, "attributes": attrs, "labels": row.get("labels") or attrs})
    for rid in outputs:  # outputs nobody asked for
        rejects.append({"id": rid, "reason": "output record with no matching input record"})

    groups = perceptual_groups({p["id"]: root / p["path"] for p in pairs}, cfg.get("near_duplicate_max_distance", -1))
    by_split: dict[str, list[dict]] = {s: [] for s in cfg["splits"]}
    for p in pairs:
        rep = groups[p["id"]]
        if rep != p["id"]:
            rejects.append({"id": p["id"], "path": p["path"], "reason": f"near-duplicate of {rep}"})
            continue
        by_split[split_of(p["id"], seed, cfg["splits"])].append(p)
    return by_split, rejects
