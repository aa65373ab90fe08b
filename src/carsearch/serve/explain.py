"""Why a hit matched: which of its attributes the text query names (synonyms mapped, so "behind"
matches view=rear), the query image shares (more like this), or the negative text names."""

from __future__ import annotations

import re

from carsearch.core.vocab import SYNONYMS

WHY_ATTRS = ("color", "body_type", "view", "make", "model", "scene")


def _synonyms() -> list[tuple[re.Pattern, str]]:

    pairs = sorted(SYNONYMS.items(), key=lambda kv: -len(kv[0]))
    return [(re.compile(rf"(?<![\w-]){re.escape(k)}(?![\w-])"), v) for k, v in pairs]


_SYN = _synonyms()


def canon(text: str) -> str:
    t = " " + " ".join(text.lower().split()) + " "
    for pat, v in _SYN:
        t = pat.sub(v, t)
    return t


def _names(text: str, value: str) -> bool:
    v = value.strip().lower()
    return bool(v) and re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", text) is not None


def why(row: dict, q: str | None, neg: str | None, ref: dict | None, canonical: bool = False) -> list[dict]:
    """Which of the hit's attributes the query names: words of the text (synonyms mapped, so
    "behind" matches view=rear), the attributes of the query image (more like this), and the
    negative text (a conflict). `canonical=True`: q and neg are already `canon`ed."""
    out = []
    qt, nt = ((canon(q) if q else None), (canon(neg) if neg else None)) if not canonical else (q, neg)
    for a in WHY_ATTRS:
        v = str(row.get(a) or "")
        if not v:
            continue
        if qt and _names(qt, v):
            out.append({"attribute": a, "value": v, "source": "text"})
        elif ref and str(ref.get(a) or "").lower() == v.lower():
            out.append({"attribute": a, "value": v, "source": "image"})
        if nt and _names(nt, v):
            out.append({"attribute": a, "value": v, "source": "negative"})
    return out
