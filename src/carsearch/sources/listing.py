"""The corpus as DVC sees it: a listing (one line per file: relative path, size, mtime in ns, or an
S3 object's key, size and ETag), written by the cheap `list_corpus` stage, so `dvc status` hashes
one file instead of every photo (docs/scale.md, "DVC at 1M files"). Detected: files added,
removed, and changed in size or modification time (S3: ETag); not detected: a rewrite that keeps
both size and mtime (`touch -r`), which `dvc repro -f build_index` picks up (the embedding cache
keys on content, so nothing unchanged is embedded again)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator


def folder_lines(folder: Path) -> Iterator[str]:
    """`rel\\tsize\\tmtime_ns` of every non-hidden file under `folder`, in sorted walk order
    (symlinked folders are listed by their link, not followed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"index.corpus_path: folder not found: {folder}")

    def walk(d: Path, rel: str) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            yield f"{rel or '.'}\tunreadable folder\t{e.strerror}"
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            r = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_dir(follow_symlinks=False):
                    yield from walk(Path(e.path), r)
                    continue
                st = e.stat()
            except OSError as err:
                yield f"{r}\tunreadable\t{err.strerror}"
                continue
            yield f"{r}\t{st.st_size}\t{st.st_mtime_ns}"

    yield from walk(folder, "")


def s3_lines(uri: str, client=None) -> Iterator[str]:
    """`key\\tsize\\tetag` of every object under an s3:// prefix (S3 lists in key order)."""
    import boto3

    if not str(uri).startswith("s3://") or len(str(uri)) <= 5:
        raise ValueError(f"index.corpus_path: expected s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = str(uri)[5:].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = client or boto3.client(
        "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if not o["Key"].endswith("/"):
                yield f"{o['Key'][len(prefix) :]}\t{o['Size']}\t{o['ETag'].strip(chr(34))}"


def write_listing(out: Path, lines: Iterator[str]) -> tuple[int, int, bool]:
    """Stream `lines` into `out` (atomically), leaving an identical existing listing untouched.
    Returns (files, total bytes, changed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    h, n, total = hashlib.sha256(), 0, 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                h.update(line.encode() + b"\n")
                n += 1
                size = line.split("\t")[1]
                total += int(size) if size.isdigit() else 0
        if out.is_file() and _sha256(out) == h.hexdigest():
            tmp.unlink()  # unchanged: keep the file DVC already hashed
            return n, total, False
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n, total, True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
