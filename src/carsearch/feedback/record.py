"""One judgment: a person says a hit does (✓) or does not (✗) match the query that found it.

The query is identified by `query_id`, a content hash of what was searched for (kind, text, image
id, negative text, filters): the same query typed twice is the same query, so its judgments group
together in the eval set and the split between evaluation and training is by query."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

ID = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
MAX_TEXT = 1000
# what a person may type for a verdict: ✓ / ✗ and their ASCII aliases
VERDICTS = {"✓": True, "✔": True, "y": True, "yes": True, "+": True, "1": True, "true": True,
            "✗": False, "✘": False, "n": False, "no": False, "-": False, "0": False, "false": False}  # fmt: skip


def parse_verdict(word: str | bool) -> bool:
    """True for ✓ (y, yes, +), False for ✗ (n, no, -); a ValueError naming the word otherwise."""
    if isinstance(word, bool):
        return word
    v = VERDICTS.get(str(word).strip().lower())
    if v is None:
        raise ValueError(f"verdict {word!r} is not ✓ or ✗ (also y/n, yes/no, +/-)")
    return v


class Query(BaseModel):
    """What was searched for. kind: text (q), image (like = an indexed image's id), upload (an
    uploaded picture, known by the sha256 of its bytes: `image_sha`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["text", "image", "upload"]
    text: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT)]] = None
    image_id: Optional[ID] = None
    image_sha: Optional[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16,64}$")]] = None
    neg: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT)]] = None
    filters: dict[str, list[str]] = {}

    @field_validator("text", "neg")
    @classmethod
    def _squash(cls, v: str | None) -> str | None:
        return " ".join(v.split()) or None if v is not None else None

    @field_validator("filters")
    @classmethod
    def _canon_filters(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k: sorted(set(x)) for k, x in sorted(v.items()) if x}

    @model_validator(mode="after")
    def _has_its_query(self):
        need = {"text": "text", "image": "image_id", "upload": "image_sha"}[self.kind]
        if getattr(self, need) is None:
            raise ValueError(f"a {self.kind} query needs {need}")
        return self

    @property
    def id(self) -> str:
        """12 hex of the sha256 of the canonical query (its kind, text, image, negative, filters)."""
        canon = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]


class Hit(BaseModel):
    """The judged hit: its index row id, rank in the result list, and where its pixels are (the
    original's repo-relative path and the vehicle's box in it), so evaluate and finetune_clip can
    embed it again with a candidate model without the index."""

    model_config = ConfigDict(extra="forbid")
    id: ID
    rank: Annotated[int, Field(ge=1)]
    path: Optional[str] = None
    box: Optional[list[float]] = None


class Judgment(BaseModel):
    """One line of data/feedback/judgments.jsonl."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    query_id: str
    query: Query
    hit: Hit
    verdict: bool  # True: ✓ the hit matches the query; False: ✗ it does not
    index_version: Optional[str] = None
    model_hash: Optional[str] = None  # content hash of the model that embedded the index
    source: Literal["api", "cli", "page", "import"] = "api"
    time: float = Field(default_factory=time.time)

    @classmethod
    def make(cls, query: Query, hit: Hit, verdict, **kw) -> "Judgment":
        return cls(query_id=query.id, query=query, hit=hit, verdict=parse_verdict(verdict), **kw)

    def line(self) -> bytes:
        """The record as one JSON line (bytes, newline-terminated)."""
        return (self.model_dump_json() + "\n").encode()
