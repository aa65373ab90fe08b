"""`POST /api/v1/export` (issue 33): an evidence bundle, the zip `carsearch export` writes
(carsearch.index.export; docs/search/export.md), of chosen hit ids or of a search's hits (the same
search body as POST /api/v1/search, paged through up to `serve.export_max_hits`). The token gate of
serve.guards covers it as every /api/ route."""

from __future__ import annotations

import io
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from carsearch.index.export import export
from carsearch.serve.schemas import SearchRequest
from carsearch.serve.service import ApiError

router = APIRouter(tags=["export"])


class ExportRequest(BaseModel):
    """Which hits go in: `ids` (chosen on the page), or `search` (its hits, best first)."""

    model_config = ConfigDict(extra="forbid")
    ids: Optional[list[str]] = Field(None, description="ids of the hits to bundle (unknown ones are listed as rejects)")
    search: Optional[SearchRequest] = Field(None, description="bundle the hits of this search (as POST /api/v1/search)")
    margin_s: Optional[float] = Field(
        None, ge=0, le=600, description="seconds of video around a track (default serve.export_clip_margin_s)"
    )


def _search_hits(svc, req: SearchRequest, most: int) -> list[dict]:
    """The search's hits, page after page, up to `most` (each the API's hit: id, score, confidence)."""
    hits: list[dict] = []
    page = svc.page_size(None if req.limit is None else req.limit)
    while len(hits) < most:
        got = svc.search(req.model_copy(update={"offset": len(hits), "limit": page, "facets": False}))["hits"]
        hits += got[: most - len(hits)]
        if len(got) < page or len(hits) + page > int(svc.cfg["max_results"]):
            break
    return hits


def _bundle(svc, body: ExportRequest) -> tuple[bytes, dict]:
    most = int(svc.cfg["export_max_hits"])
    if (body.ids is None) == (body.search is None):
        raise ApiError(400, "bad_export", "give `ids` (chosen hits) or `search` (a search's hits), one of them")
    svc.refresh()
    found = _search_hits(svc, body.search, most) if body.search is not None else None
    ids = body.ids if found is None else [h["id"] for h in found]
    if len(ids) > most:
        raise ApiError(400, "bad_export", f"{len(ids)} ids: a bundle holds at most {most} (serve.export_max_hits)")
    margin = float(body.margin_s if body.margin_s is not None else svc.cfg["export_clip_margin_s"])
    query = {"ids": ids} if found is None else {"search": body.search.model_dump(exclude_none=True)}
    buf = io.BytesIO()
    res = export(svc.s, ids=ids, query=query, dest=buf, root=svc.root, margin_s=margin, scores=found)
    return buf.getvalue(), res


@router.post("/api/v1/export", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
async def export_bundle(body: ExportRequest, request: Request):
    """An evidence bundle (zip): each hit's original, its crop with the box drawn, a video track's
    clip (first seen − margin to last seen + margin), manifest.csv / manifest.json (ids, files,
    cameras, times, plates, confidences, the query, the index version) and rejects.csv."""
    svc = request.app.state.service
    data, res = await run_in_threadpool(_bundle, svc, body)
    headers = {
        "Content-Disposition": 'attachment; filename="evidence.zip"',
        "X-Export-Hits": str(res["hits"]),
        "X-Export-Rejects": str(len(res["rejects"])),
    }
    return Response(data, media_type="application/zip", headers=headers)
