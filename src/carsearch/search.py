"""Search the car index by text or by image (the CLI and Python API share this)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from .index import META_FILE, MODEL_SUBDIR, read_meta
from .model import encode_images, encode_texts, load_pretrained
from .paths import repo_root, resolve
from .query import QueryError, check_image, check_text, check_where


@dataclass
class Hit:
    rank: int
    score: float
    id: str
    caption: str
    path: str
    labels: dict


class CarSearch:
    """`CarSearch().text("red suv seen from the front", k=5)`, `.image("some.jpg", k=5)`."""

    def __init__(self, index_dir: str | os.PathLike | None = None, root: Path | None = None):
        self.root = root or repo_root()
        if index_dir is None:
            from .params import load_params

            index_dir = load_params(self.root / "params.yaml")["paths"]["index_dir"]
        self.index_dir = resolve(index_dir, self.root)
        self.meta: dict = {}
        self._stamp = self._model_key = None
        if not self.refresh():
            raise FileNotFoundError(f"no car index at {self.index_dir} (run `dvc repro` first)")

    def refresh(self) -> bool:
        """Follow the index pointer (one stat a query): pick up a rebuilt or appended index. While a
        build runs, or if the pointer vanished, keep serving the version already open."""
        try:
            st = (self.index_dir / META_FILE).stat()
        except FileNotFoundError:
            return self._stamp is not None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return True
        meta = read_meta(self.index_dir)
        if not meta:
            return self._stamp is not None
        import lancedb

        # versioned layout (v-*/ under the index); an index from before versions lives at the top
        vdir = self.index_dir / meta["version"] if meta.get("version") else self.index_dir
        table = lancedb.connect(str(vdir), read_consistency_interval=timedelta(0)).open_table(meta["table"])
        model_dir = meta["model_dir"]
        local = vdir / model_dir if meta.get("version") else resolve(model_dir, self.root)
        key = (str(local) if local.exists() else model_dir, meta.get("content_hash"))
        if key != self._model_key:
            if model_dir == MODEL_SUBDIR and not local.exists():
                raise FileNotFoundError(f"car index {self.index_dir}: its model folder {local} is missing; rebuild it "
                                        "(`dvc repro build_index`)")
            self.model, self.processor = load_pretrained(key[0])
            self._model_key = key
        self.meta, self.table, self.version_dir, self._stamp = meta, table, vdir, stamp
        return True

    @property
    def model_info(self) -> dict:
        """Which model built the index (fine-tuned or base), why, and its registered version."""
        return {k: self.meta.get(k) for k in ("model", "model_ref", "content_hash", "registered_model", "promotion", "version")}

    def embed_images(self, images) -> np.ndarray:
        """Vectors of images (paths or PIL images) with the model that built the live index."""
        self.refresh()
        return encode_images(self.model, self.processor, list(images))

    def _search(self, vector, k: int, where: str | None) -> list[Hit]:
        def run():
            q = self.table.search(vector).distance_type(self.meta.get("metric", "cosine")).limit(k)
            return (q.where(where, prefilter=True) if where else q).to_list()

        try:
            rows = run()
        except (RuntimeError, OSError) as e:  # the version this query started on was pruned meanwhile
            if "Not found" not in str(e) and "No such file" not in str(e):
                raise
            self._stamp = None
            self.refresh()
            rows = run()
        hits = []
        for rank, r in enumerate(rows, 1):
            hits.append(Hit(rank, 1.0 - float(r["_distance"]), r["id"], r["caption"], r["path"], json.loads(r["labels_json"])))
        return hits

    def text(self, query: str, k: int = 5, where: str | None = None) -> list[Hit]:
        self.refresh()  # a rebuilt index may come with a new model: encode with the one that built it
        query, where = check_text(query), check_where(where)  # one-line QueryError (a ValueError)
        return self._search(encode_texts(self.model, self.processor, [query])[0], k, where)

    def image(self, path: str | os.PathLike, k: int = 5, where: str | None = None) -> list[Hit]:
        self.refresh()
        path, where = check_image(path), check_where(where)
        return self._search(encode_images(self.model, self.processor, [path])[0], k, where)

    # ------------------------------------------------------------ used by the search service (carsearch.serve)
    ROW_COLUMNS = ("id", "path", "caption", "split", "make", "model", "model_id", "body_type", "color", "view", "scene",
                   "labels_json", "origin")

    def _run_retrying(self, run):
        """`run()` against the open table; once more on the new version if the one it started on was pruned."""
        try:
            return run()
        except (RuntimeError, OSError) as e:
            if "Not found" not in str(e) and "No such file" not in str(e):
                raise
            self._stamp = None
            self.refresh()
            return run()

    def search_vector(self, vector, k: int = 10, offset: int = 0, where: str | None = None) -> list[dict]:
        """Rows `offset .. offset+k` (metadata columns, no vector) nearest to a query vector, best first,
        each with `score` (1 - distance); `where` is checked by the filter grammar first."""
        where = check_where(where)
        vec = np.asarray(vector, np.float32)

        def run():
            q = (self.table.search(vec).distance_type(self.meta.get("metric", "cosine"))
                 .select(list(self.ROW_COLUMNS)).limit(int(offset) + int(k)))
            return (q.where(where, prefilter=True) if where else q).to_list()

        rows = self._run_retrying(run)[int(offset):]
        return [{**{c: r.get(c) for c in self.ROW_COLUMNS}, "score": 1.0 - float(r["_distance"])} for r in rows]

    def get_row(self, image_id: str, vector: bool = False) -> dict | None:
        """The row of an indexed image by its id (None when unknown); `vector=True` adds its vector."""
        from .query import quote

        cols = list(self.ROW_COLUMNS) + (["vector"] if vector else [])

        def run():
            return self.table.search().where(f"id = {quote(image_id)}").select(cols).limit(1).to_list()

        rows = self._run_retrying(run)
        return rows[0] if rows else None

    def embed_texts(self, texts) -> np.ndarray:
        """Vectors of texts with the model that built the live index."""
        self.refresh()
        return encode_texts(self.model, self.processor, [check_text(t) for t in texts])


def search(query: str | None = None, image: str | os.PathLike | None = None, k: int = 5, where: str | None = None,
           index_dir: str | os.PathLike | None = None) -> list[Hit]:
    """One-shot search by text or by image."""
    if query is None and image is None:
        raise QueryError("nothing to search for: give a text query or --image")
    if query is not None and image is not None:
        raise QueryError("give a text query or --image, not both")
    s = CarSearch(index_dir)
    return s.text(query, k, where) if query is not None else s.image(image, k, where)
