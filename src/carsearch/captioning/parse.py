"""Parsing and validating what a captioner returns: one `Caption` per image, with the vocabulary's
synonyms folded in and one line naming the field when it cannot be used. The plate text is
optional (null where unreadable); one that is not a plate (`vocab.plate_value`) is dropped with its
reason in `plate_dropped`, the rest of the caption kept."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from carsearch.core.errors import CarsearchError
from carsearch.core.vocab import SYNONYMS, plate_value


class CaptionError(CarsearchError, ValueError):
    """A caption that cannot be used, with the reason."""


class Caption(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    make: str = Field(min_length=1)
    model: str = Field(min_length=1)
    body_type: str = Field(min_length=1)
    color: str = Field(min_length=1)
    view: str = Field(min_length=1)
    caption: str = Field(min_length=8)
    plate: str | None = None  # the number plate's text as read; None where unreadable or not said
    _plate_dropped: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _plate(cls, data, handler):
        """A bad plate never costs the caption: it is dropped and the reason kept (`plate_dropped`)."""
        why = None
        if isinstance(data, dict) and "plate" in data:
            plate, why = plate_value(data["plate"])
            data = {**data, "plate": plate}
        out = handler(data)
        out._plate_dropped = why
        return out

    @property
    def plate_dropped(self) -> str | None:
        """Why the answer's plate was dropped (not a plate), or None."""
        return self._plate_dropped

    @field_validator("body_type", "color", "view")
    @classmethod
    def _normalise(cls, v: str) -> str:
        v = v.strip().lower()
        return SYNONYMS.get(v, v)


def _first_object(text: str) -> dict | None:
    """The JSON object at the start of `text`, whatever follows it."""
    try:
        obj, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def answer_json(text: str) -> dict:
    """The JSON object in an LLM answer (bare JSON, ```json fenced, or inside prose); CaptionError says why not."""
    if not text or not text.strip():
        raise CaptionError("empty answer")
    m = re.search(r"\{.*\}", text, flags=re.S)
    if not m:
        raise CaptionError(f"no JSON object in answer: {text.strip()[:80]!r}")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        obj = _first_object(m.group(0))  # prose after the JSON that has a brace of its own
        if obj is None:
            raise CaptionError(f"caption is not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise CaptionError("caption JSON is not an object")
    return obj


def parse_caption(text: str) -> Caption:
    """Extract and validate the JSON caption in an LLM answer (bare JSON, fenced, or inside prose)."""
    obj = answer_json(text)
    try:
        return Caption.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "caption"
        raise CaptionError(f"field {field!r}: {err['msg'].lower()}") from None
