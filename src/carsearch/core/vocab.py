"""The label vocabulary every stage speaks: body types, colours, views, the synonyms an LLM answer is
normalised with, number plates (`plate_value`), the labels that say something (`known`), and the
query text of an attribute set."""

from __future__ import annotations

import re

BODY_TYPES = (
    "sedan",
    "coupe",
    "hatchback",
    "wagon",
    "suv",
    "pickup",
    "van",
    "box truck",
    "bus",
    "motorcycle",
    "sports car",
    "buggy",
    "race car",
    "formula car",
)
COLORS = ("red", "blue", "green", "yellow", "white", "black", "silver", "grey", "orange", "purple", "brown")
VIEWS = ("front", "rear", "side", "three-quarter")
FIELDS = ("make", "model", "body_type", "color", "view", "caption")
# The classes of a vehicle box: those the vehicles prompt asks a captioner for (in this order, as the
# prompt lists them), then the other road vehicles a detector's labels or zero-shot prompts name.
CAPTION_CLASSES = ("car", "truck", "bus", "van", "pickup", "suv", "motorcycle")
VEHICLE_CLASSES = CAPTION_CLASSES + ("bicycle", "taxi")

SYNONYMS = {
    "gray": "grey",
    "dark grey": "grey",
    "dark gray": "grey",
    "light grey": "silver",
    "gold": "yellow",
    "pick-up": "pickup",
    "pickup truck": "pickup",
    "truck": "pickup",
    "lorry": "box truck",
    "delivery truck": "box truck",
    "box van": "box truck",
    "coach": "bus",
    "motorbike": "motorcycle",
    "motor bike": "motorcycle",
    "scooter": "motorcycle",
    "crossover": "suv",
    "station wagon": "wagon",
    "saloon": "sedan",
    "estate": "wagon",
    "minivan": "van",
    "sportscar": "sports car",
    "sport car": "sports car",
    "back": "rear",
    "behind": "rear",
    "profile": "side",
    "front three-quarter": "three-quarter",
    "rear three-quarter": "three-quarter",
    "3/4": "three-quarter",
    "three quarter": "three-quarter",
}


# A number plate as written: letters A-Z and digits, single spaces, hyphens or dots between them
# (US "7ABC-123", EU "AB-123-CD", UK "AB12 CDE", German "B-AB 1234"), 2-10 letters and digits.
PLATE_SEPARATORS = " -."
PLATE_MIN, PLATE_MAX = 2, 10  # letters and digits
_PLATE = re.compile(r"[A-Z0-9]+(?:[ .-][A-Z0-9]+)*")
NO_PLATE = ("", "unknown", "unreadable", "illegible", "none", "null", "n/a", "na", "not visible", "-")


def plate_value(value) -> tuple[str | None, str | None]:
    """(the plate as stored, None), (None, None) where the value says no plate was read (null,
    "unreadable", "unknown", ...), or (None, why it is not a plate). Stored upper-case with runs of
    whitespace as one space; the characters and their separators are kept as written."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):  # an all-digit plate answered as a number
        value = str(value)
    if not isinstance(value, str):
        return None, f"plate {value!r} is not a string"
    v = " ".join(value.split()).upper()
    if v.lower() in NO_PLATE:
        return None, None
    bad = sorted({c for c in v if not (c.isascii() and c.isalnum()) and c not in PLATE_SEPARATORS})
    if bad:
        return None, f"plate {value!r} has characters other than A-Z, 0-9, space, hyphen or dot ({''.join(bad)!r})"
    if not _PLATE.fullmatch(v):
        return None, f"plate {value!r}: a separator must stand between two letters or digits"
    n = sum(c.isalnum() for c in v)
    if not PLATE_MIN <= n <= PLATE_MAX:
        return None, f"plate {value!r}: {n} letters and digits (a plate has {PLATE_MIN} to {PLATE_MAX})"
    return v, None


def view_phrase(view: str) -> str:
    """How a caption or query words a view. A three-quarter view is of the front or of the rear (a
    vehicle driving away shows its rear three-quarter), and the label does not say which."""
    return "three-quarter angle" if view == "three-quarter" else view


UNKNOWN = "unknown"
LABEL_KEYS = ("make", "model", "model_id", "body_type", "color", "view", "scene")


def known(labels: dict | None) -> dict:
    """The labels that say something: drops empty values and "unknown" (no constraint anywhere)."""
    return {
        k: v
        for k, v in (labels or {}).items()
        if v not in (None, "") and not (isinstance(v, str) and v.strip().lower() == UNKNOWN)
    }


def has_labels(labels: dict | None) -> bool:
    """Whether an image carries any label the offline captioner can state."""
    return any(k in known(labels) for k in ("make", "model", "body_type", "color", "view"))


def query_text(
    color: str | None = None, body_type: str | None = None, view: str | None = None, make_model: str | None = None
) -> str:
    """A search query for an attribute combination: "red sedan seen from the front"."""
    words = [w for w in (color, make_model, body_type or "car") if w]
    q = "a " + " ".join(words)
    if view:
        q += f" seen from the {view_phrase(view)}"
    return q
