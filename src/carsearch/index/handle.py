"""The live index as a query sees it: follow the pointer (`carsearch_index.json`, local or on
s3://), open the version's table and calibration, say which model embedded it, run a table query
(once more if the version it started on was pruned), and fall back to the kept previous version
when the live one is damaged (the search service does). No model code: `index.encoder` embeds."""

from __future__ import annotations

import re
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from carsearch.core.confidence import Calibration
from carsearch.core.errors import CarsearchError
from carsearch.core.paths import resolve
from carsearch.index import remote
from carsearch.index.query import quote
from carsearch.index.store import META_FILE, MODEL_SUBDIR, connect, is_uri, read_meta

REMOTE_POLL_S = 5.0  # how often a searcher on an s3:// index looks for a new pointer


class IndexDamagedError(CarsearchError, RuntimeError):
    """The live index version cannot be read (a data file missing or torn): one line with the fix."""


def lance_reason(e: Exception) -> str:
    """lance's message without its source location (`…/lance-io-…/src/local.rs:273:40`)."""
    text = " ".join(str(e).split())
    text = re.sub(r",?\s*/\S*\.rs:\d+:\d+\s*$", "", text)
    return text.removeprefix("lance error: ")


def _missing_file(e: Exception) -> bool:
    return "Not found" in str(e) or "No such file" in str(e)


class IndexHandle:
    """The open version of an index folder or s3:// prefix: `meta`, `table`, `version_dir`,
    `calibration` (one fit per query kind) and `model_source` (which model embedded it), kept current by `refresh()`."""

    def __init__(self, location, root: Path, fallback: bool = False, fetch_model: bool = True):
        """`fallback`: when the live version turns out damaged, serve the kept previous version
        (with a warning) instead of failing. `fetch_model`: download the model of an s3:// index
        (off when queries use another model)."""
        self.root, self.fallback, self.fetch_model = root, fallback, fetch_model
        self.index_uri: str | None = None  # an index on object storage (s3://bucket/prefix, carsearch.index.remote)
        self.index_dir: Path | None = None
        if is_uri(location):
            self.index_uri = str(location).rstrip("/")
        else:
            self.index_dir = resolve(location, root)
        self.meta: dict = {}
        self.table = self.version_dir = self.calibration = None
        self.model_source: tuple[str, str | None] | None = None  # (folder or hub id, content hash)
        self.fell_back_from: str | None = None
        self._stamp, self._checked, self._fts_key, self._fts = None, 0.0, None, False
        self._known: dict[tuple, bool] = {}  # knows(): (version, column) -> some row has a value

    @property
    def where(self) -> str:
        return str(self.index_uri or self.index_dir)

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
        if self._stamp is not None and time.monotonic() - self._checked < REMOTE_POLL_S:
            return True
        meta, etag = remote.get_json(remote.join(self.index_uri, META_FILE))
        self._checked = time.monotonic()
        if not meta:
            return None
        if etag == self._stamp:
            return True
        model_dir = meta.get("model_dir") or MODEL_SUBDIR
        fetch = model_dir == MODEL_SUBDIR and self.fetch_model
        local = remote.fetch_model(self.index_uri, meta) if fetch else Path(model_dir)
        return meta, etag, remote.join(self.index_uri, meta["version"]), local

    def refresh(self) -> bool:
        """Follow the pointer (one stat a query; one GET every few seconds for s3://): pick up a
        rebuilt or appended index. While a build runs, or if the pointer vanished, keep the version
        already open. False: there is no index (and none was open)."""
        got = self._remote_pointer() if self.index_uri else self._local_pointer()
        if got is None:
            return self._stamp is not None
        if got is True:
            return True
        meta, stamp, vdir, local = got
        # the table beside the pointer, or on object storage (index.uri: meta["table_uri"])
        table = connect(meta.get("table_uri") or vdir, read_consistency_interval=timedelta(0)).open_table(meta["table"])
        source = (str(local) if local.exists() else meta["model_dir"], meta.get("content_hash"))
        if self.fetch_model and meta["model_dir"] == MODEL_SUBDIR and not local.exists():
            raise FileNotFoundError(
                f"car index {self.where}: its model folder {local} is missing; rebuild it (`dvc repro build_index`)"
            )
        self.meta, self.table, self.version_dir, self._stamp, self.model_source = meta, table, vdir, stamp, source
        self.calibration = None if self.index_uri else Calibration.load(vdir)  # carsearch.core.confidence
        return True

    # ---------------------------------------------------------------- what the open table has
    def column_names(self) -> set[str]:
        """The live table's columns; none when it cannot be read (the query that follows then meets
        the damage in `run`, which says so or falls back)."""
        try:
            return set(self.table.schema.names)
        except (RuntimeError, OSError):
            return set()

    def columns(self, wanted) -> list[str]:
        """Those of `wanted` this version's table has (older tables lack the vehicle columns)."""
        names = self.column_names()
        return [c for c in wanted if c in names]

    def has_tracks(self) -> bool:
        """This version's table has video tracks (first_seen / last_seen columns)."""
        return "last_seen" in self.column_names()

    def knows(self, column: str) -> bool:
        """Some row of this version has a value in `column` (e.g. a compass heading); cached per version."""
        key = (str(self.version_dir), getattr(self.table, "version", None), column)
        if key not in self._known:
            self._known[key] = column in self.column_names() and bool(self.run(lambda: self._count_known(column)))
        return self._known[key]

    def _count_known(self, column: str) -> int:
        empty = pa.types.is_string(self.table.schema.field(column).type)  # a keyword column writes "" for none
        return self.table.count_rows(f"{column} IS NOT NULL" + (f" AND {column} != ''" if empty else ""))

    def has_fts(self) -> bool:
        """Whether the open table has a full-text index on `caption` (indices built since the FTS index)."""
        key = (str(self.version_dir), getattr(self.table, "version", None))
        if self._fts_key != key:
            self._fts = any(
                str(i.index_type).upper() == "FTS" and "caption" in i.columns for i in self.table.list_indices()
            )
            self._fts_key = key
        return self._fts

    def get_row(self, image_id: str, columns: list[str]) -> dict | None:
        """The `columns` of the row with this id (None when unknown)."""

        def run():
            return self.table.search().where(f"id = {quote(image_id)}").select(columns).limit(1).to_list()

        rows = self.run(run)
        return rows[0] if rows else None

    # ---------------------------------------------------------------- running a query, damage
    def run(self, query):
        """`query()` against the open table; once more on the new version if the one it started on
        was pruned; a version that still cannot be read is damaged (`damaged`)."""
        try:
            return query()
        except (RuntimeError, OSError) as e:
            if not _missing_file(e):
                raise
            version = self.meta.get("version")
            self._stamp = None
            self.refresh()
            try:
                return query()
            except (RuntimeError, OSError) as again:
                if self.meta.get("version") != version or not _missing_file(again):
                    raise
                self.damaged(again)
                return query()

    def previous_version(self) -> Path | None:
        """The newest kept version folder older than the live one (`index.keep_versions` keeps it)."""
        if self.index_dir is None or not self.meta.get("version"):
            return None
        older = sorted(p for p in self.index_dir.glob("v-*") if p.is_dir() and p.name < self.meta["version"])
        return older[-1] if older else None

    def damaged(self, e: Exception) -> None:
        """The live version cannot be read: fall back to the previous one (the service) or say which
        version is damaged and how to fix it."""
        version, where = self.meta.get("version"), self.version_dir
        prev = self.previous_version()
        why = f"car index version {version} ({where}) is damaged: {lance_reason(e)}"
        fix = "rebuild it: `dvc repro -f -s build_index`"
        if not (self.fallback and prev is not None):
            also = (
                f", or use the kept previous version {prev.name} (`carsearch serve` falls back to it)" if prev else ""
            )
            raise IndexDamagedError(f"{why}; {fix}{also}") from None
        meta = {**self.meta, "version": prev.name, "model_dir": MODEL_SUBDIR, "content_hash": None}
        self.table = connect(prev, read_consistency_interval=timedelta(0)).open_table(meta["table"])
        if (prev / MODEL_SUBDIR).is_dir():
            self.model_source = (str(prev / MODEL_SUBDIR), None)
        self.meta, self.version_dir = meta, prev  # stamp kept: a new build is picked up
        self.fell_back_from = version
        warnings.warn(f"{why}; serving the previous version {prev.name} meanwhile; {fix}", stacklevel=4)
