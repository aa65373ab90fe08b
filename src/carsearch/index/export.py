"""Evidence bundles (`carsearch export`, `POST /api/v1/export`, the page's "Export"; docs/search/export.md).

A bundle is one zip of chosen hits (by id) or of a search's hits:
  originals/<rank>_<file>          each hit's original (a video sighting: the frame it was seen in)
  crops/<rank>_<id>.jpg            the vehicle cut from its frame with a margin, its box drawn
  clips/<rank>_<video>_<a>-<b>s.mp4  a video track's segment, cut with PyAV from first seen − margin
                                   to last seen + margin (`serve.export_clip_margin_s`)
  manifest.csv                     one row per hit: the search CSV's columns (`results.hits_csv`,
                                   from `core.columns`) plus the bundle's files and the clip's span
  manifest.json                    the same hits (`results.hit_record`), the query, the index version
                                   and the rejects
  rejects.csv                      one line per id or file that could not go in, with the reason
Nothing is lost: every id asked for is a hit of the manifest or a reject (an unknown id), and a hit
whose original, crop or clip could not be made stays in the manifest with that file empty and one
reject line saying why.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import zipfile
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from PIL import ImageDraw

from carsearch.core import originals
from carsearch.core.imaging import ImageError, open_rgb
from carsearch.core.io import atomic_path
from carsearch.core.when import iso, split_frame_name
from carsearch.detection.clips import cut
from carsearch.detection.video import VideoError
from carsearch.index.hits import original
from carsearch.index.results import hit_record, hits_csv, make_hit

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
FILES = ("original", "crop", "clip", "clip_start_s", "clip_end_s")  # the bundle's own manifest columns
CROP_MARGIN = 0.5  # of the box's size, each side
REJECT_HEADER = ["id", "rank", "reason"]


class _Hit:  # attribute access for `hits.original`
    def __init__(self, d: dict):
        self.__dict__.update(d)


def hits_for_ids(searcher, ids: list[str]) -> tuple[list[dict], list[dict]]:
    """(the hits of the ids, in the order given, duplicates once; one reject per id that is not an
    indexed row) — each hit a `Hit` as a dict, with no score (chosen, not searched for)."""
    hits, rejects, seen = [], [], set()
    for raw in ids:
        i = str(raw).strip()
        if i in seen:
            continue
        seen.add(i)
        if not ID_RE.fullmatch(i):
            rejects.append({"id": i, "rank": "", "reason": f"id {i!r}: not an id (letters, digits, _ and -)"})
            continue
        row = searcher.get_row(i)
        if row is None:
            rejects.append({"id": i, "rank": "", "reason": f"id {i!r}: no indexed hit with this id"})
            continue
        hits.append(asdict(make_hit(len(hits) + 1, {**row, "score": None})))
    return hits, rejects


def _clip_span(h: dict, margin: float) -> tuple[str, float, float] | None:
    """(video, start, end) offsets of a video hit's clip: its track's first to last box (or its one
    frame), widened by `margin` each side; None for a photo."""
    video, offset = split_frame_name(h.get("origin") or "")
    if offset is None:
        return None
    offsets = [offset]
    if h.get("track_json"):
        try:
            offsets = [
                float(m["offset"]) for m in json.loads(h["track_json"]) if m.get("offset") is not None
            ] or offsets
        except (ValueError, TypeError, KeyError):
            pass
    return video, max(0.0, min(offsets) - margin), max(offsets) + margin


def _crop(data: bytes, box) -> bytes:
    """The frame cut around `box` (CROP_MARGIN of its size each side), the box drawn in red."""
    im = open_rgb(data)
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(im.width, int(x2 + mx + 1)), min(im.height, int(y2 + my + 1))
    ImageDraw.Draw(im).rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=max(2, round(min(im.size) / 150)))
    buf = io.BytesIO()
    im.crop((left, top, max(right, left + 1), max(bottom, top + 1))).save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _name(loc: str) -> str:
    return PurePosixPath(str(loc).replace("\\", "/")).name


def _add_hit(z: zipfile.ZipFile, h: dict, root: Path, margin: float, rejects: list[dict]) -> dict:
    """Write one hit's files into the zip; {"original", "crop", "clip", "clip_start_s", "clip_end_s"}
    (empty where it could not be made: a reject line says why)."""
    got = dict.fromkeys(FILES, "")
    rank, span = int(h["rank"]), _clip_span(h, margin)
    fail = lambda what, e: rejects.append({"id": h["id"], "rank": rank, "reason": f"id {h['id']}: {what} ({e})"})  # noqa: E731
    # a video sighting's original is its frame; a photo's the user's file
    loc = (h.get("frame_path") or h["path"]) if span else original(_Hit(h))
    frame = None
    try:
        frame = originals.read(loc, root)
        stem = f"{Path(_name(span[0])).stem}_t{split_frame_name(h['origin'])[1]:.3f}s.jpg" if span else _name(loc)
        got["original"] = f"originals/{rank:03d}_{stem}"
        z.writestr(got["original"], frame)
    except OSError as e:
        fail(f"original {loc}: gone", f"{type(e).__name__}: {e}".splitlines()[0])
    if frame is not None and h.get("box") is not None:
        try:
            got["crop"] = f"crops/{rank:03d}_{h['id']}.jpg"
            z.writestr(got["crop"], _crop(frame, h["box"]))  # the box is in its frame's (or photo's) pixels
        except (ImageError, OSError, ValueError) as e:
            got["crop"] = ""
            fail(f"crop of {loc}: not decodable", e)
    if span:
        video, start, end = span
        try:
            data, seg = cut(originals.read(video, root), start, end, name=video)
            got["clip"] = f"clips/{rank:03d}_{Path(_name(video)).stem}_{seg['start']:.1f}-{seg['end']:.1f}s.mp4"
            z.writestr(got["clip"], data)
            got.update(clip_start_s=f"{seg['start']:.3f}", clip_end_s=f"{seg['end']:.3f}")
        except OSError as e:
            fail(f"clip of {video}: video gone", f"{type(e).__name__}: {e}".splitlines()[0])
        except VideoError as e:
            fail("clip", e)
    return got


def write_bundle(dest, hits: list[dict], *, root: Path, query: dict, index_version, margin_s: float,
                 rejects: list[dict] | None = None) -> dict:  # fmt: skip
    """Write the zip of `hits` (`Hit`s as dicts, or the same with `score` None for chosen ids) to
    `dest` (a path, written beside and swapped in, or a binary file object). Returns the summary
    {"hits", "files", "rejects"}."""
    rejects = list(rejects or [])
    path = None if hasattr(dest, "write") else Path(dest)
    with atomic_path(path) if path is not None else _nullpath() as tmp:
        with zipfile.ZipFile(tmp if path is not None else dest, "w", zipfile.ZIP_DEFLATED) as z:
            files = [_add_hit(z, h, Path(root), margin_s, rejects) for h in hits]
            rows = [{**h, **f} for h, f in zip(hits, files)]
            z.writestr("manifest.csv", hits_csv(rows, extra=FILES))
            doc = {
                "query": query,
                "index_version": index_version,
                "created": iso(time.time()),
                "clip_margin_s": margin_s,
                "hits": [{**hit_record(r), "files": {k: r[k] for k in FILES}} for r in rows],
                "rejects": rejects,
            }
            z.writestr("manifest.json", json.dumps(doc, indent=2, ensure_ascii=False))
            buf = io.StringIO()
            w = csv.DictWriter(buf, REJECT_HEADER, lineterminator="\n")
            w.writeheader()
            w.writerows(rejects)
            z.writestr("rejects.csv", buf.getvalue())
    n_files = sum(bool(f[k]) for f in files for k in ("original", "crop", "clip"))
    return {"hits": len(hits), "files": n_files, "rejects": rejects}


class _nullpath:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def export(searcher, *, ids: list[str] | None = None, hits: list[dict] | None = None, query: dict | None = None,
           dest, root: Path, margin_s: float, scores: list[dict] | None = None) -> dict:  # fmt: skip
    """A bundle of the chosen `ids` (looked up; unknown ones rejected) or of a search's `hits`;
    `scores`: the search's hits the ids came from (the API's: their score and confidence are kept)."""
    rejects: list[dict] = []
    if ids is not None:
        hits, rejects = hits_for_ids(searcher, ids)
        by_id = {s["id"]: s for s in scores or []}
        for h in hits:
            s = by_id.get(h["id"], {})
            h.update({k: s[k] for k in ("score", "confidence", "confident") if s.get(k) is not None})
        query = query if query is not None else {"ids": list(ids)}
    version = (getattr(searcher, "meta", None) or {}).get("version")
    return write_bundle(dest, hits or [], root=root, query=query or {}, index_version=version, margin_s=margin_s,
                        rejects=rejects)  # fmt: skip
