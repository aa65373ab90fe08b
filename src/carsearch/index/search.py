"""Search the car index by text or by image (the CLI and Python API share this).

Over 350 lines on purpose: `CarSearch` is the one public query object (open, follow the pointer,
text/image/hybrid queries, filters, the cold-start towers); its parts share its state.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from carsearch.core.confidence import Calibration, no_calibration_note
from carsearch.core.errors import CarsearchError
from carsearch.core.paths import repo_root, resolve
from carsearch.index.query import (
    QueryError,
    check_confidence,
    check_image,
    check_text,
    check_where,
    combine,
    scope_where,
)
from carsearch.index.store import (
    META_FILE,
    MODEL_SUBDIR,
    RESULT_COLUMNS,
    VEHICLE_COLUMNS,
    connect,
    is_uri,
    read_meta,
)
from carsearch.sources.capture import iso


# torch and transformers load only when a query needs them (cold start: docs/scale.md); the same names as before
def encode_images(*args, **kw):
    from carsearch.model.clip import encode_images as f

    return f(*args, **kw)


def encode_texts(*args, **kw):
    from carsearch.model.clip import encode_texts as f

    return f(*args, **kw)


def load_pretrained(*args, **kw):
    from carsearch.model.clip import load_pretrained as f

    return f(*args, **kw)


class IndexDamagedError(CarsearchError, RuntimeError):
    """The live index version cannot be read (a data file missing or torn): one line with the fix."""


def _lance_reason(e: Exception) -> str:
    """lance's message without its source location (`…/lance-io-…/src/local.rs:273:40`)."""
    text = " ".join(str(e).split())
    text = re.sub(r",?\s*/\S*\.rs:\d+:\d+\s*$", "", text)
    return text.removeprefix("lance error: ")


REMOTE_POLL_S = 5.0  # how often a searcher on an s3:// index looks for a new pointer


@dataclass
class Hit:
    rank: int
    score: float
    id: str
    caption: str
    path: str
    labels: dict
    # the vehicle (indexes built since boxes; a whole image is its own frame, without a box)
    origin: str = ""
    frame_id: str = ""
    frame_path: str = ""
    box: list[float] | None = None
    box_class: str = ""
    box_score: float | None = None
    camera: str = ""
    time: float | None = None
    track_id: str = ""  # a vehicle of a video: the track, seen from first_seen to last_seen (unix seconds)
    first_seen: float | None = None
    last_seen: float | None = None
    track_json: str = ""  # its member boxes: [{"frame_id", "box", "time", "offset"}, …]
    # P(the hit matches the query), calibrated by `evaluate` (None: the index has no calibration)
    confidence: float | None = None
    confident: bool = False


CSV_COLUMNS = (
    "rank",
    "score",
    "confidence",
    "confident",
    "id",
    "file",
    "frame_id",
    "x1",
    "y1",
    "x2",
    "y2",
    "camera",
    "time",
    "caption",
)


def hits_csv(hits: list[dict]) -> str:
    """A result list as CSV (one row per hit: score, calibrated confidence and whether it is a
    confident match (empty without a calibration), file, frame, box, camera, time), from `Hit`s as
    dicts (`dataclasses.asdict`) or the API's hits; times as ISO 8601."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for h in hits:
        box = [f"{v:.1f}" for v in h["box"]] if h.get("box") is not None else ["", "", "", ""]
        t = h.get("time")
        w.writerow(
            [
                h["rank"],
                f"{float(h['score']):.4f}",
                "" if h.get("confidence") is None else f"{float(h['confidence']):.4f}",
                "" if h.get("confidence") is None else str(bool(h.get("confident"))).lower(),
                h["id"],
                h.get("origin") or h.get("path") or "",
                h.get("frame_id") or h["id"],
                *box,
                h.get("camera") or "",
                iso(t) if isinstance(t, (int, float)) else (t or ""),
                h.get("caption") or "",
            ]
        )
    return buf.getvalue()


class CarSearch:
    """`CarSearch().text("red suv seen from the front", k=5)`, `.image("some.jpg", k=5)`."""

    def __init__(
        self,
        index_dir: str | os.PathLike | None = None,
        root: Path | None = None,
        model: str | None = None,
        fallback: bool = False,
    ):
        """`model`: embed queries with this model instead of the one the index was built with: a
        folder, a hub id or a registry URI such as `models:/carsearch-clip@champion` (it must be
        the model that embedded the index, or scores mean nothing: a differing content hash warns).
        `fallback`: when the live version turns out damaged, serve the kept previous version (with a
        warning) instead of failing; the search service does this."""
        self.root = root or repo_root()
        self.fallback = fallback
        self.fell_back_from: str | None = None
        self._override = model
        self.index_uri: str | None = None  # an index on object storage (s3://bucket/prefix, carsearch.index.remote)
        if index_dir is None:
            from carsearch.core.params import load_params

            index_dir = load_params(self.root / "params.yaml")["paths"]["index_dir"]
        if is_uri(index_dir):
            self.index_uri, self.index_dir = str(index_dir).rstrip("/"), None
        else:
            self.index_dir = resolve(index_dir, self.root)
        self.meta: dict = {}
        self._stamp = self._model_key = None
        self._checked = 0.0
        if not self.refresh():
            raise FileNotFoundError(f"no car index at {self.index_uri or self.index_dir} (run `dvc repro` first)")

    def _local_pointer(self):
        """(meta, stamp, version dir, local model dir), or True when unchanged, None when absent."""
        try:
            st = (self.index_dir / META_FILE).stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return True
        meta = read_meta(self.index_dir)
        if not meta:
            return None
        # versioned layout (v-*/ under the index); an index from before versions lives at the top
        vdir = self.index_dir / meta["version"] if meta.get("version") else self.index_dir
        local = vdir / meta["model_dir"] if meta.get("version") else resolve(meta["model_dir"], self.root)
        return meta, stamp, vdir, local

    def _remote_pointer(self):
        """The same from s3://bucket/prefix/carsearch_index.json (checked at most every REMOTE_POLL_S)."""
        import time

        from carsearch.index import remote

        if self._stamp is not None and time.monotonic() - self._checked < REMOTE_POLL_S:
            return True
        meta, etag = remote.get_json(remote.join(self.index_uri, META_FILE))
        self._checked = time.monotonic()
        if not meta:
            return None
        if etag == self._stamp:
            return True
        model_dir = meta.get("model_dir") or MODEL_SUBDIR
        local = (
            remote.fetch_model(self.index_uri, meta)
            if model_dir == MODEL_SUBDIR and not self._override
            else Path(model_dir)
        )
        return meta, etag, remote.join(self.index_uri, meta["version"]), local

    def refresh(self) -> bool:
        """Follow the index pointer (one stat a query; one GET every few seconds for s3://): pick up
        a rebuilt or appended index. While a build runs, or if the pointer vanished, keep serving
        the version already open."""
        got = self._remote_pointer() if self.index_uri else self._local_pointer()
        if got is None:
            return self._stamp is not None
        if got is True:
            return True
        meta, stamp, vdir, local = got
        # the table beside the pointer, or on object storage (index.uri: meta["table_uri"])
        table = connect(meta.get("table_uri") or vdir, read_consistency_interval=timedelta(0)).open_table(meta["table"])
        model_dir = meta["model_dir"]
        key = (str(local) if local.exists() else model_dir, meta.get("content_hash"))
        if self._override:
            key = (self._override, "override")
        if key != self._model_key:
            if not self._override and model_dir == MODEL_SUBDIR and not local.exists():
                raise FileNotFoundError(
                    f"car index {self.index_uri or self.index_dir}: its model folder {local} is missing; "
                    "rebuild it (`dvc repro build_index`)"
                )
            self._use_model(key[0])
            self._model_key = key
            if self._override:
                self._check_override(meta)
        self.meta, self.table, self.version_dir, self._stamp = meta, table, vdir, stamp
        self.calibration = None if self.index_uri else Calibration.load(vdir)  # carsearch.core.confidence
        return True

    def calibrator(self, kind: str = "text"):
        """The calibration of one query kind (core.confidence.QUERY_KINDS; None: it shows no confidence)."""
        cal = getattr(self, "calibration", None)
        return cal.get(kind) if cal is not None else None

    def confidence_note(self, kind: str = "text") -> str | None:
        """Why `kind` queries show no confidence (None: they do)."""
        cal = getattr(self, "calibration", None)
        return cal.note(kind) if cal is not None else no_calibration_note(kind)

    def confidences(self, vector, scores, kind: str = "text") -> list[float | None]:
        """The calibrated confidence of each score of one query vector of `kind` (None: no fit for it)."""
        cal = self.calibrator(kind)
        if cal is None or not len(scores):
            return [None] * len(scores)
        return [None if not np.isfinite(c) else round(float(c), 4) for c in cal.confidence(vector, scores)]

    def _check_override(self, meta: dict) -> None:
        import warnings

        from carsearch.core.io import dir_hash
        from carsearch.model.clip import resolve_model_uri

        local = Path(resolve_model_uri(self._override))
        if local.is_dir() and meta.get("content_hash") and dir_hash(local) != meta["content_hash"]:
            warnings.warn(
                f"{self._override} (hash {dir_hash(local)}) is not the model that built the index "
                f"({meta['content_hash']}): scores compare different embedding spaces",
                stacklevel=3,
            )

    @property
    def model_info(self) -> dict:
        """Which model built the index (fine-tuned or base), why, and its registered version."""
        return {
            k: self.meta.get(k)
            for k in ("model", "model_ref", "content_hash", "registered_model", "promotion", "version")
        }

    def embed_images(self, images) -> np.ndarray:
        """Vectors of images (paths or PIL images) with the model that built the live index."""
        self.refresh()
        return encode_images(self.model, self.processor, list(images))

    # ------------------------------------------------ the model, loaded when a query first needs it
    def _use_model(self, name_or_path: str) -> None:
        """Switch to another model: nothing is loaded until a query needs it (a text or image query
        on a local CLIP folder runs that tower in NumPy, carsearch.model.textenc / visionenc: no
        torch/transformers import)."""
        import threading

        self._model_lock = getattr(self, "_model_lock", None) or threading.RLock()
        with self._model_lock:
            self._model_src, self._model, self._processor = str(name_or_path), None, None
            self._textenc = self._visionenc = None  # NumPy towers for single queries (textenc, visionenc)

    def _load_model(self) -> None:
        with self._model_lock:
            if self._model is None:
                self._model, self._processor = load_pretrained(self._model_src)

    @property
    def model(self):
        if getattr(self, "_model", None) is None:
            self._load_model()
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    @property
    def processor(self):
        if getattr(self, "_processor", None) is None:
            self._load_model()
        return self._processor

    @processor.setter
    def processor(self, value) -> None:
        self._processor = value

    def _light(self, attr: str, load):
        """The NumPy tower kept in `attr` (loaded once per model by `load(folder)`), while torch is
        not loaded and the model is a local folder; None otherwise (then the transformers model)."""
        if self._model is not None or not Path(self._model_src).is_dir():
            return None
        with self._model_lock:
            if getattr(self, attr) is None:
                setattr(self, attr, load(self._model_src) or False)
        return getattr(self, attr) or None

    def _text_vector(self, query: str) -> np.ndarray:
        from carsearch.model.textenc import ClipTextNP

        enc = self._light("_textenc", ClipTextNP.load)
        return enc.encode([query])[0] if enc else encode_texts(self.model, self.processor, [query])[0]

    def _image_vector(self, image) -> np.ndarray:
        """One image query: the NumPy vision tower while torch is not loaded (carsearch.model.visionenc)."""
        from carsearch.model.visionenc import ClipVisionNP

        enc = self._light("_visionenc", ClipVisionNP.load)
        return enc.encode([image])[0] if enc else encode_images(self.model, self.processor, [image])[0]

    def _ann_params(self, nprobes: int | None, refine_factor: int | None) -> tuple[int | None, int | None]:
        """Per-query ANN knobs: the arguments, else the index's own (`index.nprobes`,
        `index.refine_factor`, stored in the index meta at build time)."""
        out = []
        for name, v in (("nprobes", nprobes), ("refine_factor", refine_factor)):
            v = self.meta.get(name) if v is None else v
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise QueryError(f"{name}: expected a whole number >= 0 (0: lance's default), got {v!r}")
            out.append(int(v) if v else None)
        return out[0], out[1]

    def has_fts(self) -> bool:
        """Whether the open table has a full-text index on `caption` (indices built since the FTS index)."""
        key = (str(getattr(self, "version_dir", "")), self.table.version if hasattr(self.table, "version") else None)
        if getattr(self, "_fts_key", None) != key:
            self._fts = any(
                str(i.index_type).upper() == "FTS" and "caption" in i.columns for i in self.table.list_indices()
            )
            self._fts_key = key
        return self._fts

    def _search(
        self,
        vector,
        k: int,
        where: str | None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        hybrid_text: str | None = None,
        min_confidence: float | None = None,
        kind: str = "text",
    ) -> list[Hit]:
        nprobes, refine = self._ann_params(nprobes, refine_factor)
        if hybrid_text is not None and not self.has_fts():
            raise QueryError(
                "hybrid search needs the full-text index on captions, which this index was built without; "
                "rebuild it (`dvc repro build_index`, index.fts: true)"
            )
        cols = self.columns([c for c in RESULT_COLUMNS if c != "_distance" or hybrid_text is None])

        def run():
            if hybrid_text is None:
                q = self.table.search(vector)
            else:  # vector + full-text (BM25) results fused by reciprocal rank
                q = self.table.search(query_type="hybrid").vector(vector).text(hybrid_text)
            q = q.distance_type(self.meta.get("metric", "cosine"))
            if nprobes:
                q = q.nprobes(nprobes)
            if refine:
                q = q.refine_factor(refine)
            q = q.select(cols).limit(k)
            return (q.where(where, prefilter=True) if where else q).to_list()

        rows = self._run_retrying(run)  # once more if the version this query started on was pruned meanwhile
        hits = []
        for rank, r in enumerate(rows, 1):
            score = float(r["_relevance_score"]) if "_relevance_score" in r else 1.0 - float(r["_distance"])
            extra = {c: r[c] for c in VEHICLE_COLUMNS if c in r and r[c] is not None}
            hits.append(Hit(rank, score, r["id"], r["caption"], r["path"], json.loads(r["labels_json"]), **extra))
        if hybrid_text is None:  # a fused rank score is not a cosine: no calibrated confidence
            cal = self.calibrator(kind)
            for h, c in zip(hits, self.confidences(vector, [h.score for h in hits], kind)):
                h.confidence, h.confident = c, cal is not None and cal.confident(c)
        if min_confidence is not None:
            if hybrid_text is not None:
                raise QueryError("min_confidence: hybrid results have no calibrated confidence (a fused rank score)")
            hits = [h for h in hits if h.confidence is not None and h.confidence >= min_confidence]
        return hits

    def has_tracks(self) -> bool:
        """This version's table has video tracks (first_seen / last_seen columns)."""
        return "last_seen" in self._column_names()

    def _column_names(self) -> set[str]:
        """The live table's columns; none when it cannot be read (the query that follows then meets
        the damage in `_run_retrying`, which says so or falls back)."""
        try:
            return set(self.table.schema.names)
        except (RuntimeError, OSError):
            return set()

    def columns(self, base) -> list[str]:
        """`base` plus the vehicle columns this version's table has (older tables lack them)."""
        names = self._column_names()
        return [*base, *(c for c in VEHICLE_COLUMNS if c in names and c not in base)]

    def text(
        self,
        query: str,
        k: int = 5,
        where: str | None = None,
        *,
        hybrid: bool = False,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        camera: str | list[str] | None = None,
        after: float | str | None = None,
        before: float | str | None = None,
        min_confidence: float | None = None,
    ) -> list[Hit]:
        """The k images (vehicles, where the index has boxes) nearest to a text query. `hybrid=True`
        fuses the vector search with a full-text search of the captions (reciprocal-rank fusion;
        score = fused relevance, not cosine). `nprobes` / `refine_factor` tune the ANN index per
        query (defaults: the index's). `camera`, `after`, `before`: only hits from those cameras,
        captured in [after, before) (unix seconds or text such as 2026-01-02T10:00)."""
        self.refresh()  # a rebuilt index may come with a new model: encode with the one that built it
        query = check_text(query)  # one-line QueryError (a ValueError)
        where = combine(check_where(where), scope_where(camera, after, before, self.has_tracks()))
        return self._search(
            self._text_vector(query),
            k,
            where,
            nprobes,
            refine_factor,
            hybrid_text=query if hybrid else None,
            min_confidence=check_confidence(min_confidence),
        )

    def hybrid(self, query: str, k: int = 5, where: str | None = None, **kw) -> list[Hit]:
        """`text(query, k, where, hybrid=True)`: vector + full-text search of the captions."""
        return self.text(query, k, where, hybrid=True, **kw)

    def image(
        self,
        path: str | os.PathLike,
        k: int = 5,
        where: str | None = None,
        *,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        camera: str | list[str] | None = None,
        after: float | str | None = None,
        before: float | str | None = None,
        min_confidence: float | None = None,
    ) -> list[Hit]:
        """The k images (or vehicles) nearest to a query image; filters as in `text()`."""
        self.refresh()
        path = check_image(path)
        where = combine(check_where(where), scope_where(camera, after, before, self.has_tracks()))
        return self._search(
            self._image_vector(path),
            k,
            where,
            nprobes,
            refine_factor,
            min_confidence=check_confidence(min_confidence),
            kind="image",
        )

    # ------------------------------------------------------------ used by the search service (carsearch.serve)
    ROW_COLUMNS = (
        "id",
        "path",
        "caption",
        "split",
        "make",
        "model",
        "model_id",
        "body_type",
        "color",
        "view",
        "scene",
        "labels_json",
        "origin",
    )

    def _run_retrying(self, run):
        """`run()` against the open table; once more on the new version if the one it started on was
        pruned; a version that still cannot be read is damaged (`_damaged`)."""

        def missing_file(e: Exception) -> bool:
            return "Not found" in str(e) or "No such file" in str(e)

        try:
            return run()
        except (RuntimeError, OSError) as e:
            if not missing_file(e):
                raise
            version = self.meta.get("version")
            self._stamp = None
            self.refresh()
            try:
                return run()
            except (RuntimeError, OSError) as again:
                if self.meta.get("version") != version or not missing_file(again):
                    raise
                self._damaged(again)
                return run()

    def _previous_version(self) -> Path | None:
        """The newest kept version folder older than the live one (`index.keep_versions` keeps it)."""
        if self.index_dir is None or not self.meta.get("version"):
            return None
        older = sorted(p for p in self.index_dir.glob("v-*") if p.is_dir() and p.name < self.meta["version"])
        return older[-1] if older else None

    def _damaged(self, e: Exception) -> None:
        """The live version cannot be read: fall back to the previous one (the service) or say which
        version is damaged and how to fix it."""
        version, where = self.meta.get("version"), self.version_dir
        prev = self._previous_version()
        why = f"car index version {version} ({where}) is damaged: {_lance_reason(e)}"
        fix = "rebuild it: `dvc repro -f -s build_index`"
        if not (self.fallback and prev is not None):
            also = (
                f", or use the kept previous version {prev.name} (`carsearch serve` falls back to it)" if prev else ""
            )
            raise IndexDamagedError(f"{why}; {fix}{also}") from None
        import warnings

        meta = {**self.meta, "version": prev.name, "model_dir": MODEL_SUBDIR, "content_hash": None}
        table = connect(prev, read_consistency_interval=timedelta(0)).open_table(meta["table"])
        if not self._override and (prev / MODEL_SUBDIR).is_dir():
            self._use_model(str(prev / MODEL_SUBDIR))
            self._model_key = (str(prev / MODEL_SUBDIR), None)
        self.meta, self.table, self.version_dir = meta, table, prev  # stamp kept: a new build is picked up
        self.fell_back_from = version
        warnings.warn(f"{why}; serving the previous version {prev.name} meanwhile; {fix}", stacklevel=3)

    def search_vector(
        self,
        vector,
        k: int = 10,
        offset: int = 0,
        where: str | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        scope: str | None = None,
        kind: str = "text",
    ) -> list[dict]:
        """Rows `offset .. offset+k` (metadata columns, no vector) nearest to a query vector, best first,
        each with `score` (1 - distance); `where` is checked by the filter grammar first; `scope` is a
        clause made by `query.scope_where` (camera, time range); the ANN knobs default to the index's;
        `confidence` is from the calibration of the query's `kind` (core.confidence.query_kind)."""
        where = combine(check_where(where), scope)
        row_cols = self.columns(self.ROW_COLUMNS)
        vec = np.asarray(vector, np.float32)
        nprobes, refine = self._ann_params(nprobes, refine_factor)

        def run():
            q = self.table.search(vec).distance_type(self.meta.get("metric", "cosine"))
            if nprobes:
                q = q.nprobes(nprobes)
            if refine:
                q = q.refine_factor(refine)
            q = q.select([*row_cols, "_distance"]).limit(int(offset) + int(k))
            return (q.where(where, prefilter=True) if where else q).to_arrow()

        cols = self._run_retrying(run).to_pydict()
        n = len(cols["_distance"])
        conf = self.confidences(vec, [1.0 - float(d) for d in cols["_distance"]], kind)
        return [
            {**{c: cols[c][i] for c in row_cols}, "score": 1.0 - float(cols["_distance"][i]), "confidence": conf[i]}
            for i in range(int(offset), n)
        ]

    def get_row(self, image_id: str, vector: bool = False) -> dict | None:
        """The row of an indexed image by its id (None when unknown); `vector=True` adds its vector."""
        from carsearch.index.query import quote

        cols = self.columns(self.ROW_COLUMNS) + (["vector"] if vector else [])

        def run():
            return self.table.search().where(f"id = {quote(image_id)}").select(cols).limit(1).to_list()

        rows = self._run_retrying(run)
        return rows[0] if rows else None

    def embed_texts(self, texts) -> np.ndarray:
        """Vectors of texts with the model that built the live index."""
        self.refresh()
        return encode_texts(self.model, self.processor, [check_text(t) for t in texts])


def search(
    query: str | None = None,
    image: str | os.PathLike | None = None,
    k: int = 5,
    where: str | None = None,
    index_dir: str | os.PathLike | None = None,
    *,
    hybrid: bool = False,
    nprobes: int | None = None,
    refine_factor: int | None = None,
    model: str | None = None,
    camera: str | list[str] | None = None,
    after: float | str | None = None,
    before: float | str | None = None,
    min_confidence: float | None = None,
    searcher: CarSearch | None = None,
) -> list[Hit]:
    """One-shot search by text or by image (`model`: see CarSearch; `camera`, `after`, `before`: see
    `text`; `searcher`: an open CarSearch to use, e.g. to read its calibrator afterwards)."""
    if query is None and image is None:
        raise QueryError("nothing to search for: give a text query or --image")
    if query is not None and image is not None:
        raise QueryError("give a text query or --image, not both")
    if hybrid and query is None:
        raise QueryError("hybrid search needs a text query (it matches the captions)")
    s = searcher if searcher is not None else CarSearch(index_dir, model=model)
    kw = {"nprobes": nprobes, "refine_factor": refine_factor, "camera": camera, "after": after, "before": before}
    kw["min_confidence"] = min_confidence
    return s.text(query, k, where, hybrid=hybrid, **kw) if query is not None else s.image(image, k, where, **kw)
