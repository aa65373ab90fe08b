"""`carsearch serve`: the search service. One FastAPI app holding one `CarSearch` (model and LanceDB
table loaded once; each request follows the index pointer, so a rebuilt index is picked up without
a restart), a versioned JSON API under `/api/v1` (OpenAPI at `/docs`) and the web page at `/`.

Facets are counted over the candidates of the search: the top `serve.facet_candidates` hits of the
vector search with the filters applied (prefiltered in LanceDB), the same list the pages come from.
A semantic search ranks every row, so counting the whole filtered table would only describe the
table; the top-N says what is among the relevant cars.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from carsearch.core.params import load_params
from carsearch.core.paths import repo_root
from carsearch.index.query import QueryError, build_where
from carsearch.serve.schemas import (
    FILTER_COLUMNS,
    ID_PATTERN,
    ErrorResponse,
    Filters,
    Info,
    SearchRequest,
    SearchResponse,
)

log = logging.getLogger("carsearch.serve")
STATIC = Path(__file__).parent / "static"
IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
WHY_ATTRS = ("color", "body_type", "view", "make", "model", "scene")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _TooLarge(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# ------------------------------------------------------------------ "why this match"
def _synonyms() -> list[tuple[re.Pattern, str]]:
    from carsearch.core.vocab import SYNONYMS

    pairs = sorted(SYNONYMS.items(), key=lambda kv: -len(kv[0]))
    return [(re.compile(rf"(?<![\w-]){re.escape(k)}(?![\w-])"), v) for k, v in pairs]


_SYN = _synonyms()


def _canon(text: str) -> str:
    t = " " + " ".join(text.lower().split()) + " "
    for pat, v in _SYN:
        t = pat.sub(v, t)
    return t


def _names(text: str, value: str) -> bool:
    v = value.strip().lower()
    return bool(v) and re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", text) is not None


def why(row: dict, q: str | None, neg: str | None, ref: dict | None, canon: bool = True) -> list[dict]:
    """Which of the hit's attributes the query names: words of the text (synonyms mapped, so
    "behind" matches view=rear), the attributes of the query image (more like this), and the
    negative text (a conflict). `canon=False`: q and neg are already `_canon`ed."""
    out = []
    qt, nt = ((_canon(q) if q else None), (_canon(neg) if neg else None)) if canon else (q, neg)
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


# ------------------------------------------------------------------ the service
class Service:
    def __init__(self, searcher, settings: dict, root: Path | None = None):
        self.s = searcher
        self.cfg = settings  # the validated `serve` section of params.yaml (conf/serve/default.yaml)
        self.root = Path(root or searcher.root)
        self._lock = threading.Lock()
        self._text_cache: OrderedDict = OrderedDict()
        self._text_lock = threading.Lock()
        cache = self.cfg["cache_dir"]
        self.thumb_dir = (Path(cache) if Path(cache).is_absolute() else self.root / cache) / str(
            int(self.cfg["thumb_size"])
        )
        self._allowed = [
            p.resolve() for p in (self.root, searcher.index_dir) if p is not None
        ]  # no folder: s3:// index

    def refresh(self):
        """Follow the pointer (one stat); the model key the request will use."""
        with self._lock:
            self.s.refresh()
            return self.s._model_key

    # ---- embeddings
    def text_vector(self, text: str) -> np.ndarray:
        from carsearch.index.query import check_text
        from carsearch.model.clip import encode_texts

        text = check_text(text)
        key = (self.s._model_key, text)
        with self._text_lock:
            v = self._text_cache.get(key)
            if v is not None:
                self._text_cache.move_to_end(key)
                return v
        v = encode_texts(self.s.model, self.s.processor, [text])[0]
        n = int(self.cfg["text_cache_size"])
        if n:
            with self._text_lock:
                self._text_cache[key] = v
                while len(self._text_cache) > n:
                    self._text_cache.popitem(last=False)
        return v

    def image_vector(self, picture) -> np.ndarray:
        from carsearch.model.clip import encode_images

        return encode_images(self.s.model, self.s.processor, [picture])[0]

    # ---- search
    def page_size(self, limit: int | None) -> int:
        return min(int(limit or self.cfg["default_page_size"]), int(self.cfg["max_page_size"]))

    def search(self, req: SearchRequest, picture=None) -> dict:
        t0 = time.perf_counter()
        q = " ".join(req.q.split()) if req.q and req.q.strip() else None
        neg = " ".join(req.neg.split()) if req.neg and req.neg.strip() else None
        if picture is not None and req.like:
            raise ApiError(400, "bad_query", "give an uploaded image or like=<id>, not both")
        if not (q or picture is not None or req.like):
            raise ApiError(
                400,
                "empty_query",
                "nothing to search for: give a text query (q), an image, or like=<image id>"
                + (" (a negative text alone is not a query)" if neg else ""),
            )
        limit = self.page_size(req.limit)
        max_results = int(self.cfg["max_results"])
        if req.offset + limit > max_results:
            raise ApiError(
                400,
                "bad_page",
                f"offset + limit = {req.offset + limit}: results are available up to "
                f"{max_results} (serve.max_results); narrow the query with filters",
            )
        try:
            where = build_where(req.filters.active())
        except QueryError as e:
            raise ApiError(400, "bad_filter", str(e)) from None
        for attempt in range(2):  # once more if the index (and its model) changed between embedding and search
            key = self.refresh()
            try:
                ref, parts = None, []
                if req.like:
                    ref = self.s.get_row(req.like, vector=True)
                    if ref is None:
                        raise ApiError(404, "unknown_id", f"no indexed image with id {req.like!r}")
                    parts.append((req.w_image, np.asarray(ref["vector"], np.float32)))
                if picture is not None:
                    parts.append((req.w_image, self.image_vector(picture)))
                if q:
                    parts.append((req.w_text, self.text_vector(q)))
                if neg:
                    parts.append((-req.w_neg, self.text_vector(neg)))
                if not any(w > 0 for w, _ in parts):
                    raise ApiError(400, "bad_weights", "every positive weight is 0: raise w_text or w_image")
                vec = sum(w * (v / max(np.linalg.norm(v), 1e-12)) for w, v in parts)
                norm = float(np.linalg.norm(vec))
                if norm < 1e-6:
                    raise ApiError(400, "bad_weights", "the weighted query vectors cancel out; change the weights")
                vec = (vec / norm).astype(np.float32)
                n = min(max(int(self.cfg["facet_candidates"]), req.offset + limit), max_results) + (
                    1 if req.like else 0
                )
                rows = self.s.search_vector(vec, n, 0, where)
            except ApiError:
                raise
            except Exception:
                if attempt == 0 and self.s._model_key != key:
                    continue
                raise
            if self.s._model_key == key:
                break
        if req.like:  # more like this: not the image itself
            rows = [r for r in rows if r["id"] != req.like][: n - 1]
        page = rows[req.offset : req.offset + limit]
        hits, qc, nc = [], (_canon(q) if q else None), (_canon(neg) if neg else None)
        for i, r in enumerate(page):
            hits.append(
                {
                    "rank": req.offset + i + 1,
                    "id": r["id"],
                    "score": round(float(r["score"]), 6),
                    "caption": r.get("caption") or "",
                    **{c: r.get(c) or "" for c in FILTER_COLUMNS},
                    "image_url": f"/api/v1/images/{r['id']}",
                    "thumb_url": f"/api/v1/thumbs/{r['id']}",
                    "why": why(r, qc, nc, ref, canon=False),
                }
            )
        facets = {}
        if req.facets:
            top = int(self.cfg["facet_top"])
            for c in FILTER_COLUMNS:
                counts = Counter(r.get(c) for r in rows if r.get(c))
                facets[c] = [
                    {"value": v, "count": k} for v, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
                ]
        query = {
            "q": q,
            "neg": neg,
            "like": req.like,
            "image": picture is not None,
            "w_text": req.w_text,
            "w_image": req.w_image,
            "w_neg": req.w_neg,
            "filters": req.filters.active(),
        }
        return {
            "query": query,
            "offset": req.offset,
            "limit": limit,
            "candidates": len(rows),
            "has_more": req.offset + limit < len(rows),
            "hits": hits,
            "facets": facets,
            "facet_scope": f"top {len(rows)} hits of the filtered search (serve.facet_candidates = {self.cfg['facet_candidates']})",
            "index_version": self.s.meta.get("version"),
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        }

    # ---- files
    def image_file(self, image_id: str) -> Path:
        if not re.match(ID_PATTERN, image_id):
            raise ApiError(404, "unknown_id", "no indexed image with that id")
        self.refresh()
        row = self.s.get_row(image_id)
        if row is None:
            raise ApiError(404, "unknown_id", f"no indexed image with id {image_id!r}")
        p = Path(row["path"])
        p = p if p.is_absolute() else self.root / p
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ApiError(
                404, "missing_file", f"image {image_id} is indexed but its file is gone (rebuild the index)"
            ) from None
        # the table is the only source of paths; still, never serve a file that resolves outside the repo / index
        if (
            not any(real.is_relative_to(a) for a in self._allowed)
            or not real.is_file()
            or real.suffix.lower() not in IMAGE_TYPES
        ):
            raise ApiError(404, "missing_file", f"image {image_id}: its file is not servable")
        return real

    def thumb_file(self, image_id: str) -> Path:
        src = self.image_file(image_id)
        out = self.thumb_dir / image_id[:2] / f"{image_id}.jpg"
        if out.is_file():
            return out
        from carsearch.core.imaging import ImageError, open_rgb

        size = int(self.cfg["thumb_size"])
        try:
            im = open_rgb(src, max_edge=size)
        except ImageError as e:
            raise ApiError(404, "missing_file", f"image {image_id}: not readable ({e})") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        im.save(tmp, "JPEG", quality=85)
        os.replace(tmp, out)  # generated once; concurrent first requests both write, last rename wins
        return out

    def info(self) -> dict:
        self.refresh()
        m = self.s.meta
        created = m.get("created")
        if created is None and str(m.get("version", "")).startswith("v-"):
            try:
                created = (
                    datetime.strptime(m["version"][2:17], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc).timestamp()
                )
            except ValueError:
                created = None
        built = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds") if created else None
        return {
            "rows": int(self.s.table.count_rows()),
            "model": m.get("model"),
            "model_ref": m.get("model_ref"),
            "content_hash": m.get("content_hash"),
            "registered_model": m.get("registered_model"),
            "promotion": m.get("promotion"),
            "index_version": m.get("version"),
            "built_at": built,
            "corpus": m.get("corpus"),
            "metric": m.get("metric"),
            "search": m.get("search"),
            "filter_columns": list(FILTER_COLUMNS),
            "limits": {
                k: int(self.cfg[k])
                for k in (
                    "max_upload_bytes",
                    "default_page_size",
                    "max_page_size",
                    "max_results",
                    "facet_candidates",
                    "thumb_size",
                )
            },
        }


# ------------------------------------------------------------------ the app
class UploadLimit:
    """Pure ASGI middleware: refuse a request body over the upload limit with 413 before it is
    parsed (Content-Length), and stop reading a chunked body once it passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max = app, max_bytes + 64 * 1024  # room for the multipart envelope and form fields

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        msg = f"request body over the upload limit ({self.max - 64 * 1024} bytes, serve.max_upload_bytes)"
        cl = dict(scope["headers"]).get(b"content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.max:
            return await _error(413, "too_large", msg)(scope, receive, send)
        seen, started, over = 0, False, False

        async def limited():
            nonlocal seen, over
            m = await receive()
            seen += len(m.get("body", b""))
            if seen > self.max:
                over = True
                raise _TooLarge()
            return m

        async def guarded_send(m):
            nonlocal started
            if over:  # the body parser turned _TooLarge into its own error: answer 413 instead
                if m["type"] == "http.response.start" and not started:
                    started = True
                    await _error(413, "too_large", msg)(scope, receive, send)
                return
            started = started or m["type"] == "http.response.start"
            await send(m)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooLarge:
            if not started:
                started = True
                await _error(413, "too_large", msg)(scope, receive, send)


def _decode_upload(data: bytes, max_pixels: int):
    from carsearch.core.imaging import ImageError, open_rgb

    try:
        return open_rgb(data, max_pixels=max_pixels)
    except ImageError as e:
        raise ApiError(400, "bad_image", f"the uploaded file is not a usable image ({e})") from None


def create_app(searcher=None, settings: dict | None = None, root: Path | None = None, index_dir=None) -> FastAPIOffline:
    """The app over `searcher` (a CarSearch; opened from `index_dir` / params.yaml when None), with
    `settings` the `serve` section of params.yaml (read from the repo's params.yaml when None)."""
    if settings is None:
        settings = load_params(Path(root or repo_root()) / "params.yaml")["serve"]
    if searcher is None:
        from carsearch.index.search import CarSearch

        searcher = CarSearch(index_dir, root=root)
    svc = Service(searcher, settings, root)
    app = FastAPIOffline(
        title="carsearch",
        version="1",  # /docs assets served locally: no CDN
        description="Search the car index by text, by image, or both. Errors are "
        '`{"error": {"code", "message"}}` with a 4xx status.',
        responses={
            400: {"model": ErrorResponse},
            404: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, e: QueryError):
        return _error(400, "bad_query", str(e))

    def _validation(errors) -> JSONResponse:
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "form", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg')}")
        return _error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(RequestValidationError)
    async def _req_validation(request: Request, e: RequestValidationError):
        return _validation(e.errors())

    @app.exception_handler(ValidationError)
    async def _pyd_validation(request: Request, e: ValidationError):
        return _validation(e.errors(include_url=False))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error(e.status_code, code, str(e.detail) if e.detail else code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error (details in the server log)")

    app.add_middleware(UploadLimit, max_bytes=int(svc.cfg["max_upload_bytes"]))

    # ---- API
    @app.get("/api/v1/info", response_model=Info, tags=["index"])
    def info():
        """Rows, the model the index was built with (and why: the promotion decision), its registered
        version, the index version and when it was built."""
        return svc.info()

    def _request(q, neg, like, w_text, w_image, w_neg, offset, limit, facets, **filters) -> SearchRequest:
        return SearchRequest(
            q=q,
            neg=neg,
            like=like,
            w_text=w_text,
            w_image=w_image,
            w_neg=w_neg,
            offset=offset,
            limit=limit,
            facets=facets,
            filters=Filters(**{k: v or [] for k, v in filters.items()}),
        )

    @app.get("/api/v1/search", response_model=SearchResponse, tags=["search"])
    def search_get(
        q: Optional[str] = Query(None, description="text query"),
        neg: Optional[str] = Query(None, description="negative text"),
        like: Optional[str] = Query(None, description="id of an indexed image (more like this)"),
        w_text: float = 1.0,
        w_image: float = 1.0,
        w_neg: float = 0.5,
        offset: int = 0,
        limit: Optional[int] = None,
        facets: bool = True,
        make: list[str] = Query([]),
        model: list[str] = Query([]),
        body_type: list[str] = Query([]),
        color: list[str] = Query([]),
        view: list[str] = Query([]),
        scene: list[str] = Query([]),
        split: list[str] = Query([]),
    ):
        """Search by text, by an indexed image (`like`), or both, with an optional negative text;
        repeat a filter for any of several values (`color=red&color=blue`)."""
        req = _request(
            q,
            neg,
            like,
            w_text,
            w_image,
            w_neg,
            offset,
            limit,
            facets,
            make=make,
            model=model,
            body_type=body_type,
            color=color,
            view=view,
            scene=scene,
            split=split,
        )
        return svc.search(req)

    @app.post("/api/v1/search", response_model=SearchResponse, tags=["search"])
    def search_post(req: SearchRequest):
        """The same as GET, as a JSON body (`filters: {"color": ["red"]}`)."""
        return svc.search(req)

    @app.post("/api/v1/search/image", response_model=SearchResponse, tags=["search"])
    async def search_image(
        image: UploadFile = File(..., description="the query image (jpg, png, webp, ...)"),
        q: Optional[str] = Form(None),
        neg: Optional[str] = Form(None),
        w_text: float = Form(1.0),
        w_image: float = Form(1.0),
        w_neg: float = Form(0.5),
        offset: int = Form(0),
        limit: Optional[int] = Form(None),
        facets: bool = Form(True),
        make: list[str] = Form([]),
        model: list[str] = Form([]),
        body_type: list[str] = Form([]),
        color: list[str] = Form([]),
        view: list[str] = Form([]),
        scene: list[str] = Form([]),
        split: list[str] = Form([]),
    ):
        """Search by an uploaded image (multipart field `image`), optionally with a text and a negative text."""
        req = _request(
            q,
            neg,
            None,
            w_text,
            w_image,
            w_neg,
            offset,
            limit,
            facets,
            make=make,
            model=model,
            body_type=body_type,
            color=color,
            view=view,
            scene=scene,
            split=split,
        )
        limit_bytes = int(svc.cfg["max_upload_bytes"])
        data = await image.read(limit_bytes + 1)
        if len(data) > limit_bytes:
            raise ApiError(
                413, "too_large", f"image over the upload limit ({limit_bytes} bytes, serve.max_upload_bytes)"
            )
        if not data:
            raise ApiError(400, "bad_image", "the uploaded image is empty")
        picture = await run_in_threadpool(_decode_upload, data, int(svc.cfg["max_image_pixels"]))
        return await run_in_threadpool(svc.search, req, picture)

    @app.get("/api/v1/images/{image_id}", tags=["images"], response_class=FileResponse)
    def image(image_id: str):
        """The indexed image file (looked up by id in the index table; no client paths)."""
        p = svc.image_file(image_id)
        return FileResponse(
            p, media_type=IMAGE_TYPES[p.suffix.lower()], headers={"Cache-Control": "public, max-age=3600"}
        )

    @app.get("/api/v1/thumbs/{image_id}", tags=["images"], response_class=FileResponse)
    def thumb(image_id: str):
        """A JPEG thumbnail (longest edge serve.thumb_size), generated on first request and cached."""
        return FileResponse(
            svc.thumb_file(image_id), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"}
        )

    # ---- the page
    @app.get("/", include_in_schema=False)
    def index_page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/index.html", include_in_schema=False)
    def index_redirect():
        return RedirectResponse("/")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(host: str | None = None, port: int | None = None, index_dir=None, access_log: bool = True) -> None:
    """Load params.yaml's `serve:` settings and the index once, then run uvicorn."""
    import torch
    import uvicorn

    root = repo_root()
    params = load_params(root / "params.yaml")
    cfg = params["serve"]
    threads = int(cfg["torch_threads"])
    if threads:
        torch.set_num_threads(threads)
    app = create_app(settings=cfg, root=root, index_dir=index_dir or params["paths"]["index_dir"])
    uvicorn.run(
        app,
        host=host or cfg["host"],
        port=int(port if port is not None else cfg["port"]),
        access_log=access_log,
        log_level="info",
    )
