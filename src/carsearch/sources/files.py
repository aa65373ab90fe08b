"""Images in, manifest out: folder and S3 sources, image checks, the manifest and the rejects report
with a reason for every input that is not ingested."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from carsearch.core import imaging, originals
from carsearch.core.io import write_bytes
from carsearch.sources import boxes as boxes_mod
from carsearch.sources import labels as labels_mod

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov"}  # carsearch.detection.video
MIN_SIDE = 16  # smaller images cannot be captioned or embedded meaningfully


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Rejected:
    path: str
    reason: str


def check_image(data: bytes, name: str, max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS) -> tuple[int, int, str]:
    """Decode fully; return (width, height, format) of the upright image or raise ValueError with a
    one-line reason (empty, not an image, corrupt/truncated, too small, over `max_pixels`)."""
    info = imaging.check(data, max_pixels, MIN_SIDE)
    return info.width, info.height, info.format


def store_image(
    data: bytes,
    images_dir: Path,
    root: Path,
    source: str,
    labels: dict | None,
    name: str,
    max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS,
    max_edge: int | None = imaging.DEFAULT_MAX_EDGE,
    ref: str | None = None,
) -> dict:
    """Validate, write `images_dir/<id>.<ext>` atomically, and return the manifest row.

    Stored as-is when the bytes are an upright, single-frame RGB/L JPEG, PNG or WebP within
    `max_edge`; otherwise re-encoded upright, 8-bit RGB and downscaled to `max_edge` (JPEG with the
    source's quantisation tables when the source was a JPEG, else PNG), so every consumer reads it
    the same way. `reencoded` in the row says why."""
    im, info = imaging.load(data, max_pixels, MIN_SIDE)
    with im:
        why = info.reencode_reason(max_edge)
        w, h, ext = info.width, info.height, imaging.STORED_FORMATS.get(info.format)
        if why:
            picture = imaging.normalise(im, max_edge)
            data, ext = imaging.encode(picture, source=im)
            w, h = picture.size
    iid = content_id(data)
    if ref and not why:
        path = ref
    else:
        out = images_dir / f"{iid}{ext}"
        if not out.exists():
            write_bytes(out, data)
        path = out.relative_to(root).as_posix()
    row = {
        "id": iid,
        "path": path,
        "width": w,
        "height": h,
        "bytes": len(data),
        "source": source,
        "origin": name,
        "labels": labels or None,
    }
    if why:
        row["reencoded"] = why
    return row


def ingest_items(
    items: Iterable[tuple[str, bytes | None, dict | None, str | None]],
    images_dir: Path,
    root: Path,
    source: str,
    max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS,
    max_edge: int | None = imaging.DEFAULT_MAX_EDGE,
    by_reference: bool = False,
    seen: dict[str, str] | None = None,
):
    """items: (name, data or None, labels, error or None). Returns (manifest rows, rejects).
    `by_reference`: rows of files (local or s3://) point at the originals (`store_image`'s `ref`);
    a video's sampled frames are stored.

    Exact duplicates (same content hash) are kept once; the others are rejected naming the kept one
    (`seen`: id -> name of the rows kept so far, for items read in runs)."""
    rows, rejects = [], []
    seen = {} if seen is None else seen
    for name, data, labels, err in items:
        if err is not None or data is None:
            rejects.append(Rejected(name, err or "unreadable"))
            continue
        try:
            ref = _reference(name, root) if by_reference else None
            row = store_image(data, images_dir, root, source, labels, name, max_pixels, max_edge, ref)
        except ValueError as e:
            rejects.append(Rejected(name, str(e)))
            continue
        if row["id"] in seen:
            rejects.append(Rejected(name, f"exact duplicate of {seen[row['id']]}"))
            continue
        seen[row["id"]] = name
        rows.append(row)
    return rows, rejects


def _reference(name: str, root: Path) -> str | None:
    """The location a row keeps for an original file (None: a video frame, which has no file)."""
    if originals.is_s3(name):
        return None if "#t=" in name else name
    return originals.location(name, root) if Path(name).is_file() else None


# (reason pattern, short kind, what to do): groups the rejects for the ingest summary
REJECT_KINDS = [
    (r"empty file", "empty file", "re-copy the file from its source"),
    (r"not an image", "not an image", "remove it, or convert it to JPEG/PNG"),
    (r"unsupported format", "unsupported format", "convert it to JPEG or PNG"),
    (r"unsupported colour mode", "unsupported colour mode", "convert it to RGB JPEG or PNG"),
    (r"corrupt or truncated", "corrupt or truncated image", "re-export or re-copy the file"),
    (r"image too small", "image too small", f"remove it (images need >= {MIN_SIDE} px a side)"),
    (r"image too large", "image too large", "downscale it, or raise data.max_pixels"),
    (r"exact duplicate", "exact duplicate", "nothing to do (one copy is kept); delete the copies to silence this"),
    (r"unreadable", "unreadable", "fix the permissions (chmod a+r) or the storage"),
    (
        r"dangling symlink",
        "dangling symlink",
        "delete the link or restore its target (dvc repro also stops on it; or list it in .dvcignore)",
    ),
    (r"symlink loop", "symlink loop", "delete the link (dvc repro also stops on it; or list it in .dvcignore)"),
    (
        r"symlinked folder",
        "symlinked folder already read",
        "nothing to do (its files are read once); delete the link to silence this",
    ),
    (r"hidden", "hidden file or folder", "nothing to do; rename it without the leading dot to ingest it"),
    (r"not a regular file", "not a regular file", "remove it"),
    (
        r"\S+ row \d+ names a file that does not exist",
        "label row for a missing file",
        "fix the file name in the row or delete the row",
    ),
    (r"\S+ rows [\d, ]+ all name", "duplicate label rows", "keep one row per image"),
    (r"\S+ row \d+: ", "unknown label value", "use a value of the vocabulary (docs/ARCHITECTURE.md, Labels)"),
    (r"\S+ row \d+ has no file name", "label row without a file name", "fill in or delete the row"),
    (r"\S+ is not UTF-8", "labels file not UTF-8", "save it as UTF-8 (Excel: CSV UTF-8)"),
    (r"car model skipped", "car model skipped", "see the reason; the other car models are used"),
]


def reject_kind(reason: str) -> tuple[str, str]:
    """(kind, fix) of a reject reason, for summaries."""
    for pattern, kind, fix in REJECT_KINDS:
        if re.match(pattern, reason):
            return kind, fix
    return reason.split(" (")[0], "see the reason"


# ----------------------------------------------------------------------- folder source
def read_labels_csv(path: Path) -> dict[str, dict]:
    """labels.csv as {rel path: labels} (problems ignored; `labels.read_labels_csv` reports them)."""
    return labels_mod.read_labels_csv(Path(path).read_bytes(), str(path)).rows


def walk_folder(folder: Path) -> list[tuple[str, str | None]]:
    """Every entry under `folder` as (path, None) for a readable regular file or (path, reason):
    dangling or looping symlinks, symlinked folders already read (never followed into a loop),
    hidden files and folders, unreadable folders, fifos and sockets. Sorted by path; the paths are
    strings (~0.15 kB an entry, a third of a `Path`: a 1M-file folder is listed in ~150 MB)."""
    out: list[tuple[str, str | None]] = []
    seen = {os.path.realpath(folder): "."}

    def visit(d: Path) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            out.append((str(d), f"unreadable folder ({e.strerror})"))
            return
        for e in entries:
            p = e.path
            if e.is_symlink():
                try:
                    os.stat(p)
                except OSError as err:
                    target = os.readlink(p)
                    out.append(
                        (
                            p,
                            f"symlink loop ({e.name} -> {target})"
                            if err.errno == errno.ELOOP
                            else f"dangling symlink (-> {target}, which does not exist)",
                        )
                    )
                    continue
            if e.name.startswith("."):
                out.append((p, "hidden folder (skipped with its contents)" if e.is_dir() else "hidden file (skipped)"))
            elif e.is_dir():
                real = os.path.realpath(p)
                if real in seen:
                    out.append((p, f"symlinked folder already read as {seen[real]} (not followed)"))
                    continue
                seen[real] = Path(p).relative_to(folder).as_posix()
                visit(Path(p))
            elif e.is_file():
                out.append((p, None))
            else:
                out.append((p, "not a regular file (fifo, socket or device)"))

    visit(folder)
    out.sort(key=lambda t: t[0])
    return out


def folder_boxes(folder: Path, labels_csv: str = "labels.csv") -> boxes_mod.Annotations:
    """The vehicle boxes of a folder's frames (COCO JSON, YOLO txt, labels.csv box columns:
    carsearch.sources.boxes); `.files` are the annotation files, which `iter_folder` then skips."""
    folder = Path(folder)
    if not folder.is_dir():
        return boxes_mod.Annotations()
    rels = [Path(p).relative_to(folder).as_posix() for p, err in walk_folder(folder) if err is None]
    csv_path = folder / labels_csv if labels_csv else None
    csv_boxes = {}
    if csv_path is not None and csv_path.is_file():
        csv_boxes = labels_mod.read_labels_csv(csv_path.read_bytes(), str(csv_path)).boxes
    return boxes_mod.folder_annotations(folder, rels, csv_boxes)


def iter_folder(
    folder: Path, subfolder_key: str | None = "color", labels_csv: str = "labels.csv", skip: set[str] = frozenset()
) -> Iterator[tuple[str, bytes | None, dict | None, str | None]]:
    """Every file under `folder` (sorted): image files with labels from labels.csv and/or the
    sub-folder names (`red/img.jpg` -> {subfolder_key: "red"}); everything else, and every
    labels.csv problem, is yielded as a reject (name, None, None, reason). `skip`: relative paths
    that are read elsewhere (the annotation files of `folder_boxes`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.folder.path: folder not found: {folder}")
    csv_path = folder / labels_csv
    table = labels_mod.LabelTable()
    if csv_path.is_file():
        table = labels_mod.read_labels_csv(csv_path.read_bytes(), str(csv_path))
    entries = walk_folder(folder)
    for name, reason in table.problems:
        yield name, None, None, reason
    if table.line:  # rows naming files that are not there
        existing = {Path(p).relative_to(folder).as_posix() for p, _ in entries}
        for name, reason in table.missing(existing, str(folder), labels_csv):
            yield name, None, None, reason
    for name, err in entries:
        p = Path(name)
        if p == csv_path:
            continue
        if err is not None:
            yield name, None, None, err
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() in VIDEO_SUFFIXES:  # decoded frame by frame (carsearch.detection.footage), never read whole
            yield str(p), None, labels_mod.labels_for(rel, subfolder_key, table), None
            continue
        if rel in skip or (
            p.suffix.lower() not in IMAGE_EXTS and p.name.lower() in {"readme.md", "readme", "readme.txt"}
        ):
            continue
        try:
            data = p.read_bytes()
        except OSError as e:
            yield str(p), None, None, f"unreadable ({e.strerror})"
            continue
        yield str(p), data, labels_mod.labels_for(rel, subfolder_key, table), None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise ValueError(f"data.s3.uri: expected s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.rstrip("/") + "/" if prefix else ""


def iter_s3(uri: str, subfolder_key: str | None = "color", labels_csv: str = "labels.csv", client=None):
    """Every object under an S3 prefix (sorted by key), labelled like a folder source.
    Credentials and endpoint come from the standard boto3 chain (`AWS_ENDPOINT_URL` too)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    s3 = client or boto3.client("s3")
    try:
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
            if not o["Key"].endswith("/")
        ]
    except (ClientError, BotoCoreError) as e:
        raise ValueError(f"data.s3.uri {uri}: cannot list objects ({str(e).splitlines()[0]})") from None
    table = labels_mod.LabelTable()
    csv_key = prefix + labels_csv
    if csv_key in keys:
        table = labels_mod.read_labels_csv(
            s3.get_object(Bucket=bucket, Key=csv_key)["Body"].read(), f"s3://{bucket}/{csv_key}"
        )
    for name, reason in table.problems:
        yield name, None, None, reason
    yield from (
        (n, None, None, r)
        for n, r in table.missing({k[len(prefix) :] for k in keys}, f"s3://{bucket}/{prefix}".rstrip("/"), labels_csv)
    )
    for key in sorted(keys):
        rel = key[len(prefix) :]
        if key == csv_key or rel.rsplit("/", 1)[-1].startswith("."):
            continue
        name = f"s3://{bucket}/{key}"
        try:
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as e:
            yield name, None, None, f"unreadable ({str(e).splitlines()[0]})"
            continue
        yield name, data, labels_mod.labels_for(rel, subfolder_key, table), None
