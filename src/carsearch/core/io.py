"""Small file helpers: atomic writes (temp file + rename, temp folder + swap), the one-line report
of a write the disk refused (`WriteError`), and JSON Lines."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from carsearch.core.errors import CarsearchError

# what the disk says when it refuses a write, in the words of the one-line error
DISK_FULL = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (over the file size limit, `ulimit -f`, or the file system's)",
    errno.EDQUOT: "disk quota exceeded",
}


class WriteError(CarsearchError, OSError):
    """A write the disk refused (full, quota, file size limit): one line naming the file, the
    reason and what was left as it was."""

    def __init__(self, file: str, why: str, kept: str):
        super().__init__(f"cannot write {file}: {why}; {kept}")
        self.file, self.why, self.kept = file, why, kept

    def __str__(self) -> str:
        return f"cannot write {self.file}: {self.why}; {self.kept}"


def _reason(text: str) -> str | None:
    """The DISK_FULL reason an error message states (Python's `[Errno 28]`, Rust's `(os error 28)`)."""
    return next(
        (why for code, why in DISK_FULL.items() if f"[Errno {code}]" in text or f"os error {code})" in text), None
    )


def refused_write(e: BaseException) -> tuple[str, str] | None:
    """(the file, the reason) when `e` is the disk refusing a write: an OSError with ENOSPC /
    EFBIG / EDQUOT, a `shutil.Error` (copytree) holding one, or a native library's error (LanceDB)
    saying so; else None."""
    if isinstance(e, WriteError):
        return e.file, e.why
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list):
        for item in e.args[0]:
            if len(item) == 3 and (why := _reason(str(item[2]))):
                return str(item[1]), why
        return None
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return str(e.filename or ""), DISK_FULL[e.errno]
    if isinstance(e, (OSError, RuntimeError, ValueError)) and (why := _reason(str(e))):
        return "", why
    return None


@contextlib.contextmanager
def reporting_refused_writes(kept: str, tmp: Path | None = None, target: str | None = None):
    """Turn a refused write inside the block into one `WriteError` line: what could not be
    written, why, and `kept` (what stays as it was, e.g. "the live index is unchanged"). A file
    under the temp path `tmp` is named as its place under `target` (what it was written for); the
    outermost block's `kept` is the one said (a file written inside a folder being replaced)."""
    try:
        yield
    except (OSError, shutil.Error, RuntimeError, ValueError) as e:
        found = refused_write(e)
        if found is None:
            raise
        name = found[0] or (target or "a file")
        if tmp is not None and target is not None and name.startswith(str(tmp)):
            name = target + name[len(str(tmp)) :]
        raise WriteError(name, found[1], kept) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temp path next to `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        with reporting_refused_writes(f"{path} is unchanged", Path(tmp), str(path)):
            yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _leftovers(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"), key=lambda p: p.stat().st_mtime)


def clean_stale(path: str | os.PathLike) -> None:
    """Remove what a killed `atomic_dir` left beside `path`: `.<name>.tmp-*` folders (half-written)
    and `.<name>.old-*` ones (a replaced copy). A run killed between its two renames leaves no
    `path` but a complete `.old-*`: that one is renamed back first, so nothing is lost."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    olds = _leftovers(path, "old")
    if olds and not os.path.lexists(path):
        olds.pop().rename(path)
    for p in olds + _leftovers(path, "tmp"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `path` (`.<name>.tmp-<id>`) to write a whole output folder
    into. On success it replaces `path`: the old folder is renamed aside, the new one renamed into
    place, the old one deleted, so `path` always holds a complete output (old or new) but for the
    instant between the two renames; on an error the temp folder is deleted and `path` is untouched.
    A killed run leaves only hidden leftovers, removed (or restored, see `clean_stale`) by the next.
    A write the disk refuses (full, file size limit) is one `WriteError` line naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tag = uuid.uuid4().hex[:12]
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    old = path.with_name(f".{path.name}.old-{tag}")
    tmp.mkdir()
    try:
        with reporting_refused_writes(f"{path} is unchanged", tmp, str(path)):
            yield tmp
        if os.path.lexists(path):
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.lexists(old) and not os.path.lexists(path):
            old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`dst` as a hard link to the file `src` (a copy where the two are on different file systems),
    swapped in whole. For content-addressed files only: neither is ever rewritten in place."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def append_locked(path: str | os.PathLike, data: bytes) -> int:
    """Append `data` (whole lines) to `path` under an exclusive `flock`, with ONE write on an
    `O_APPEND` descriptor, then fsync: concurrent writers on one machine lose nothing and tear no
    line. A torn tail a killed writer left is ended with a newline first (it stays one bad line,
    never glued to ours). Returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:  # one write normally; a partial write (disk full, signal) continues, still under the lock
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        return len(data)
    finally:
        os.close(fd)  # closing releases the lock


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield objects; a malformed line raises ValueError naming file and line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None


def dir_hash(path: Path) -> str:
    """Content hash of a model directory (weights and configs), to record what built an index."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".json", ".bin", ".txt"} and p.name != "carsearch_run.json":
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]
