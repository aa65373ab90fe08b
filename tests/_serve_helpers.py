"""Shared by tests/test_serve_api.py and tests/test_serve_browser.py: a small real index (demo
drawings, the tiny test CLIP, build_index as the pipeline runs it) and uvicorn on a free
127.0.0.1 port in a thread."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from testkit import section

_SHARED: dict = {}

# the composed `serve` section (conf/serve/default.yaml) with small limits
SETTINGS = section(
    "serve",
    max_upload_bytes=200_000,
    max_page_size=20,
    default_page_size=12,
    max_results=100,
    facet_candidates=40,
    thumb_size=64,
)


def build_repo(root: Path, n: dict | None = None, size: int = 64) -> Path:
    """A repo with curated demo pairs, a 'fine-tuned' tiny model and no promotion gate, indexed once."""
    from carsearch.model.clip import load_clip, save_clip
    from testkit import TINY, write_pairs, write_params

    root.mkdir(parents=True, exist_ok=True)
    write_pairs(root, n or {"train": 16, "val": 8, "test": 12}, size=size)
    save_clip(*load_clip(TINY, seed=0), root / "models" / "finetuned")
    write_params(
        root, index={"promote": {"metric": None}, "embed_cache_dir": ".carsearch/embed_cache", "batch_size": 16}
    )
    rebuild(root)
    return root


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rebuild(root: Path) -> dict:
    """build_index as the pipeline runs it (the environment is restored afterwards)."""
    from carsearch.stages import build_index

    with _env(CARSEARCH_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlruns.db'}"):
        build_index.main()
    return json.loads((root / "metrics/index.json").read_text())


def shared_repo(tmp_path_factory) -> Path:
    """One small indexed repo per test session (both serve test files use it)."""
    if "repo" not in _SHARED:
        _SHARED["repo"] = build_repo(tmp_path_factory.mktemp("serve") / "repo")
    return _SHARED["repo"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread; `.url`, `.stop()`."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
