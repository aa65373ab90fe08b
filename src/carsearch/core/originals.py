"""One reader for the user's originals an index refers to (index by reference).

A folder or S3 corpus is not copied into the index: a row's `path` is the original's location,
relative to the repo root when the file lies under it, else absolute, or the `s3://bucket/key`
URI, and its `id` is the content hash of those bytes. Everything that reads an indexed image
(build_index's embedding, the detector and crops, capture times, the service's image routes and
thumbnails, `carsearch search --png/-f`) reads it through here, so local and S3 originals are
read the same way. A file that moved or changed since the build is `present(...) == False`
(reported as "[missing file]" / 404 missing_file).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

S3 = "s3://"


def is_s3(loc) -> bool:
    return str(loc).startswith(S3)


def location(name: str | os.PathLike, root: Path) -> str:
    """What a row stores for the original `name` (a local file or an s3:// URI): the URI as it is;
    a local file relative to `root` when it lies under it (the repo moves with its corpus), else
    absolute."""
    if is_s3(name):
        return str(name)
    p = Path(name).absolute()
    try:
        return p.relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        return p.as_posix()


def local_path(loc, root: Path) -> Path | None:
    """The local file of a location (None for an s3:// URI)."""
    if is_s3(loc):
        return None
    p = Path(loc)
    return p if p.is_absolute() else Path(root) / p


def _client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = str(uri)[len(S3) :].partition("/")
    return bucket, key


def read(loc, root: Path, limit: int | None = None) -> bytes:
    """The bytes of an original (the first `limit` bytes only, when given); FileNotFoundError when
    it is gone (a local file removed or moved, an S3 object deleted or unreadable)."""
    if is_s3(loc):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = _split(loc)
        kw = {"Range": f"bytes=0-{limit - 1}"} if limit else {}
        try:
            return _client().get_object(Bucket=bucket, Key=key, **kw)["Body"].read()
        except (ClientError, BotoCoreError) as e:
            raise FileNotFoundError(f"{loc}: {str(e).splitlines()[0]}") from None
    with open(local_path(loc, root), "rb") as f:
        return f.read(limit) if limit else f.read()


def source(loc, root: Path) -> Path | bytes:
    """What the image decoders take (`imaging.open_rgb`, `model.encode_images`): the local file, or
    the bytes of an S3 object."""
    return read(loc, root) if is_s3(loc) else local_path(loc, root)


def opened(loc, root: Path):
    """A path or a binary file object for `imaging.open_image`."""
    return io.BytesIO(read(loc, root)) if is_s3(loc) else local_path(loc, root)


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def content_of(row: dict, frame: bool = False) -> str | None:
    """The content hash a row's file (with `frame`: its frame's file) was indexed under, where the
    id is one (a whole image's id, a vehicle's frame_id); None for a vehicle's crop or a legacy id."""
    if frame and row.get("frame_path"):
        iid = row.get("frame_id")
    elif row.get("box") is None or not row.get("frame_path"):
        iid = row.get("id")
    else:
        return None
    return iid if iid and re.fullmatch(r"[0-9a-f]{16}", str(iid)) else None


def present(loc, root: Path, content: str | None = None) -> bool:
    """The original is still there and, with `content` (its id at build time), unchanged."""
    try:
        if content is None:
            if is_s3(loc):
                bucket, key = _split(loc)
                _client().head_object(Bucket=bucket, Key=key)
                return True
            return local_path(loc, root).is_file()
        return content_id(read(loc, root)) == content
    except Exception:  # noqa: BLE001 - gone, unreadable or no credentials: not there for the user
        return False


def presign(uri: str, expires: int = 3600) -> str:
    """A presigned GET URL of an S3 original, for a client that reads the bucket itself (the service
    proxies: its id-only image routes stay the only way in)."""
    bucket, key = _split(uri)
    return _client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
