"""Search the car index by text or by image (the CLI and Python API share this)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .index import META_FILE
from .model import encode_images, encode_texts, load_pretrained
from .paths import repo_root, resolve


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
        import lancedb

        self.root = root or repo_root()
        if index_dir is None:
            from .params import load_params

            index_dir = load_params(self.root / "params.yaml")["paths"]["index_dir"]
        self.index_dir = resolve(index_dir, self.root)
        meta_path = self.index_dir / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no car index at {self.index_dir} (run `dvc repro` first)")
        self.meta = json.loads(meta_path.read_text())
        self.table = lancedb.connect(str(self.index_dir)).open_table(self.meta["table"])
        # the promoted model: the fine-tuned dir, the base model saved in the index, or a hub id
        local = resolve(self.meta["model_dir"], self.root)
        self.model, self.processor = load_pretrained(local if local.exists() else self.meta["model_dir"])

    @property
    def model_info(self) -> dict:
        """Which model built the index (fine-tuned or base), why, and its registered version."""
        return {k: self.meta.get(k) for k in ("model", "model_ref", "content_hash", "registered_model", "promotion")}

    def _search(self, vector, k: int, where: str | None) -> list[Hit]:
        q = self.table.search(vector).distance_type(self.meta.get("metric", "cosine")).limit(k)
        if where:
            q = q.where(where, prefilter=True)
        hits = []
        for rank, r in enumerate(q.to_list(), 1):
            hits.append(Hit(rank, 1.0 - float(r["_distance"]), r["id"], r["caption"], r["path"], json.loads(r["labels_json"])))
        return hits

    def text(self, query: str, k: int = 5, where: str | None = None) -> list[Hit]:
        return self._search(encode_texts(self.model, self.processor, [query])[0], k, where)

    def image(self, path: str | os.PathLike, k: int = 5, where: str | None = None) -> list[Hit]:
        return self._search(encode_images(self.model, self.processor, [Path(path)])[0], k, where)


def search(query: str | None = None, image: str | os.PathLike | None = None, k: int = 5, where: str | None = None,
           index_dir: str | os.PathLike | None = None) -> list[Hit]:
    """One-shot search by text or by image."""
    if (query is None) == (image is None):
        raise ValueError("give exactly one of a text query or an image")
    s = CarSearch(index_dir)
    return s.text(query, k, where) if query is not None else s.image(image, k, where)
