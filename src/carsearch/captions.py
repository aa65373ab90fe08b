"""Structured car captions: the vocabulary, an offline captioner from known labels, and parsing /
validation of what an LLM returns."""

from __future__ import annotations

import hashlib
import json
import random
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BODY_TYPES = ("sedan", "coupe", "hatchback", "suv", "pickup", "van", "sports car", "buggy", "race car", "formula car")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "silver", "grey", "orange", "purple", "brown")
VIEWS = ("front", "rear", "side", "three-quarter")
FIELDS = ("make", "model", "body_type", "color", "view", "caption")

_SYNONYMS = {
    "gray": "grey", "dark grey": "grey", "dark gray": "grey", "light grey": "silver", "gold": "yellow",
    "pick-up": "pickup", "pickup truck": "pickup", "truck": "pickup", "saloon": "sedan", "estate": "hatchback",
    "wagon": "hatchback", "minivan": "van", "sportscar": "sports car", "sport car": "sports car",
    "back": "rear", "behind": "rear", "profile": "side", "front three-quarter": "three-quarter",
    "rear three-quarter": "three-quarter", "3/4": "three-quarter", "three quarter": "three-quarter",
}


class CaptionError(ValueError):
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
        return _SYNONYMS.get(v, v)


def parse_caption(text: str) -> Caption:
    """Extract and validate the JSON caption in an LLM answer (bare JSON, fenced, or inside prose)."""
    if not text or not text.strip():
        raise CaptionError("empty answer")
    m = re.search(r"\{.*\}", text, flags=re.S)
    if not m:
        raise CaptionError(f"no JSON object in answer: {text.strip()[:80]!r}")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise CaptionError(f"caption is not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise CaptionError("caption JSON is not an object")
    try:
        return Caption.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "caption"
        raise CaptionError(f"field {field!r}: {err['msg'].lower()}") from None


# ------------------------------------------------------------------ offline captioner
_TEMPLATES = (
    "A {color} {makemodel} {body} seen from the {view}{scene}.",
    "{view_cap} view of a {color} {body}, a {makemodel}{scene}.",
    "Traffic camera shot of a {color} {makemodel} {body}, {view} view{scene}.",
    "The {view} of a {color} {body} ({makemodel}){scene}.",
    "{color_cap} {body} from the {view}: a {makemodel}{scene}.",
    "A {makemodel} in {color}, a {body} photographed from the {view}{scene}.",
)


def _view_phrase(view: str) -> str:
    return "front three-quarter angle" if view == "three-quarter" else view


UNKNOWN = "unknown"
LABEL_KEYS = ("make", "model", "model_id", "body_type", "color", "view", "scene")


def known(labels: dict | None) -> dict:
    """The labels that say something: drops empty values and "unknown" (no constraint anywhere)."""
    return {k: v for k, v in (labels or {}).items()
            if v not in (None, "") and not (isinstance(v, str) and v.strip().lower() == UNKNOWN)}


def has_labels(labels: dict | None) -> bool:
    """Whether an image carries any label the offline captioner can state."""
    return any(k in known(labels) for k in ("make", "model", "body_type", "color", "view"))


_PARTIAL_TEMPLATES = (
    "A {desc}{view}{scene}.",
    "Traffic camera shot of a {desc}{view}{scene}.",
    "Photo of a {desc}{view}{scene}.",
)


def offline_caption(labels: dict, record_id: str) -> dict:
    """A caption JSON built from known labels, phrased differently per record (deterministic).

    Partial labels are labels: an image with only a colour gets "A red car."; what the labels do
    not say is "unknown" in the JSON (and no constraint for training and evaluation)."""
    rng = random.Random(int(hashlib.sha256(record_id.encode()).hexdigest()[:12], 16))
    lab = known(labels)
    make, model = lab.get("make") or UNKNOWN, lab.get("model") or UNKNOWN
    body, color, view = lab.get("body_type"), lab.get("color"), lab.get("view")
    makemodel = f"{make} {model}".strip() if make != UNKNOWN else "car"
    scene = lab.get("scene")
    scene_txt = f" on the road at {scene}" if scene and rng.random() < 0.5 else ""
    if body and color and view:
        tpl = rng.choice(_TEMPLATES)
        text = tpl.format(
            color=color, color_cap=color.capitalize(), makemodel=makemodel, body=body,
            view=_view_phrase(view), view_cap=_view_phrase(view).capitalize(), scene=scene_txt,
        )
    else:
        named = " ".join(v for v in (lab.get("make"), lab.get("model")) if v) or None
        desc = " ".join(w for w in (color, named, body or "car") if w)
        view_txt = f" seen from the {_view_phrase(view)}" if view else ""
        text = rng.choice(_PARTIAL_TEMPLATES).format(desc=desc, view=view_txt, scene=scene_txt)
    return {"make": make, "model": model, "body_type": body or UNKNOWN, "color": color or UNKNOWN,
            "view": view or UNKNOWN, "caption": text}


def query_text(color: str | None = None, body_type: str | None = None, view: str | None = None, make_model: str | None = None) -> str:
    """A search query for an attribute combination: "red sedan seen from the front"."""
    words = [w for w in (color, make_model, body_type or "car") if w]
    q = "a " + " ".join(words)
    if view:
        q += f" seen from the {_view_phrase(view)}"
    return q
