"""Which file an image route serves: the indexed file (a copy in the index, or the user's original,
local or on S3, read through `carsearch.core.originals`), never one a client names."""

from __future__ import annotations

from pathlib import Path

from carsearch.core import originals

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


def locate(row: dict, frame: bool, root: Path, allowed: list[Path], index_dir) -> Path | tuple[str, bytes] | str:
    """The local file of a row (with `frame`: its frame), (suffix, bytes) of an S3 original, or
    "gone" (moved, deleted or changed since the build) / "unservable". A file outside the repo and
    the index is served only while its bytes hash to the id it was indexed under."""
    loc = (row.get("frame_path") if frame else None) or row["path"]
    content = originals.content_of(row, frame)
    if originals.is_s3(loc):
        if Path(loc).suffix.lower() not in IMAGE_TYPES or content is None:
            return "unservable"
        try:
            data = originals.read(loc, root)
        except OSError:
            return "gone"
        return (Path(loc).suffix.lower(), data) if originals.content_id(data) == content else "gone"
    try:
        real = originals.local_path(loc, root).resolve(strict=True)
    except (OSError, RuntimeError):
        return "gone"
    inside = any(real.is_relative_to(a) for a in allowed)
    if not real.is_file() or real.suffix.lower() not in IMAGE_TYPES or (not inside and content is None):
        return "unservable"
    in_index = index_dir is not None and real.is_relative_to(Path(index_dir).resolve())
    if content is not None and not in_index and not originals.present(real, root, content):
        return "gone"
    return real
