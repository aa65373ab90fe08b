"""The search service behind the API and the page: one `CarSearch`, the query a request makes
(text, image, like=<id>, negatives, weights, filters, facets, pages), "why this match" notes, and the
image and thumbnail files it may serve (only indexed images, thumbnails cached on disk)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from carsearch.core.confidence import query_kind
from carsearch.core.imaging import ImageError, open_rgb
from carsearch.index.hits import where_row
from carsearch.index.query import QueryError, build_where, check_text, scope_where
from carsearch.serve import files
from carsearch.serve.explain import canon, why
from carsearch.serve.schemas import (
    FILTER_COLUMNS,
    ID_PATTERN,
    SearchRequest,
)
from carsearch.sources.capture import hour_bucket, iso


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


def _track(row: dict) -> dict | None:
    """A video vehicle's track: id, first/last seen (ISO) and its member boxes, for the page's strip."""
    if not row.get("track_id"):
        return None
    members = json.loads(row.get("track_json") or "[]")
    return {
        "id": row["track_id"],
        "first_seen": iso(row.get("first_seen")),
        "last_seen": iso(row.get("last_seen")),
        "boxes": [{**m, "time": iso(m.get("time"))} for m in members],
    }


class Service:
    def __init__(self, searcher, settings: dict, root: Path | None = None):
        self.s = searcher
        self.ready = False  # set by warm(): `carsearch serve` warms up before it opens the port
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
        from carsearch.model.clip import encode_texts  # lazy: torch loads with the first text query

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
        from carsearch.model.clip import encode_images  # lazy: torch loads with the first image query

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
            scope = scope_where(None, req.after, req.before, self.s.has_tracks())
        except QueryError as e:
            raise ApiError(400, "bad_filter", str(e)) from None
        kind = query_kind(  # each query kind has its own calibration (none: no confidence, and the reply says so)
            text=bool(q) and req.w_text > 0,
            image=(picture is not None or bool(req.like)) and req.w_image > 0,
            negative=bool(neg) and req.w_neg > 0,
        )
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
                rows = self.s.search_vector(vec, n, 0, where, scope=scope, kind=kind)
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
        cal = self.s.calibrator(kind)
        thr = cal.threshold if cal is not None else None
        if req.min_confidence is not None:  # a relevance cut-off instead of a page that ends in junk
            rows = [r for r in rows if r.get("confidence") is not None and r["confidence"] >= req.min_confidence]
        n_confident = None if cal is None else sum(1 for r in rows if cal.confident(r.get("confidence")))
        if req.sort == "time":  # the candidates in capture order (undated last), then paged
            rows = sorted(rows, key=lambda r: (r.get("time") is None, r.get("time") or 0.0))
        page = rows[req.offset : req.offset + limit]
        hits, qc, nc = [], (canon(q) if q else None), (canon(neg) if neg else None)
        for i, r in enumerate(page):
            hits.append(
                {
                    "rank": req.offset + i + 1,
                    "id": r["id"],
                    "score": round(float(r["score"]), 6),
                    "confidence": r.get("confidence"),
                    "confident": cal is not None and cal.confident(r.get("confidence")),
                    "caption": r.get("caption") or "",
                    **{c: r.get(c) or "" for c in FILTER_COLUMNS},
                    "time": iso(r.get("time")),
                    "origin": r.get("origin") or "",
                    **where_row(r),
                    "frame_id": r.get("frame_id") or r["id"],
                    "box": r.get("box"),
                    "box_class": r.get("box_class") or "",
                    "frame_url": f"/api/v1/frames/{r['id']}" if r.get("box") is not None else None,
                    "track": _track(r),
                    "image_url": f"/api/v1/images/{r['id']}",
                    "thumb_url": f"/api/v1/thumbs/{r['id']}",
                    "why": why(r, qc, nc, ref, canonical=True),
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
            hours = Counter(hour_bucket(r["time"]) for r in rows if r.get("time") is not None)
            facets["hour"] = [{"value": h, "count": k} for h, k in sorted(hours.items())]  # in time order
        query = {
            "q": q,
            "neg": neg,
            "like": req.like,
            "image": picture is not None,
            "w_text": req.w_text,
            "w_image": req.w_image,
            "w_neg": req.w_neg,
            "filters": req.filters.active(),
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
            "confident": n_confident,
            "confidence_threshold": thr,
            "confidence_target": cal.target_precision if cal is not None else None,
            "confidence_kind": kind,
            "confidence_note": self.s.confidence_note(kind),
            "hits": hits,
            "facets": facets,
            "facet_scope": f"top {len(rows)} hits of the filtered search (serve.facet_candidates = {self.cfg['facet_candidates']})",
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

        size = int(self.cfg["thumb_size"])
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
