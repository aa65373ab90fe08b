"""`POST /api/v1/judgments` (issue 34): a ✓/✗ on a hit, appended to paths.judgments with the
query, the hit's row (path, box), the index version and the model hash. The token gate of
serve.guards covers it as every /api/ route."""

from __future__ import annotations

from carsearch.feedback.api import JudgmentRequest, record
from carsearch.feedback.store import judgments_file
from carsearch.serve.service import ApiError


def add_judgment_route(app, svc) -> None:
    judged_to = judgments_file(svc.root)

    @app.post("/api/v1/judgments", tags=["feedback"], status_code=201)
    def judge(req: JudgmentRequest):
        """Judge a hit ✓ (matches the query) or ✗: stored with the query, the hit, the index version
        and the model hash in the judgments file (an eval set and training signal of the next run)."""
        svc.refresh()
        row = svc.s.get_row(req.hit_id)
        if row is None:
            raise ApiError(404, "unknown_id", f"no indexed image with id {req.hit_id!r}")
        try:
            return record(req, row, svc.s.meta, judged_to)
        except ValueError as e:
            raise ApiError(400, "bad_judgment", str(e).splitlines()[0]) from None
