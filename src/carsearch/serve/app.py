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
import sys
from pathlib import Path
from typing import Annotated, Literal

from fastapi import File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from carsearch.core.imaging import ImageError, open_rgb
from carsearch.core.params import load_params
from carsearch.core.paths import repo_root
from carsearch.index.query import QueryError
from carsearch.serve.export import router as export_router
from carsearch.serve.files import IMAGE_TYPES
from carsearch.serve.guards import (
    ServeConfigError,
    TokenGate,
    UploadLimit,
    UploadRate,
    access_token,
    error_response,
    is_loopback,
)
from carsearch.serve.judgments import add_judgment_route
from carsearch.serve.schemas import (
    ErrorResponse,
    Health,
    Info,
    SearchForm,
    SearchRequest,
    SearchResponse,
)
from carsearch.serve.service import ApiError, Service
from carsearch.serve.sightings import sightings_router
from carsearch.serve.watches import watch_router

log = logging.getLogger("carsearch.serve")
STATIC = Path(__file__).parent / "static"


def _decode_upload(data: bytes, max_pixels: int):

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
        from carsearch.index.search import CarSearch  # lazy: an app given a searcher never opens one

        searcher = CarSearch(index_dir, root=root, fallback=True)  # a damaged live version: serve the previous one
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

    _error_handlers(app)
    app.add_middleware(UploadLimit, max_bytes=int(svc.cfg["max_upload_bytes"]))
    app.add_middleware(UploadRate, per_minute=int(svc.cfg["upload_rate_per_minute"]))
    token = access_token(svc.cfg)
    if token:
        app.add_middleware(TokenGate, token=token)  # added last: runs first, before any limit or route

    _search_routes(app, svc, root)
    app.include_router(sightings_router(svc))
    app.include_router(export_router)  # issue 33: POST /api/v1/export, evidence bundles
    _file_routes(app, svc)
    return app


def _error_handlers(app) -> None:
    """Every error as `{"error": {"code", "message"}}`: ours, bad queries, validation, HTTP, the rest (500)."""

    @app.exception_handler(ApiError)
    async def _apierror_response(request: Request, e: ApiError):
        return error_response(e.status, e.code, e.message)

    @app.exception_handler(QueryError)
    async def _queryerror_response(request: Request, e: QueryError):
        return error_response(400, "bad_query", str(e))

    def _validation(errors) -> JSONResponse:
        parts = []
        for err in errors[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "form", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg')}")
        return error_response(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(RequestValidationError)
    async def _req_validation(request: Request, e: RequestValidationError):
        return _validation(e.errors())

    @app.exception_handler(ValidationError)
    async def _pyd_validation(request: Request, e: ValidationError):
        return _validation(e.errors(include_url=False))

    @app.exception_handler(StarletteHTTPException)
    async def _httperror_response(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail) if e.detail else code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error (details in the server log)")


def _search_routes(app, svc: Service, root: Path | None) -> None:
    """Health, info and the three ways to search (GET, POST JSON, image upload), one filter model."""

    # ---- API
    @app.get("/api/v1/health", response_model=Health, tags=["index"], responses={503: {"model": Health}})
    def health():
        """Ready (200) once the model is loaded, with the index version served; 503 while starting."""
        h = svc.health()
        return h if h["status"] == "ready" else JSONResponse(h, status_code=503)

    @app.get("/api/v1/info", response_model=Info, tags=["index"])
    def info():
        """Rows, the model the index was built with (and why: the promotion decision), its registered
        version, the index version and when it was built."""
        return svc.info()

    @app.get("/api/v1/search", response_model=SearchResponse, tags=["search"])
    def search_get(
        params: Annotated[SearchForm, Query()],
        format: Literal["json", "csv", "paths"] = Query(
            "json", description="csv: a CSV file; paths: originals, 1 a line"
        ),
    ):
        """Search by text, by an indexed image (`like`), or both, with an optional negative text;
        repeat a filter for any of several values (`color=red&color=blue`); `format=csv` exports
        the hits (file, frame, box, camera, time, score, confidence), `format=paths` lists the top
        `limit` originals' paths (one per line)."""
        body = svc.search(params.request())
        if format == "paths":  # the top k's originals, one per line (`search -f` of the CLI)
            from carsearch.index.hits import export_paths

            paths = export_paths(body["hits"], Path(root or repo_root()))
            return Response("".join(f"{p}\n" for p in paths), media_type="text/plain")
        if format == "csv":
            from carsearch.index.results import hits_csv  # the one CSV layout (the CLI's --csv too)

            disposition = {"Content-Disposition": 'attachment; filename="carsearch-hits.csv"'}
            return Response(hits_csv(body["hits"]), media_type="text/csv", headers=disposition)
        return body

    @app.get("/api/v1/counts", tags=["search"])
    def counts_get(
        params: Annotated[SearchForm, Query()],
        by: str = Query("camera", description="buckets: any of camera,hour,class,colour,direction,view,body_type"),
        line: str | None = Query(None, description="x1,y1,x2,y2: count crossings of this line (one camera's image)"),
        k: int = Query(1000, ge=1, le=100_000, description="with q: how many hits are counted"),
        format: Literal["json", "csv", "png"] = Query("json", description="csv: a CSV file; png: a bar chart"),
    ):
        """Vehicles (tracks once) per bucket, or line crossings per direction, of a search: `q`, the
        filters, `after`/`before` and `min_confidence` combine (carsearch.index.counts)."""
        from carsearch.index import counts as counts_mod

        req = params.request()
        filters = req.filters.active()
        cams = filters.get("camera") or []
        camera = cams[0] if line and len(cams) == 1 else None
        svc.refresh()
        names = counts_mod.parse_by(by)
        table = counts_mod.counts(
            svc.s, names, line=line, camera=camera, text=req.q, k=k, filters=filters,
            after=req.after, before=req.before, min_confidence=req.min_confidence,
        )  # fmt: skip
        if format == "csv":
            return Response(counts_mod.counts_csv(table, names), media_type="text/csv")
        if format == "png":
            return Response(counts_mod.counts_png(table, names, req.q or ""), media_type="image/png")
        return {"by": names, "line": line, "counts": table, "total": sum(r["count"] for r in table)}

    @app.post("/api/v1/search", response_model=SearchResponse, tags=["search"])
    def search_post(req: SearchRequest):
        """The same as GET, as a JSON body (`filters: {"color": ["red"]}`)."""
        return svc.search(req)

    @app.post("/api/v1/search/image", response_model=SearchResponse, tags=["search"])
    async def search_image(
        form: Annotated[SearchForm, Form()],
        image: UploadFile = File(..., description="the query image (jpg, png, webp, ...)"),
    ):
        """Search by an uploaded image (multipart field `image`), optionally with a text and a negative text."""
        req = form.request(like=None)  # the uploaded image is the image of this query
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


def _file_routes(app, svc: Service) -> None:
    """Indexed images, frames and thumbnails (by id: no client paths), and the page."""

    def _image_response(p):  # a local file, or (suffix, bytes) of an S3 original (proxied)
        headers = {"Cache-Control": "public, max-age=3600"}
        if isinstance(p, tuple):
            return Response(p[1], media_type=IMAGE_TYPES[p[0]], headers=headers)
        return FileResponse(p, media_type=IMAGE_TYPES[p.suffix.lower()], headers=headers)

    @app.get("/api/v1/images/{image_id}", tags=["images"], response_class=FileResponse)
    def image(image_id: str):
        """The indexed image file (looked up by id in the index table; no client paths)."""
        return _image_response(svc.image_file(image_id))

    @app.get("/api/v1/frames/{image_id}", tags=["images"], response_class=FileResponse)
    def frame(image_id: str):
        """The whole frame an indexed vehicle was cropped from (the image itself for a whole image);
        the hit's `box` says where the vehicle is in it."""
        return _image_response(svc.image_file(image_id, frame=True))

    @app.get("/api/v1/thumbs/{image_id}", tags=["images"], response_class=FileResponse)
    def thumb(image_id: str):
        """A JPEG thumbnail (longest edge serve.thumb_size), generated on first request and cached."""
        return FileResponse(
            svc.thumb_file(image_id), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"}
        )

    add_judgment_route(app, svc)  # POST /api/v1/judgments (issue 34)
    app.include_router(watch_router(svc))  # /api/v1/watches, /api/v1/alerts (issue 33)

    # ---- the page
    @app.get("/", include_in_schema=False)
    def index_page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/index.html", include_in_schema=False)
    def index_redirect():
        return RedirectResponse("/")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def serve(
    host: str | None = None, port: int | None = None, index_dir=None, access_log: bool = True, insecure: bool = False
) -> None:
    """Load params.yaml's `serve:` settings and the index once, then run uvicorn. Beyond loopback it
    needs a token (`serve.token` / `$CARSEARCH_TOKEN`) unless `insecure`."""
    import torch
    import uvicorn

    root = repo_root()
    params = load_params(root / "params.yaml")
    cfg = params["serve"]
    host = host or cfg["host"]
    if not is_loopback(host) and not access_token(cfg) and not insecure:
        raise ServeConfigError(
            f"serve: binding {host} lets anyone on the network in; set a token (serve.token or $CARSEARCH_TOKEN; "
            "clients send `Authorization: Bearer <token>`), bind 127.0.0.1, or pass --insecure"
        )
    threads = int(cfg["torch_threads"])
    if threads:
        torch.set_num_threads(threads)
    app = create_app(settings=cfg, root=root, index_dir=index_dir or params["paths"]["index_dir"])
    seconds = app.state.service.warm()  # before the port opens: the first request is not the slow one
    print(f"carsearch serve: model and index loaded in {seconds:.1f} s", file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=int(port if port is not None else cfg["port"]),
        access_log=access_log,
        log_level="info",
    )
