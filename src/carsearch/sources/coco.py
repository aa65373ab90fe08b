"""COCO JSON box files (COCO, and the COCO exports of CVAT and Label Studio), read entry by entry.

Each `images`, `categories` and `annotations` entry is checked on its own (pydantic models): a
malformed entry is dropped and reported, with its index, id and the reason, and every other entry
is kept. A `.json` that does not parse is reported with the line and column where it breaks; one
that parses but is not COCO (no `images` and `annotations` lists) is reported as such. The checked
entries are indexed by pycocotools (`COCO.createIndex`).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Annotated, Any

from pycocotools.coco import COCO
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Number = Annotated[float, Field(allow_inf_nan=False)]
Id = int | str


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")


class Image(_Entry):
    id: Id
    file_name: str = Field(min_length=1)
    width: Number | None = Field(default=None, gt=0)
    height: Number | None = Field(default=None, gt=0)


class Category(_Entry):
    id: Id
    name: str = Field(min_length=1)


class Box(_Entry):
    id: Id | None = None
    image_id: Id
    category_id: Id | None = None
    bbox: tuple[Number, Number, Number, Number]
    score: Number | None = None
    attributes: dict[str, Any] | None = None


class NotCoco(ValueError):
    """The file as a whole cannot be read as COCO (does not parse, or has no images/annotations)."""


def why(e: ValidationError) -> str:
    """A pydantic error as one short reason: `field.0: message (got 'value')`, joined by '; '."""
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "entry"
        got = f" (got {err['input']!r:.60})" if err["type"] != "missing" else ""
        parts.append(f"{loc}: {err['msg']}{got}")
    return "; ".join(parts)


def load(path: Path, rel: str) -> dict:
    """The file's top-level object; NotCoco with the reason where it does not parse or is not COCO."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        raise NotCoco(f"{rel}: a JSON file that does not parse (line {e.lineno} column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise NotCoco(
            f"{rel}: a JSON file that does not parse (not UTF-8 text: {e.reason} at byte {e.start})"
        ) from None
    if not isinstance(doc, dict):
        raise NotCoco(f"{rel}: a JSON file but not COCO (a {type(doc).__name__}; COCO is an object)")
    missing = [k for k in ("images", "annotations") if not isinstance(doc.get(k), list)]
    if missing:
        raise NotCoco(f"{rel}: a JSON file but not COCO (no {' or '.join(repr(k) for k in missing)} list)")
    return doc


def _checked(entries: list, model: type[_Entry], rel: str, what: str, problems: list) -> dict[Id, tuple[int, Any]]:
    """{id: (index, entry)} of the entries that pass `model`; each other one is a problem."""
    out: dict[Id, tuple[int, Any]] = {}
    for i, raw in enumerate(entries):
        label = f"{rel} {what}[{i}]" + (f" (id {raw.get('id')!r})" if isinstance(raw, dict) and "id" in raw else "")
        try:
            e = model.model_validate(raw)
        except ValidationError as err:
            problems.append((rel, f"{label}: {why(err)}; entry not used"))
            continue
        if e.id in out:
            problems.append((rel, f"{label}: id {e.id!r} is already used by {what}[{out[e.id][0]}]; entry not used"))
            continue
        out[e.id] = (i, e)
    return out


def read(path: Path, rel: str) -> tuple[COCO, list[tuple[str, str]]]:
    """(a pycocotools index of the usable entries, [(rel, reason)] for every dropped entry).
    Raises NotCoco when the file as a whole is not readable COCO."""
    doc = load(path, rel)
    problems: list[tuple[str, str]] = []
    images = _checked(doc["images"], Image, rel, "images", problems)
    cats = _checked(doc.get("categories") or [], Category, rel, "categories", problems)
    bad_images = {r.get("id") for r in doc["images"] if isinstance(r, dict) and isinstance(r.get("id"), Id)}
    bad_images -= set(images)
    anns = []
    for i, raw in enumerate(doc["annotations"]):
        label = (
            f"{rel} annotation {raw.get('id')!r}"
            if isinstance(raw, dict) and "id" in raw
            else f"{rel} annotations[{i}]"
        )
        try:
            a = Box.model_validate(raw)
        except ValidationError as err:
            problems.append((rel, f"{label}: {why(err)}; box not used"))
            continue
        if a.image_id not in images:
            what = "an unusable image entry" if a.image_id in bad_images else "not in the file's images"
            problems.append((rel, f"{label}: image_id {a.image_id!r} is {what}; box not used"))
            continue
        anns.append({**a.model_dump(), "id": i})  # pycocotools keys by id: the file's may repeat or be missing
    coco = COCO()
    coco.dataset = {
        "images": [e.model_dump() for _, e in images.values()],
        "categories": [e.model_dump() for _, e in cats.values()],
        "annotations": anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco, problems
