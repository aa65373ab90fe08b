"""Judged queries, grouped and split by query (the leakage rule of issue 34): a query's judgments
are all for evaluation or all for training, decided by a hash of its query id, so evaluate and
finetune_clip agree without sharing state, and a new judgment never moves an old query across."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from carsearch.feedback.record import Judgment

SALT = "carsearch-judgments-split"


def latest(judgments: list[Judgment]) -> "OrderedDict[str, dict[str, Judgment]]":
    """{query_id: {hit id: its latest judgment}} (a later verdict on the same hit replaces the earlier)."""
    out: OrderedDict[str, dict[str, Judgment]] = OrderedDict()
    for j in sorted(judgments, key=lambda j: j.time):
        out.setdefault(j.query_id, {})[j.hit.id] = j
    return out


def held_out(query_id: str, eval_fraction: float) -> bool:
    """Whether a judged query belongs to the evaluation part (a stable hash of its id)."""
    h = int.from_bytes(hashlib.sha256(f"{SALT}:{query_id}".encode()).digest()[:8], "big") / 2.0**64
    return h < eval_fraction


def split(judgments: list[Judgment], eval_fraction: float) -> dict[str, list[str]]:
    """{"eval": query ids held out, "train": the rest} (sorted): what evaluate and finetune_clip record."""
    ids = sorted({j.query_id for j in judgments})
    return {
        "eval": [q for q in ids if held_out(q, eval_fraction)],
        "train": [q for q in ids if not held_out(q, eval_fraction)],
    }
