"""`POST /api/v1/judgments`: the request body and how it becomes a stored judgment (the route in
serve.app is a few lines; the token gate of serve.guards covers it like every /api/ route)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from carsearch.feedback import store
from carsearch.feedback.record import ID, MAX_TEXT, Hit, Judgment, Query, parse_verdict


class JudgmentRequest(BaseModel):
    """The query as the search request gave it (q, like, an uploaded image's sha256, neg,
    filters), the judged hit (its id and rank) and the verdict: ✓/✗, y/n, +/-, or a boolean."""

    model_config = ConfigDict(extra="forbid")
    q: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT)]] = None
    like: Optional[ID] = None
    image_sha: Optional[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16,64}$")]] = None
    neg: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT)]] = None
    filters: dict[str, list[Annotated[str, StringConstraints(max_length=200)]]] = {}
    hit_id: ID
    rank: Annotated[int, Field(ge=1, le=100_000)]
    verdict: Union[bool, Annotated[str, StringConstraints(max_length=8)]]
    source: Optional[str] = Field(None, pattern="^(api|page)$")

    def query(self) -> Query:
        """The query judged: an image (like / upload) wins over text, as in the search it came from."""
        text = " ".join(self.q.split()) if self.q and self.q.strip() else None
        if self.like:
            kind = "image"
        elif self.image_sha:
            kind = "upload"
        elif text:
            kind = "text"
        else:
            raise ValueError("a judgment needs the query it judges: q, like or image_sha")
        return Query(
            kind=kind, text=text, image_id=self.like, image_sha=self.image_sha, neg=self.neg, filters=self.filters
        )


def record(req: JudgmentRequest, row: dict, meta: dict, path: Path) -> dict:
    """Store the judgment of `row` (the hit's index row) for the request's query; returns it."""
    j = Judgment.make(
        req.query(),
        Hit(id=row["id"], rank=req.rank, path=row.get("path") or None, box=row.get("box")),
        parse_verdict(req.verdict),
        index_version=meta.get("version"),
        model_hash=meta.get("content_hash"),
        source=req.source or "api",
    )
    store.append(path, j)
    return j.model_dump()
