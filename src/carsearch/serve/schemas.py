"""The JSON shapes of the search service (`/api/v1`): requests are validated here (bounded sizes,
known fields only), responses documented in the OpenAPI schema at `/docs`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator

from carsearch.core.columns import ROW, Row

# ids are content hashes (16 hex) or source ids; anything else cannot name an indexed image
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
MAX_TEXT_CHARS = 1000
MAX_FILTER_VALUES = 20
MAX_VALUE_CHARS = 200

FilterValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_VALUE_CHARS)]
FilterValues = Annotated[list[FilterValue], Field(max_length=MAX_FILTER_VALUES)]
ImageId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Text = Optional[Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]]
When = Optional[Annotated[str, StringConstraints(max_length=64)]]


class FilterBase(BaseModel):
    """Structured filters: a hit must have one of the listed values for every attribute given (the
    filter columns of carsearch.core.columns; never raw SQL: values are escaped by query.build_where)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @field_validator("*")
    @classmethod
    def _not_blank(cls, v: list[str]) -> list[str]:
        if not isinstance(v, list):  # a range filter's number (min_speed, max_speed)
            return v
        for x in v:
            if not x.strip():
                raise ValueError("empty filter value")
            if any(ord(c) < 32 for c in x):
                raise ValueError("control character in filter value")
        return v

    def active(self) -> dict[str, list[str]]:
        return {c: v for c, v in self if v is not None and v != []}


def filter_fields(row: Row = ROW) -> dict:
    """One `list[str]` field per filter column (`?color=red&color=blue`, `filters.color`, a form field)
    and one number per range filter (`?min_speed=30`)."""
    fields = {c.name: (FilterValues, Field([], description=c.help)) for c in row.columns if c.filter}
    for key, (col, op) in row.ranges.items():  # `?min_speed=30`, `filters.max_speed`
        fields[key] = (Optional[float], Field(None, allow_inf_nan=False, description=f"only hits with {col} {op} this"))
    return fields


class SearchParams(BaseModel):
    """What to search for: any of a text `q`, an image (uploaded, or `like` = the id of an indexed
    image) and a negative text `neg`, combined as w_text*t + w_image*i - w_neg*n (each embedding
    normalised, the sum renormalised)."""

    model_config = ConfigDict(protected_namespaces=())
    q: Text = Field(None, description="text query, e.g. 'red pickup seen from behind'")
    neg: Text = Field(None, description="negative text: steer away from it ('a taxi')")
    like: Optional[ImageId] = Field(None, description="id of an indexed image: 'more like this'")
    w_text: float = Field(1.0, ge=0, le=10)
    w_image: float = Field(1.0, ge=0, le=10)
    w_neg: float = Field(0.5, ge=0, le=10)
    offset: int = Field(0, ge=0, le=100_000)
    limit: Optional[int] = Field(None, ge=1, le=100_000, description="page size (capped at serve.max_page_size)")
    facets: bool = True
    after: When = Field(
        None, description="only hits captured at or after this time (2026-01-02T10:00, a date, or unix seconds)"
    )
    before: When = Field(None, description="only hits captured before this time")
    sort: Literal["score", "time"] = Field("score", description="order of the page: best first, or earliest first")
    min_confidence: Optional[float] = Field(
        None, ge=0, le=1, description="only hits at least this likely to match the query (calibrated confidence)"
    )
    understand: bool = Field(
        True,
        description="motion words in q ('heading north', 'driving away', 'parked') become filters where the index "
        "knows that motion (the reply's `understood` says what was read)",
    )


class RequestBase(SearchParams):
    """A search as a JSON body: the filters as `filters: {"color": ["red"]}`; unknown fields refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class FlatBase(SearchParams):
    """A search as query parameters (GET) or form fields (image upload): the filters beside the rest."""

    filter_names: ClassVar[tuple[str, ...]] = ()
    request_model: ClassVar[type | None] = None

    def request(self, **over):
        """The same search as a `SearchRequest` (`over`: fields to replace)."""
        flat = self.model_dump()
        rest = {k: v for k, v in flat.items() if k not in self.filter_names}
        return self.request_model(**{**rest, **over}, filters={k: flat[k] for k in self.filter_names})


def models(row: Row = ROW) -> tuple[type, type, type]:
    """(Filters, SearchRequest, SearchForm) for a row declaration: the one filter model, the JSON
    body (`filters: {"color": ["red"]}`) and the flat form GET and the image upload read."""
    filters = create_model("Filters", __base__=FilterBase, **filter_fields(row))
    request = create_model("SearchRequest", __base__=RequestBase, filters=(filters, filters()))
    form = create_model("SearchForm", __base__=FlatBase, **filter_fields(row))
    form.filter_names, form.request_model = (*(c.name for c in row.columns if c.filter), *row.ranges), request
    return filters, request, form


Filters, SearchRequest, SearchForm = models()


class Match(BaseModel):
    """One reason a hit matched: its `attribute` has `value`, which the text query names (`text`),
    the query image has too (`image`), or the negative text names (`negative`: a conflict)."""

    model_config = ConfigDict(protected_namespaces=())
    attribute: str
    value: str
    source: Literal["text", "image", "negative"]


API_TYPES = {"time": (Optional[str], None), "box": (Optional[list[float]], None), "float": (Optional[float], None)}


def api_fields(row: Row = ROW) -> dict:
    """The hit's fields from the row's `api` columns: strings ("" where unknown; id and caption
    always there), a time as ISO 8601 (UTC), a box as x1, y1, x2, y2."""
    out = {}
    for c in row.columns:
        if c.api:
            required = not c.optional and c.kind in ("id", "text")  # id and caption: every hit has them
            typ, default = API_TYPES.get(c.kind, (str, ... if required else ""))
            out[c.name] = (typ, Field(default, description=c.help or None))
    return out


class HitBase(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    rank: int
    score: float
    confidence: Optional[float] = Field(
        None, description="probability that the hit matches the query (calibrated by evaluate; null: no calibration)"
    )
    confident: bool = Field(False, description="confidence >= the index's threshold (a confident match)")
    file: str = Field("", description="the original's file name (a video frame: the video's)")
    folder: str = Field("", description="the original's folder (local path or s3:// prefix)")
    frame_url: Optional[str] = Field(None, description="the whole frame of a vehicle (its box drawn by the page)")
    track: Optional[dict[str, Any]] = Field(
        None, description="a video vehicle: its track id, first/last seen and member boxes (frame_id, box, time)"
    )
    image_url: str
    thumb_url: str
    why: list[Match] = []


SearchHit = create_model("SearchHit", __base__=HitBase, **api_fields())


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
    filters: list[dict[str, str]] = Field(
        [], description="the filters the page offers: name, label and where it shows them (chips or scope)"
    )
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
