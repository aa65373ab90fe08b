"""Repeated failures, summarised: one line per kind of reason with the count, an example and the
fix, never one line per image (every item stays in its rejects file with its own reason)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable

# (pattern in the reason, what the user can do about it)
FIXES = (
    (
        "has no labels",
        "use caption.backend=bedrock|openai, add a labels.csv or label sub-folders, or index them "
        "without captions (index.corpus: docs/own-images.md)",
    ),
    ("near-duplicate", "expected for bursts of near-identical frames; raise/lower curate.near_duplicate_max_distance"),
    ("exact duplicate", "nothing to do: the first copy is kept"),
    ("caption lacks", "relax curate.require_fields, or use a captioner that states these fields"),
    ("model refused", "check the images and the prompt (caption.system_prompt)"),
    ("token limit", "raise caption.max_tokens"),
    ("not an image", "remove or convert these files"),
    ("corrupt or truncated", "re-export or re-download these files"),
    ("curate.boxes.min_side", "vehicles that small cannot be searched; lower curate.boxes.min_side to keep them"),
    (
        "does not parse",
        "fix the JSON at the line and column given (or re-export the file); its boxes are not used until then",
    ),
    (
        "but not coco",
        "export the boxes as COCO JSON (CVAT, Label Studio: Export > COCO), or move the file out of the folder",
    ),
    ("entry not used", "fix or remove that entry in the annotation file; the file's other entries are used"),
    ("box not used", "fix or remove that annotation in the file; the file's other boxes are used"),
    ("outside the", "fix the box coordinates (pixels of the frame, x1 y1 x2 y2) in the annotation file"),
    ("too small", "images under the minimum side cannot be embedded meaningfully"),
    ("too large", "raise data.max_pixels if these images are genuine"),
)

_VARIABLE = re.compile(r"\b[0-9a-f]{16}\b|\b\d+(?:\.\d+)?(?:x\d+)?\b|'[^']*'|\"[^\"]*\"|\S+/\S+")


def reason_kind(reason: str) -> str:
    """The reason with ids, numbers, quoted values and paths blanked, for grouping."""
    return _VARIABLE.sub("…", reason.split(" (")[0]).strip()


def fix_for(reason: str) -> str | None:
    low = reason.lower()
    return next((fix for pat, fix in FIXES if pat in low), None)


def summarise(rejects: Iterable[dict], noun: str = "image", where: str | None = None) -> list[str]:
    """`[{"path"|"id"|"where", "reason"}]` -> one line per kind of reason, most frequent first."""
    counts: Counter = Counter()
    example: dict[str, str] = {}
    first_reason: dict[str, str] = defaultdict(str)
    for r in rejects:
        kind = reason_kind(r["reason"])
        counts[kind] += 1
        example.setdefault(kind, str(r.get("path") or r.get("id") or r.get("where") or ""))
        first_reason[kind] = first_reason[kind] or r["reason"]
    lines = []
    for kind, n in counts.most_common():
        reason = first_reason[kind] if n == 1 else kind
        line = f"{n} {noun}{'s' if n != 1 else ''}: {reason}"
        if example[kind]:
            line += f" (e.g. {example[kind]})"
        fix = fix_for(first_reason[kind])
        if fix:
            line += f": {fix}"
        lines.append(line)
    if lines and where:
        lines.append(f"every one is listed with its reason in {where}")
    return lines
