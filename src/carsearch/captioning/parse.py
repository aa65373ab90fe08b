"""Parsing and validating what a captioner returns: one `Caption` per image, with the vocabulary's
synonyms folded in and one line naming the field when it cannot be used."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from carsearch.core.errors import CarsearchError
from carsearch.core.vocab import SYNONYMS


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
