"""Search the car index by text or by image: the one query path of the CLI, the Python API and the
search service. `CarSearch` joins an index handle (`index.handle`: pointer, version, fallback) and a
query encoder (`index.encoder`: model lifecycle, NumPy towers, the text LRU); `CarSearch.search(vector,
k, filters)` is the one query builder. Every check of what a caller asks runs here, once, before any
model loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from carsearch.core.columns import ROW
from carsearch.core.confidence import no_calibration_note
from carsearch.core.paths import repo_root
from carsearch.index.encoder import TEXT_CACHE_SIZE, QueryEncoder
from carsearch.index.handle import IndexDamagedError, IndexHandle  # noqa: F401  (IndexDamagedError: its old home)
from carsearch.index.planning import Plan, QueryPlanner  # noqa: F401  (Plan: its old home)
from carsearch.index.plates import IndexPlates, plate_rows
from carsearch.index.query import (
    QueryError,
    check_image,
    check_text,
    motion_words,
)
from carsearch.index.results import Hit, hits_csv, make_hit  # noqa: F401  (hits_csv: its old home)

# what a search returns: every metadata column the table has (never the vector)
SELECT = tuple(c for c in ROW.metadata)


def index_location(root: Path) -> str:
    """`paths.index_dir` of the repo's params.yaml (checked, typed)."""
    from carsearch.core.params import load_config

    return load_config(root / "params.yaml").paths.index_dir


class CarSearch(QueryPlanner):
    """`CarSearch().text("red suv seen from the front", k=5)`, `.image("some.jpg", k=5)`."""

    def __init__(
        self,
        index_dir: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        model: str | None = None,
        fallback: bool = False,
        text_cache_size: int = TEXT_CACHE_SIZE,
        plate_search=None,
    ):
        """`model`: embed queries with this model instead of the one the index was built with: a
        folder, a hub id or a registry URI such as `models:/carsearch-clip@champion` (it must be
        the model that embedded the index, or scores mean nothing: a differing content hash warns).
        `fallback`: when the live version turns out damaged, serve the kept previous version (with a
        warning) instead of failing; the search service does this."""
        self.root = Path(root) if root is not None else repo_root()
        location = index_dir if index_dir is not None else index_location(self.root)
        self.index = IndexHandle(location, self.root, fallback=fallback, fetch_model=not model)
        self.encoder = QueryEncoder(text_cache_size)
        self.plate_settings = plate_search  # None: index.plate_search of the repo's params.yaml
        self._plates = IndexPlates()  # the distinct plates, per index version
        self._override = model
        if not self.refresh():
            raise FileNotFoundError(f"no car index at {self.index.where} (run `dvc repro` first)")

    # ---------------------------------------------------------------- the index and its model
    def refresh(self) -> bool:
        """Follow the index pointer and switch to the model that built the version it names."""
        if not self.index.refresh():
            return False
        self._follow_model()
        return True

    def _follow_model(self) -> None:
        if self._override:
            if self.encoder.use((self._override, "override"), self._override):
                self._check_override()
        elif self.index.model_source is not None:
            self.encoder.use(self.index.model_source, self.index.model_source[0])

    def _check_override(self) -> None:
        import warnings

        from carsearch.core.io import dir_hash
        from carsearch.model.clip import resolve_model_uri

        local, built = Path(resolve_model_uri(self._override)), self.index.meta.get("content_hash")
        if local.is_dir() and built and dir_hash(local) != built:
            warnings.warn(
                f"{self._override} (hash {dir_hash(local)}) is not the model that built the index "
                f"({built}): scores compare different embedding spaces",
                stacklevel=4,
            )

    meta = property(lambda self: self.index.meta)
    table = property(lambda self: self.index.table)
    version_dir = property(lambda self: self.index.version_dir)
    index_dir = property(lambda self: self.index.index_dir)
    index_uri = property(lambda self: self.index.index_uri)
    calibration = property(lambda self: self.index.calibration)
    fell_back_from = property(lambda self: self.index.fell_back_from)
    model = property(lambda self: self.encoder.model)
    processor = property(lambda self: self.encoder.processor)
    has_fts = property(lambda self: self.index.has_fts)
    has_tracks = property(lambda self: self.index.has_tracks)

    def calibrator(self, kind: str = "text"):
        """The calibration of one query kind (core.confidence.QUERY_KINDS; None: it shows no confidence)."""
        return self.calibration.get(kind) if self.calibration is not None else None

    def confidence_note(self, kind: str = "text") -> str | None:
        """Why `kind` queries show no confidence (None: they do)."""
        return self.calibration.note(kind) if self.calibration is not None else no_calibration_note(kind)

    @property
    def model_info(self) -> dict:
        """Which model built the index (fine-tuned or base), why, and its registered version."""
        keys = ("model", "model_ref", "content_hash", "registered_model", "promotion", "version")
        return {k: self.meta.get(k) for k in keys}

    def embed_images(self, images) -> np.ndarray:
        """Vectors of images (paths or PIL images) with the model that built the live index."""
        self.refresh()
        return self.encoder.images(images)

    def embed_texts(self, texts) -> np.ndarray:
        """Vectors of texts with the model that built the live index."""
        self.refresh()
        return self.encoder.texts(texts)

    def get_row(self, image_id: str, vector: bool = False) -> dict | None:
        """The row of an indexed image by its id (None when unknown); `vector=True` adds its vector."""
        return self.index.get_row(image_id, self.index.columns(SELECT) + (["vector"] if vector else []))

    # ---------------------------------------------------------------- the one query builder
    def search(
        self,
        vector,
        k: int = 10,
        filters: dict | None = None,
        *,
        exclude: str | None = None,
        plan: Plan | None = None,
        **checks,
    ) -> list[dict]:
        """The k rows nearest to a query vector, best first: every metadata column the table has,
        `score` (1 - cosine distance, or the fused rank score of a hybrid query), `confidence`
        (calibrated; None without a calibration) and `confident`. `filters`, `where`, `after`,
        `before`, `nprobes`, `refine_factor`, `hybrid_text`, `min_confidence` as in `plan`;
        `exclude`: an id left out (more like this)."""
        plan = plan or self.plan(filters, **checks)
        vec = np.asarray(vector, np.float32)
        cols = self.index.columns(SELECT) + ([] if plan.hybrid_text is not None else ["_distance"])
        n = int(k) + (1 if exclude else 0)

        def run():
            if plan.hybrid_text is None:
                q = self.table.search(vec)
            else:  # vector + full-text (BM25) results fused by reciprocal rank
                q = self.table.search(query_type="hybrid").vector(vec).text(plan.hybrid_text)
            q = q.distance_type(self.meta.get("metric", "cosine"))
            q = q.nprobes(plan.nprobes) if plan.nprobes else q
            q = q.refine_factor(plan.refine_factor) if plan.refine_factor else q
            q = q.bypass_vector_index() if plan.exact and plan.hybrid_text is None else q
            q = q.select(cols).limit(n)
            return (q.where(plan.where, prefilter=True) if plan.where else q).to_list()

        rows = self.index.run(run)  # once more if the version it started on was pruned; damage: fallback
        self._follow_model()
        rows = [r for r in rows if r["id"] != exclude][: int(k)] if exclude else rows
        for r in rows:
            r["score"] = float(r.pop("_relevance_score")) if plan.hybrid_text else 1.0 - float(r.pop("_distance"))
        self._confidences(vec, rows, plan.kind if plan.hybrid_text is None else None)
        if plan.min_confidence is not None:
            rows = [r for r in rows if r["confidence"] is not None and r["confidence"] >= plan.min_confidence]
        return rows

    def plate_rows(self, k: int, plan: Plan) -> list[dict]:
        """A plate-only query (no text, no image): the rows the plan's plate filter selects, nearest
        plate first (then earliest, then id); `score` = 1 / (1 + plate distance), no confidence."""
        if plan.plates is None:
            raise QueryError("nothing to search for: give a text query, an image or a plate")
        return plate_rows(self.index, plan.where, plan.plates, k, self.index.columns(SELECT))

    def _confidences(self, vec, rows: list[dict], kind: str | None) -> None:
        """Each row's calibrated confidence from the fit of the query's `kind` (None: a hybrid query,
        whose fused rank score is not a cosine, or a kind without a fit: no confidence)."""
        cal = self.calibrator(kind) if kind is not None else None
        conf = [None] * len(rows)
        if cal is not None and rows:
            conf = [
                None if not np.isfinite(c) else round(float(c), 4)
                for c in cal.confidence(vec, [r["score"] for r in rows])
            ]
        for r, c in zip(rows, conf):
            r["confidence"], r["confident"] = c, cal is not None and cal.confident(c)

    def confidences(self, vector, scores, kind: str = "text") -> list[float | None]:
        """The calibrated confidence of each score of one query vector of `kind` (None: no fit for it)."""
        rows = [{"score": s} for s in scores]
        self._confidences(np.asarray(vector, np.float32), rows, kind)
        return [r["confidence"] for r in rows]

    # ---------------------------------------------------------------- text and image queries
    def _scoped(self, filters, camera, plate=None) -> dict:
        cams = [camera] if isinstance(camera, str) else [c for c in (camera or []) if c]
        plates = {"plate": [plate] if isinstance(plate, str) else list(plate)} if plate else {}
        return {**(filters or {}), **({"camera": cams} if cams else {}), **plates}

    def plate(
        self, plate, k: int = 5, where: str | None = None, *, filters=None, camera=None, after=None, before=None
    ) -> list[Hit]:
        """The k vehicles whose plate is nearest to `plate` (wildcards `*` `?`; OCR look-alikes
        cheap: carsearch.index.plates), filtered as in `text()`; no model loads."""
        self.refresh()
        plan = self._plan(where, "plate", filters=filters, camera=camera, plate=plate, after=after, before=before)
        return [make_hit(i, r) for i, r in enumerate(self.plate_rows(k, plan), 1)]

    def _plan(
        self,
        where: str | None,
        kind: str = "text",
        hybrid_text: str | None = None,
        *,
        filters=None,
        camera=None,
        plate=None,
        after=None,
        before=None,
        nprobes=None,
        refine_factor=None,
        min_confidence=None,
    ) -> Plan:
        """The checked plan of a text or image query: the one list of what such a query takes.
        `filters`: {column: value or values} (carsearch.core.columns' filter columns); `camera`,
        `after`, `before`: only hits from those cameras, captured in [after, before) (unix seconds or
        text such as 2026-01-02T10:00); `plate`: only vehicles whose plate matches (wildcards, OCR
        look-alikes: carsearch.index.plates); `nprobes` / `refine_factor` tune the ANN index per query
        (defaults: the index's); `min_confidence`: only hits at least this confident."""
        return self.plan(
            self._scoped(filters, camera, plate),
            where,
            after=after,
            before=before,
            nprobes=nprobes,
            refine_factor=refine_factor,
            hybrid_text=hybrid_text,
            min_confidence=min_confidence,
            kind=kind,
        )

    def understand(self, query: str, filters: dict | None = None) -> tuple[str, dict, list[dict]]:
        """A text query's motion words ("heading north", "driving away", "parked": query.motion_words)
        as filters, where this index knows that motion (some track has the column) and the caller's
        `filters` do not already set the column: (the text to embed, the filters with them, what was
        read: [{"phrase", "column", "value", "applied", "note"}]). An unknown motion stays in the text."""
        text, found, said = motion_words(query)
        filters = dict(filters or {})
        for s in said:
            col = s["column"]
            s["applied"] = bool(not filters.get(col) and self.index.knows(col))
            if s["applied"]:
                filters[col] = [s["value"]]
                s["note"] = f"{s['phrase']!r}: only tracks with {col} = {s['value']}"
            elif filters.get(col):
                s["note"] = f"{s['phrase']!r}: left to the {col} filter given"
            else:
                s["note"] = f"{s['phrase']!r}: no track of this index has a {col} (searched as words)"
        if not all(s["applied"] for s in said):  # strip only the phrases that became filters
            text = motion_words(query, {s["column"] for s in said if s["applied"]})[0]
        return text, filters, said

    def text(
        self,
        query: str,
        k: int = 5,
        where: str | None = None,
        *,
        hybrid: bool = False,
        understand: bool = True,
        **scope,
    ) -> list[Hit]:
        """The k images (vehicles, where the index has boxes) nearest to a text query. `hybrid=True`
        fuses the vector search with a full-text search of the captions (reciprocal-rank fusion;
        score = fused relevance, not cosine). `understand`: motion words become filters (`understand()`).
        `scope`: `filters`, `camera`, `plate`, `after`, `before`, `nprobes`, `refine_factor`,
        `min_confidence` (see `_plan`)."""
        self.refresh()  # a rebuilt index may come with a new model: encode with the one that built it
        query = check_text(query)  # one-line QueryError (a ValueError)
        if understand:
            query, scope["filters"], _ = self.understand(query, scope.get("filters"))
        plan = self._plan(where, hybrid_text=query if hybrid else None, **scope)
        rows = self.search(self.encoder.text(query), k, plan=plan)
        return [make_hit(i, r) for i, r in enumerate(rows, 1)]

    def hybrid(self, query: str, k: int = 5, where: str | None = None, **kw) -> list[Hit]:
        """`text(query, k, where, hybrid=True)`: vector + full-text search of the captions."""
        return self.text(query, k, where, hybrid=True, **kw)

    def image(self, path: str | os.PathLike, k: int = 5, where: str | None = None, **scope) -> list[Hit]:
        """The k images (or vehicles) nearest to a query image; `scope` as in `text()`."""
        self.refresh()
        path = check_image(path)
        rows = self.search(self.encoder.image(path), k, plan=self._plan(where, "image", **scope))
        return [make_hit(i, r) for i, r in enumerate(rows, 1)]


def search(
    query: str | None = None,
    image: str | os.PathLike | None = None,
    k: int = 5,
    where: str | None = None,
    index_dir: str | os.PathLike | None = None,
    *,
    hybrid: bool = False,
    model: str | None = None,
    searcher: CarSearch | None = None,
    **kw,
) -> list[Hit]:
    """One-shot search by text or by image (`model`: see CarSearch; `filters`, `camera`, `after`,
    `before`, `nprobes`, `refine_factor`, `min_confidence`: see `CarSearch.text`; `searcher`: an
    open CarSearch to use, e.g. to read its calibration afterwards)."""
    plate = kw.get("plate") or (kw.get("filters") or {}).get("plate")
    if query is None and image is None and not plate:
        raise QueryError("nothing to search for: give a text query, --image or --plate")
    if query is not None and image is not None:
        raise QueryError("give a text query or --image, not both")
    if hybrid and query is None:
        raise QueryError("hybrid search needs a text query (it matches the captions)")
    s = searcher if searcher is not None else CarSearch(index_dir, model=model)
    if query is None and image is None:  # a plate alone: ranked by plate distance, no model
        for knob in ("nprobes", "refine_factor", "min_confidence"):
            if kw.pop(knob, None) is not None:
                raise QueryError(f"{knob}: a plate-only search has no vector (give a text query or an image)")
        return s.plate(kw.pop("plate", None), k, where, **kw)
    return s.text(query, k, where, hybrid=hybrid, **kw) if query is not None else s.image(image, k, where, **kw)
