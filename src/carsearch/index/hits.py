"""What a hit is to its user: the original file (name, folder, capture time), whether it is still
there, and the top k copied out (`carsearch search -f` / `--copy-to DIR`)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from carsearch.core import originals
from carsearch.core.io import write_bytes
from carsearch.core.when import split_frame_name


def original(h) -> str:
    """The user's original of a hit: its origin (a video frame: the video), else its path."""
    origin = split_frame_name(getattr(h, "origin", "") or "")[0]
    return origin or h.path


def where(h) -> dict:
    """{"file", "folder"} of a hit's original (an s3:// original's folder is its prefix URI)."""
    loc = original(h)
    if originals.is_s3(loc):
        folder, _, name = loc.rpartition("/")
        return {"file": name, "folder": folder}
    p = PurePosixPath(str(loc).replace("\\", "/"))
    return {"file": p.name, "folder": str(p.parent) if str(p.parent) != "." else ""}


def where_row(row: dict) -> dict:
    """`where` of a table row (the service's hits)."""
    from types import SimpleNamespace

    return where(SimpleNamespace(origin=row.get("origin") or "", path=row.get("path") or ""))


def _row(h) -> dict:
    return {"id": h.id, "box": h.box, "frame_path": h.frame_path, "frame_id": h.frame_id}


def missing(hits, root: Path) -> list[bool]:
    """Which hits point to a file that is gone or changed since the build (an index older than
    its images): the indexed file must still be there with the content hash it was indexed under."""
    return [not originals.present(h.path, root, originals.content_of(_row(h))) for h in hits]


def local_original(h, root: Path) -> str:
    """The hit's original as a local path others can open (absolute), or its s3:// URI."""
    loc = original(h)
    return loc if originals.is_s3(loc) else str(originals.local_path(loc, root).absolute())


def export_paths(api_hits: list[dict], root: Path) -> list[str]:
    """`local_original` of each of the API's hits (their `folder` and `file`), in order."""
    from types import SimpleNamespace

    out = []
    for h in api_hits:
        loc = f"{h['folder']}/{h['file']}" if h.get("folder") else h["file"]
        out.append(local_original(SimpleNamespace(origin="", path=loc), root))
    return out


def copy_to(hits, out_dir: Path, root: Path) -> list[Path]:
    """Copy each hit's original (local or S3) into `out_dir` as `<rank>_<file name>` (atomic
    writes); a hit whose file is gone is skipped. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for h in hits:
        loc = original(h)
        try:
            data = originals.read(loc, root)
        except OSError:
            continue
        dst = out_dir / f"{h.rank:03d}_{where(h)['file']}"
        write_bytes(dst, data)
        done.append(dst)
    return done
