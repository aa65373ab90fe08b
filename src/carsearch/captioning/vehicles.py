"""Every vehicle of a frame from an LLM answer to the vehicles prompt (`formats.vehicles_prompt`):
`{"caption": ..., "vehicles": [{"box": [x1, y1, x2, y2], "class", "color", "body_type", "view",
"plate", "caption"}]}` -> boxes of the `boxes` contract (`source="llm"`, `labels` from the attributes, each
with its own `caption`), in the frame's pixels, plus one reason per entry that cannot be used.

A box is read in pixels of the image as sent (the size the prompt stated), scaled to the stored
frame, then checked with `boxes.check_box`; all values <= 1.0 are normalised coordinates, scaled
to pixels (the box's `note` says so). Rejected with a reason naming the entry and its box: not 4
numbers, reaching outside the image, no area, smaller than `min_side`, a duplicate of an earlier
box (IoU > 0.9: one caption per box), an unknown class or attribute value (after the vocabulary's
synonyms), no caption. A plate that is not one (`vocab.plate_value`) is dropped with its reason
(`VehicleAnswer.plates_dropped`), the rest of the vehicle kept; a readable one is the box's
`plate` label."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from carsearch.captioning.parse import CaptionError, answer_json
from carsearch.core.vocab import BODY_TYPES, CAPTION_CLASSES, COLORS, SYNONYMS, UNKNOWN, VIEWS, plate_value
from carsearch.sources.boxes import COORDS, check_box

DUPLICATE_IOU = 0.9  # a box overlapping an earlier one this much is the same vehicle
OUTSIDE_TOLERANCE = 0.02  # of the image's width/height: a box may overshoot the edge this much (clipped)
MIN_CAPTION = 8  # characters, as `parse.Caption.caption`
ATTRIBUTES = {"color": COLORS, "body_type": BODY_TYPES, "view": VIEWS}
CLASS_SYNONYMS = {
    "automobile": "car",
    "sedan": "car",
    "lorry": "truck",
    "motorbike": "motorcycle",
    "scooter": "motorcycle",
    "minivan": "van",
    "pick-up": "pickup",
    "pickup truck": "pickup",
}


@dataclass
class VehicleAnswer:
    """What one vehicles answer says: the scene's caption, the usable boxes, and why the rest are not."""

    caption: str | None
    boxes: list[dict] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    plates_dropped: list[str] = field(default_factory=list)  # "vehicle k box [...]: plate ...": vehicle kept


def iou(a: dict, b: dict) -> float:
    ix = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    union = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) - inter
    return inter / union if union > 0 else 0.0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _coords(raw) -> list[float] | None:
    if isinstance(raw, dict) and all(k in raw for k in COORDS):
        raw = [raw[k] for k in COORDS]
    if isinstance(raw, (list, tuple)) and len(raw) == 4 and all(_is_number(v) for v in raw):
        return [float(v) for v in raw]
    return None


def _vocab_value(name: str, value, allowed: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(normalised value | None for "not said", None) or (None, why it is not a known value)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", UNKNOWN)):
        return None, None
    if not isinstance(value, str):
        return None, f"{name} {value!r} is not a string"
    v = value.strip().lower()
    v = (CLASS_SYNONYMS if name == "class" else SYNONYMS).get(v, v)
    if v not in allowed:
        return None, f"{name} {value!r} is not one of {', '.join(allowed)}"
    return v, None


def _entry(
    entry, frame: tuple[int, int], sent: tuple[int, int], min_side: int
) -> tuple[dict | None, str | None, str | None]:
    """(box in frame pixels, its note, None) or (None, None, why this entry cannot be used)."""
    if not isinstance(entry, dict):
        return None, None, f"{entry!r} is not an object"
    raw = entry.get("box")
    xy = _coords(raw)
    if xy is None:
        return None, None, f"box {raw!r} is not 4 numbers [x1, y1, x2, y2]"
    sw, sh = sent
    note = None
    if all(v <= 1.0 for v in xy):
        xy = [xy[0] * sw, xy[1] * sh, xy[2] * sw, xy[3] * sh]
        note = f"normalised coordinates {raw!r} scaled to the {sw}x{sh} px image"
    tx, ty = OUTSIDE_TOLERANCE * sw, OUTSIDE_TOLERANCE * sh
    if xy[0] < -tx or xy[1] < -ty or xy[2] > sw + tx or xy[3] > sh + ty:
        return None, None, f"box {raw!r} reaches outside the {sw}x{sh} image"
    fx, fy = frame[0] / sw, frame[1] / sh
    geometry = {"x1": xy[0] * fx, "y1": xy[1] * fy, "x2": xy[2] * fx, "y2": xy[3] * fy}
    clipped, why = check_box(geometry, frame[0], frame[1], min_side)
    if why:
        return None, None, why
    cls, why = _vocab_value("class", entry.get("class"), CAPTION_CLASSES)
    if why or cls is None:
        return None, None, why or f"no class (one of {', '.join(CAPTION_CLASSES)})"
    labels = {}
    for name, allowed in ATTRIBUTES.items():
        value, why = _vocab_value(name, entry.get(name), allowed)
        if why:
            return None, None, why
        if value is not None:
            labels[name] = value
    if labels.get("body_type") is None and cls in BODY_TYPES:  # "suv", "van", "pickup" say the body type
        labels["body_type"] = cls
    caption = entry.get("caption")
    if not isinstance(caption, str) or len(caption.strip()) < MIN_CAPTION:
        return None, None, f"no caption (one sentence about this vehicle, at least {MIN_CAPTION} characters)"
    plate, plate_why = plate_value(entry.get("plate"))
    if plate is not None:
        labels["plate"] = plate
    box = {**clipped, "class": cls, "score": None, "source": "llm", "labels": labels, "caption": caption.strip()}
    if plate_why:
        box["_plate_dropped"] = plate_why
    return box, note, None


def parse_vehicle_answer(
    text: str,
    width: int,
    height: int,
    min_side: int,
    sent_size: tuple[int, int] | None = None,
    frame_id: str | None = None,
) -> VehicleAnswer:
    """The scene caption, the usable boxes (in pixels of the `width` x `height` frame) and one
    reason per rejected entry of a vehicles answer. `sent_size`: the image size the model saw (its
    boxes' pixels; default the frame's). CaptionError when the answer has no usable JSON at all."""
    obj = answer_json(text)
    vehicles = obj.get("vehicles")
    if not isinstance(vehicles, list):
        raise CaptionError(f"field 'vehicles': {'missing' if vehicles is None else 'not a list'}")
    caption = obj.get("caption")
    caption = caption.strip() if isinstance(caption, str) and caption.strip() else None
    sent = tuple(sent_size) if sent_size else (width, height)
    out = VehicleAnswer(caption)
    for k, entry in enumerate(vehicles, 1):
        box, note, why = _entry(entry, (width, height), sent, min_side)
        name = f"vehicle {k}" + (f" box {entry.get('box')!r}" if isinstance(entry, dict) else "")
        if why is None:
            dup = next((j for j, b in enumerate(out.boxes) if iou(b, box) > DUPLICATE_IOU), None)
            if dup is not None:
                why = (
                    f"duplicate of vehicle {out.boxes[dup]['vehicle']} (IoU {iou(out.boxes[dup], box):.2f} > "
                    f"{DUPLICATE_IOU}): one caption per box"
                )
        if why is not None:
            out.rejected.append(f"{name}: {why}")
            continue
        box.update({"frame": frame_id, "vehicle": k})
        dropped = box.pop("_plate_dropped", None)
        if dropped:
            out.plates_dropped.append(f"{name}: {dropped}; plate dropped, vehicle kept")
        if note:
            box["note"] = note
        out.boxes.append(box)
    return out


def parse_vehicles(
    text: str,
    width: int,
    height: int,
    min_side: int,
    sent_size: tuple[int, int] | None = None,
    frame_id: str | None = None,
) -> tuple[list[dict], list[str]]:
    """(contract boxes, reasons for the rejected entries) of a vehicles answer (`parse_vehicle_answer`)."""
    ans = parse_vehicle_answer(text, width, height, min_side, sent_size, frame_id)
    return ans.boxes, ans.rejected
