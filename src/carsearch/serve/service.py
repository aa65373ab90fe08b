"""The search service behind the API and the page: one `CarSearch`, the query a request makes
(text, image, like=<id>, negatives, weights, filters, facets, pages), "why this match" notes, and the
image and thumbnail files it may serve (only indexed images, thumbnails cached on disk)."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from carsearch.core.columns import ROW
from carsearch.core.confidence import query_kind
from carsearch.core.imaging import ImageError, open_rgb
from carsearch.core.schema import Serve
from carsearch.index.query import QueryError
from carsearch.serve import files
from carsearch.serve.explain import canon, why
from carsearch.serve.hits import api_hit, facets
from carsearch.serve.schemas import ID_PATTERN, SearchRequest


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ------------------------------------------------------------------ the service


def _whole_jpeg(path: Path) -> bool:
    """A cached thumbnail is whole: JPEG start and end markers (a torn file lacks the end)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:
        return False


def plate_only(req: SearchRequest, q, picture) -> bool:
    """A plate filter with no text, image or like: ranked by plate distance (CarSearch.plate_rows)."""
    return not (q or picture is not None or req.like) and bool(req.filters.active().get("plate"))


class Service:
    def __init__(self, searcher, settings: Serve, root: Path | None = None):
        self.s = searcher
        self.ready = False  # set by warm(): `carsearch serve` warms up before it opens the port
        self.cfg = settings  # the validated `serve` section of params.yaml (conf/serve/default.yaml)
        self.root = Path(root or searcher.root)
        self._lock = threading.Lock()
        searcher.encoder.text_cache_size = self.cfg.text_cache_size  # the library's encoder and LRU
        cache = self.cfg.cache_dir
        self.thumb_dir = (Path(cache) if Path(cache).is_absolute() else self.root / cache) / str(self.cfg.thumb_size)
        self._allowed = [
            p.resolve() for p in (self.root, searcher.index_dir) if p is not None
        ]  # no folder: s3:// index

    def refresh(self):
        """Follow the pointer (one stat); the model key the request will use."""
        with self._lock:
            self.s.refresh()
            return self.s.encoder.key

    # ---- embeddings: the library's encoder (NumPy towers, text LRU), as the CLI and Python API use
    def text_vector(self, text: str) -> np.ndarray:
        return self.s.encoder.text(text)

    def image_vector(self, picture) -> np.ndarray:
        return self.s.encoder.image(picture)

    # ---- search
    def page_size(self, limit: int | None) -> int:
        return min(int(limit or self.cfg.default_page_size), self.cfg.max_page_size)

    def _check(self, req: SearchRequest, q, neg, picture) -> int:
        """The page size, once the request is a query at all and its page is within reach."""
        if picture is not None and req.like:
            raise ApiError(400, "bad_query", "give an uploaded image or like=<id>, not both")
        if not (q or picture is not None or req.like or plate_only(req, q, picture)):
            raise ApiError(
                400,
                "empty_query",
                "nothing to search for: give a text query (q), an image, like=<image id> or a plate"
                + (" (a negative text alone is not a query)" if neg else ""),
            )
        limit = self.page_size(req.limit)
        max_results = self.cfg.max_results
        if req.offset + limit > max_results:
            raise ApiError(
                400,
                "bad_page",
                f"offset + limit = {req.offset + limit}: results are available up to "
                f"{max_results} (serve.max_results); narrow the query with filters",
            )
        return limit

    def _vector(self, req: SearchRequest, q, neg, picture) -> tuple[np.ndarray, dict | None]:
        """The query vector (text, image, like=<id>, negative text, weighted) and the `like` row."""
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
        return (vec / norm).astype(np.float32), ref

    def _candidates(
        self, req: SearchRequest, q, neg, picture, n: int, kind: str, filters: dict
    ) -> tuple[list[dict], dict | None]:
        """The top `n` rows of the library's one query (CarSearch.search), filters checked there."""
        try:
            plan = self.s.plan(
                filters,
                after=req.after,
                before=req.before,
                min_confidence=req.min_confidence,
                kind=kind,
            )
        except QueryError as e:
            raise ApiError(400, "bad_filter", str(e)) from None
        if plate_only(req, q, picture):  # the plan matched the live version's plates: no vector to make
            return self.s.plate_rows(n, plan), None
        for attempt in range(2):  # once more if the index (and its model) changed between embedding and search
            key = self.refresh()
            try:
                vec, ref = self._vector(req, q, neg, picture)
                rows = self.s.search(vec, n, plan=plan, exclude=req.like)
            except ApiError:
                raise
            except Exception:
                if attempt == 0 and self.s.encoder.key != key:
                    continue
                raise
            if self.s.encoder.key == key:
                break
        return rows, ref

    def search(self, req: SearchRequest, picture=None) -> dict:
        t0 = time.perf_counter()
        q = " ".join(req.q.split()) if req.q and req.q.strip() else None
        neg = " ".join(req.neg.split()) if req.neg and req.neg.strip() else None
        limit = self._check(req, q, neg, picture)
        n = min(max(self.cfg.facet_candidates, req.offset + limit), self.cfg.max_results)
        kind = query_kind(  # each query kind has its own calibration (none: no confidence, and the reply says so)
            text=bool(q) and req.w_text > 0,
            image=(picture is not None or bool(req.like)) and req.w_image > 0,
            negative=bool(neg) and req.w_neg > 0,
            plate=plate_only(req, q, picture),
        )
        filters, understood, embed = req.filters.active(), [], q
        if q and req.understand:  # motion words become filters (CarSearch.understand, as the CLI and Python API)
            self.refresh()
            embed, filters, understood = self.s.understand(q, filters)
        rows, ref = self._candidates(req, embed, neg, picture, n, kind, filters)
        cal = self.s.calibrator(kind)
        if req.sort == "time":  # the candidates in capture order (undated last), then paged
            rows = sorted(rows, key=lambda r: (r.get("time") is None, r.get("time") or 0.0))
        page = rows[req.offset : req.offset + limit]
        qc, nc = (canon(q) if q else None), (canon(neg) if neg else None)
        hits = [
            {**api_hit(r, req.offset + i + 1), "why": why(r, qc, nc, ref, canonical=True)} for i, r in enumerate(page)
        ]
        query = {
            "q": q,
            "neg": neg,
            "like": req.like,
            "image": picture is not None,
            "w_text": req.w_text,
            "w_image": req.w_image,
            "w_neg": req.w_neg,
            "filters": filters,
            "understood": understood,
            **{k: v for k, v in (("after", req.after), ("before", req.before)) if v},
            "sort": req.sort,
            **({"min_confidence": req.min_confidence} if req.min_confidence is not None else {}),
        }
        return {
            "query": query,
            "offset": req.offset,
            "limit": limit,
            "candidates": len(rows),
            "has_more": req.offset + limit < len(rows),
            "confident": None if cal is None else sum(1 for r in rows if r["confident"]),
            "confidence_threshold": cal.threshold if cal is not None else None,
            "confidence_target": cal.target_precision if cal is not None else None,
            "confidence_kind": kind,
            "confidence_note": self.s.confidence_note(kind),
            "hits": hits,
            "facets": facets(rows, self.cfg.facet_top) if req.facets else {},
            "facet_scope": f"top {len(rows)} hits of the filtered search (serve.facet_candidates = {self.cfg.facet_candidates})",
            "index_version": self.s.meta.get("version"),
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        }

    # ---- files
    def image_file(self, image_id: str, frame: bool = False) -> Path | tuple[str, bytes]:
        """The file of an indexed image (a vehicle's crop), or with `frame` the whole frame it is in:
        a local Path, or (suffix, bytes) of an S3 original (read through `core.originals`, proxied).
        An original outside the repo and the index is served only while its bytes still hash to the
        id it was indexed under; one that moved or changed is 404 missing_file."""
        if not re.match(ID_PATTERN, image_id):
            raise ApiError(404, "unknown_id", "no indexed image with that id")
        self.refresh()
        row = self.s.get_row(image_id)
        if row is None:
            raise ApiError(404, "unknown_id", f"no indexed image with id {image_id!r}")
        got = files.locate(row, frame, self.root, self._allowed, self.s.index_dir)
        if got == "gone":
            raise ApiError(
                404, "missing_file", f"image {image_id} is indexed but its file is gone or changed (rebuild the index)"
            )
        if got == "unservable":
            raise ApiError(404, "missing_file", f"image {image_id}: its file is not servable")
        return got

    def thumb_file(self, image_id: str) -> Path:
        src = self.image_file(image_id)
        out = self.thumb_dir / image_id[:2] / f"{image_id}.jpg"
        if out.is_file() and _whole_jpeg(out):
            return out
        # none yet, or torn (a crash, a full disk): made again from the image

        size = self.cfg.thumb_size
        try:
            im = open_rgb(src[1] if isinstance(src, tuple) else src, max_edge=size)
        except ImageError as e:
            raise ApiError(404, "missing_file", f"image {image_id}: not readable ({e})") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        im.save(tmp, "JPEG", quality=85)
        os.replace(tmp, out)  # generated once; concurrent first requests both write, last rename wins
        return out

    def warm(self) -> float:
        """Load what queries need (torch, the model, the table) and run one text and one image query
        through it, so the first request is as fast as the rest; returns the seconds it took."""
        t = time.perf_counter()
        self.refresh()
        self.text_vector("a car")
        self.image_vector(Image.new("RGB", (32, 32), (128, 128, 128)))
        self.ready = True
        return time.perf_counter() - t

    def health(self) -> dict:
        """For load balancers: ready once `warm` ran, with the index version being served."""
        self.refresh()
        return {
            "status": "ready" if self.ready else "starting",
            "index_version": self.s.meta.get("version"),
            "rows": int(self.s.table.count_rows()),
        }

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
            "filter_columns": list(ROW.filters),
            "filters": ROW.page_filters(),
            "limits": {
                k: getattr(self.cfg, k)
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
