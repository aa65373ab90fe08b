"""Query vectors with the model that embedded the index: one encoder for the CLI, the Python API and
the search service. The model loads when a query first needs it; a text or image query on a local
CLIP folder runs that tower in NumPy (carsearch.model.textenc / visionenc: no torch or transformers
import, a fast cold start, docs/scale.md); texts are kept in an LRU keyed by model and text."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from carsearch.index.query import check_text

TEXT_CACHE_SIZE = 1024  # texts kept per encoder (the service sets serve.text_cache_size)


class QueryEncoder:
    """`use(key, model)` switches model (nothing loads until a query); `text(q)`, `image(picture)`
    embed one query; `texts` / `images` embed batches with the transformers model."""

    def __init__(self, text_cache_size: int = TEXT_CACHE_SIZE):
        self.key = None  # (model folder or hub id, content hash): which model the vectors come from
        self.text_cache_size = int(text_cache_size)
        self._lock = threading.RLock()
        self._cache: OrderedDict = OrderedDict()
        self._src, self._model, self._processor, self._towers = None, None, None, {}

    def use(self, key, name_or_path: str) -> bool:
        """Switch to another model (a no-op for the same key); True when it changed."""
        with self._lock:
            if key == self.key:
                return False
            self.key, self._src = key, str(name_or_path)
            self._model = self._processor = None
            self._towers = {}
            return True

    @property
    def loaded(self) -> bool:
        """A text and an image query answer without loading anything (the model or both NumPy towers)."""
        return self._model is not None or (self._towers.get("text") is not None and "vision" in self._towers)

    @property
    def model_loaded(self) -> bool:
        """The transformers model is loaded (a batch of texts then costs one forward pass)."""
        return self._model is not None

    # ------------------------------------------------ the transformers model, loaded on first need
    def _load(self) -> None:
        from carsearch.model.clip import load_pretrained  # torch and transformers: only now

        with self._lock:
            if self._model is None:
                self._model, self._processor = load_pretrained(self._src)

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._load()
        return self._processor

    def _tower(self, kind: str):
        """The NumPy tower (`text` or `vision`, loaded once per model) while torch is not loaded and
        the model is a local folder; None otherwise (then the transformers model)."""
        if self._model is not None or not Path(self._src).is_dir():
            return None
        with self._lock:
            if kind not in self._towers:
                if kind == "text":
                    from carsearch.model.textenc import ClipTextNP as Tower
                else:
                    from carsearch.model.visionenc import ClipVisionNP as Tower
                self._towers[kind] = Tower.load(self._src) or None
            return self._towers[kind]

    # ------------------------------------------------ one query
    def text(self, query: str) -> np.ndarray:
        """The vector of one text query (checked: `query.check_text`), from the LRU when seen before."""
        query = check_text(query)
        key = (self.key, query)
        with self._lock:
            v = self._cache.get(key)
            if v is not None:
                self._cache.move_to_end(key)
                return v
        enc = self._tower("text")
        v = enc.encode([query])[0] if enc else self.texts([query])[0]
        if self.text_cache_size:
            with self._lock:
                self._cache[key] = v
                while len(self._cache) > self.text_cache_size:
                    self._cache.popitem(last=False)
        return v

    def image(self, image) -> np.ndarray:
        """The vector of one query image (a path or a PIL image)."""
        enc = self._tower("vision")
        return enc.encode([image])[0] if enc else self.images([image])[0]

    # ------------------------------------------------ batches (index add, evaluation)
    def texts(self, texts) -> np.ndarray:
        from carsearch.model.clip import encode_texts

        return encode_texts(self.model, self.processor, list(texts))

    def images(self, images) -> np.ndarray:
        from carsearch.model.clip import encode_images

        return encode_images(self.model, self.processor, list(images))
