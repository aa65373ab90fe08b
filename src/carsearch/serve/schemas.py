"""The JSON shapes of the search service (`/api/v1`): requests are validated here (bounded sizes,
known fields only), responses documented in the OpenAPI schema at `/docs`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# the attribute columns clients may filter and facet on (never raw SQL: values are escaped by query.build_where)
FILTER_COLUMNS = ("make", "model", "body_type", "color", "view", "scene", "split", "camera")
# ids are content hashes (16 hex) or source ids; anything else cannot name an indexed image
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_TEXT_CHARS = 1000
MAX_FILTER_VALUES = 20
MAX_VALUE_CHARS = 200

FilterValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_VALUE_CHARS)]
FilterValues = Annotated[list[FilterValue], Field(max_length=MAX_FILTER_VALUES)]
ImageId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class Filters(BaseModel):
    """Structured filters: a hit must have one of the listed values for every attribute given."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    make: FilterValues = []
    model: FilterValues = []
    body_type: FilterValues = []
    color: FilterValues = []
    view: FilterValues = []
    scene: FilterValues = []
    split: FilterValues = []
    camera: FilterValues = []

    @field_validator(*FILTER_COLUMNS)
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        for x in v:
            if not x.strip():
                raise ValueError("empty filter value")
            if any(ord(c) < 32 for c in x):
                raise ValueError("control character in filter value")
        return v

    def active(self) -> dict[str, list[str]]:
        return {c: getattr(self, c) for c in FILTER_COLUMNS if getattr(self, c)}


class SearchRequest(BaseModel):
    """What to search for: any of a text `q`, an image (uploaded, or `like` = the id of an indexed
    image) and a negative text `neg`, combined as w_text*t + w_image*i - w_neg*n (each embedding
    normalised, the sum renormalised)."""

    model_config = ConfigDict(extra="forbid")
    q: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]] = Field(
        None, description="text query, e.g. 'red pickup seen from behind'"
    )
    neg: Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]] = Field(
        None, description="negative text: steer away from it ('a taxi')"
    )
    like: Optional[ImageId] = Field(None, description="id of an indexed image: 'more like this'")
    w_text: float = Field(1.0, ge=0, le=10)
    w_image: float = Field(1.0, ge=0, le=10)
    w_neg: float = Field(0.5, ge=0, le=10)
    filters: Filters = Filters()
    offset: int = Field(0, ge=0, le=100_000)
    limit: Optional[int] = Field(None, ge=1, le=100_000, description="page size (capped at serve.max_page_size)")
    facets: bool = True
    after: Optional[Annotated[str, StringConstraints(max_length=64)]] = Field(
        None, description="only hits captured at or after this time (2026-01-02T10:00, a date, or unix seconds)"
    )
    before: Optional[Annotated[str, StringConstraints(max_length=64)]] = Field(
        None, description="only hits captured before this time"
    )
    sort: Literal["score", "time"] = Field("score", description="order of the page: best first, or earliest first")
    min_confidence: Optional[float] = Field(
        None, ge=0, le=1, description="only hits at least this likely to match the query (calibrated confidence)"
    )


class Match(BaseModel):
    """One reason a hit matched: its `attribute` has `value`, which the text query names (`text`),
    the query image has too (`image`), or the negative text names (`negative`: a conflict)."""

    model_config = ConfigDict(protected_namespaces=())
    attribute: str
    value: str
    source: Literal["text", "image", "negative"]


class SearchHit(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    rank: int
    id: str
    score: float
    confidence: Optional[float] = Field(
        None, description="probability that the hit matches the query (calibrated by evaluate; null: no calibration)"
    )
    confident: bool = Field(False, description="confidence >= the index's threshold (a confident match)")
    caption: str
    make: str = ""
    model: str = ""
    body_type: str = ""
    color: str = ""
    view: str = ""
    scene: str = ""
    split: str = ""
    camera: str = ""
    time: Optional[str] = Field(None, description="capture time (ISO 8601, UTC), where known")
    origin: str = Field("", description="the source file (the frame, for a vehicle)")
    file: str = Field("", description="the original's file name (a video frame: the video's)")
    folder: str = Field("", description="the original's folder (local path or s3:// prefix)")
    frame_id: str = Field("", description="the frame this vehicle is in (the image's own id for a whole image)")
    box: Optional[list[float]] = Field(None, description="the vehicle's box in its frame: x1, y1, x2, y2 (pixels)")
    box_class: str = ""
    frame_url: Optional[str] = Field(None, description="the whole frame of a vehicle (its box drawn by the page)")
    track: Optional[dict[str, Any]] = Field(
        None, description="a video vehicle: its track id, first/last seen and member boxes (frame_id, box, time)"
    )
    image_url: str
    thumb_url: str
    why: list[Match] = []


class FacetValue(BaseModel):
    value: str
    count: int


class SearchResponse(BaseModel):
    query: dict[str, Any]
    offset: int
    limit: int
    candidates: int = Field(
        description="hits considered for facets and paging (the top serve.facet_candidates, filtered)"
    )
    has_more: bool
    confident: Optional[int] = Field(
        None, description="how many of the candidates are confident matches (null: no calibration for this query kind)"
    )
    confidence_threshold: Optional[float] = Field(
        None,
        description="the confidence a confident match reaches (null: no calibration, or no confidence level "
        "reached confidence_target on held-out queries, so no hit is confident)",
    )
    confidence_target: Optional[float] = Field(
        None,
        description="the precision confident matches reach on held-out queries (eval.calibration.target_precision)",
    )
    confidence_kind: Optional[str] = Field(
        None,
        description="the query's kind (text, image, text+image, negative): each kind has its own calibration",
    )
    confidence_note: Optional[str] = Field(
        None, description="why this kind of query shows no confidence (null: it does)"
    )
    hits: list[SearchHit]
    facets: dict[str, list[FacetValue]]
    facet_scope: str
    index_version: Optional[str]
    took_ms: float


class Info(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    rows: int
    model: Optional[str] = Field(description="finetuned or base: which model the promotion gate picked")
    model_ref: Optional[str]
    content_hash: Optional[str]
    registered_model: Optional[dict[str, Any]]
    promotion: Optional[dict[str, Any]]
    index_version: Optional[str]
    built_at: Optional[str] = Field(description="UTC time the index version was published (ISO 8601)")
    corpus: Optional[str]
    metric: Optional[str]
    search: Optional[str]
    filter_columns: list[str]
    limits: dict[str, int]


class Health(BaseModel):
    status: str = Field(description="ready: the model is loaded and queries answer at full speed; starting: not yet")
    index_version: Optional[str]
    rows: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
