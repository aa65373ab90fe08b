"""The label vocabulary every stage speaks: body types, colours, views, the synonyms an LLM answer is
normalised with, the labels that say something (`known`), and the query text of an attribute set."""

from __future__ import annotations

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


def view_phrase(view: str) -> str:
    return "front three-quarter angle" if view == "three-quarter" else view


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
