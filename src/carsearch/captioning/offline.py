"""The offline captioner: a caption JSON restated from an image's known labels, answered in exactly
the `.jsonl.out` format Bedrock batch writes (so the rest of the pipeline cannot tell it apart).
Asked for every vehicle (`formats.wants_vehicles`), it restates the frame's known boxes (a manifest
row's `boxes`, as ingest writes them for annotated folders) in the vehicles answer format, in
pixels of the image as sent (the size the prompt states). A vehicle's plate is restated where the
render says it is legible (labels `plate` and `plate_legible`: the plate is tall enough in the image
to be read), null elsewhere, as the prompts ask."""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import sys
from pathlib import Path

from carsearch.captioning import formats
from carsearch.captioning.cache import answer_files
from carsearch.captioning.requests import estimate_input_tokens
from carsearch.core import vocab
from carsearch.core.vocab import UNKNOWN, has_labels, known, plate_value, view_phrase

_TEMPLATES = (
    "A {color} {makemodel} {body} seen from the {view}{scene}.",
    "{view_cap} view of a {color} {body}, a {makemodel}{scene}.",
    "Traffic camera shot of a {color} {makemodel} {body}, {view} view{scene}.",
    "The {view} of a {color} {body} ({makemodel}){scene}.",
    "{color_cap} {body} from the {view}: a {makemodel}{scene}.",
    "A {makemodel} in {color}, a {body} photographed from the {view}{scene}.",
)


_PARTIAL_TEMPLATES = (
    "A {desc}{view}{scene}.",
    "Traffic camera shot of a {desc}{view}{scene}.",
    "Photo of a {desc}{view}{scene}.",
)


def legible_plate(labels: dict | None) -> str | None:
    """The plate an annotator could read in the image: the `plate` label where `plate_legible` is
    true (a plate label without legibility, e.g. a labels.csv column, is taken as legible)."""
    lab = labels or {}
    legible = lab.get("plate_legible", True)
    if isinstance(legible, str):
        legible = legible.strip().lower() in ("1", "true", "yes")
    return plate_value(lab.get("plate"))[0] if legible else None


# what OCR reads a character as (both ways); a misread is one of these, a dropped or an extra character
LOOK_ALIKES = {"0": "O", "O": "0", "8": "B", "B": "8", "1": "I", "I": "1", "5": "S", "S": "5"}


def misread(plate: str | None, record_id: str, rate: float) -> str | None:
    """The plate as an OCR reads it: wrong at `rate` (deterministic per record): a look-alike
    swapped (0/O, 8/B, 1/I, 5/S) where it has one, else or at random a character dropped or an extra
    one (a neighbour doubled); always still a plate (`vocab.plate_value`), else read right."""
    if not plate or rate <= 0:
        return plate
    rng = random.Random(int(hashlib.sha256(f"{record_id}#plate".encode()).hexdigest()[:12], 16))
    if rng.random() >= rate:
        return plate
    chars = list(plate)
    at = [i for i, c in enumerate(chars) if c.isalnum()]
    look = [i for i in at if chars[i] in LOOK_ALIKES]
    how = rng.random()
    if look and how < 0.6:
        i = rng.choice(look)
        chars[i] = LOOK_ALIKES[chars[i]]
    elif how < 0.8:
        del chars[rng.choice(at)]
    else:
        i = rng.choice(at)
        chars.insert(i, chars[i])
    read, _ = plate_value("".join(chars))
    return read or plate


def offline_caption(labels: dict, record_id: str, misread_rate: float = 0.0) -> dict:
    """A caption JSON built from known labels, phrased differently per record (deterministic); a
    legible plate misread at `misread_rate` (`caption.offline.plate_misread_rate`; `misread`).

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
            color=color,
            color_cap=color.capitalize(),
            makemodel=makemodel,
            body=body,
            view=view_phrase(view),
            view_cap=view_phrase(view).capitalize(),
            scene=scene_txt,
        )
    else:
        named = " ".join(v for v in (lab.get("make"), lab.get("model")) if v) or None
        desc = " ".join(w for w in (color, named, body or "car") if w)
        view_txt = f" seen from the {view_phrase(view)}" if view else ""
        text = rng.choice(_PARTIAL_TEMPLATES).format(desc=desc, view=view_txt, scene=scene_txt)
    return {
        "make": make,
        "model": model,
        "body_type": body or UNKNOWN,
        "color": color or UNKNOWN,
        "view": view or UNKNOWN,
        "plate": misread(legible_plate(labels), record_id, misread_rate),
        "caption": text,
    }


# The offline captioner restates labels; an image with none cannot be captioned offline.
NO_LABELS = "offline captioner: image has no labels"
NO_LABELS_OR_BOXES = "offline captioner: image has no labels and no boxes"


def _short(v: dict) -> str:
    return " ".join(
        w for w in (v["color"], v["body_type"] if v["body_type"] != UNKNOWN else v["class"]) if w != UNKNOWN
    )


def offline_vehicles(
    labels: dict | None,
    frame: dict | None,
    record_id: str,
    sent_size: tuple[int, int] | None = None,
    misread_rate: float = 0.0,
) -> dict:
    """The vehicles answer for a frame: each known box (`frame["boxes"]`, in the frame's pixels,
    scaled to `sent_size`, the image as sent) with its labels (the frame's, overlaid by the box's,
    as the index's crop rows have them) and a caption of its own; a frame without boxes has none."""
    frame = frame or {}
    fw, fh = frame.get("width"), frame.get("height")
    sx, sy = (sent_size[0] / fw, sent_size[1] / fh) if sent_size and fw and fh else (1.0, 1.0)
    vehicles = []
    for k, b in enumerate(frame.get("boxes") or [], 1):
        lab = known({**(labels or {}), **(b.get("labels") or {})})
        cls = str(b.get("class") or "car").strip().lower()
        cap = offline_caption(lab, f"{record_id}#{k}", misread_rate)
        vehicles.append(
            {
                "box": [round(b["x1"] * sx, 1), round(b["y1"] * sy, 1), round(b["x2"] * sx, 1), round(b["y2"] * sy, 1)],
                "class": cls,
                "color": cap["color"],
                "body_type": cap["body_type"],
                "view": cap["view"],
                "plate": cap["plate"],
                "caption": cap["caption"] if has_labels(lab) else f"A {cls} in the traffic scene.",
            }
        )
    if len(vehicles) == 1:
        caption = vehicles[0]["caption"]
    elif vehicles:
        descs = [f"a {_short(v) or 'vehicle'}" for v in vehicles]
        caption = f"{len(vehicles)} vehicles: {', '.join(descs[:-1])} and {descs[-1]}."
    else:
        caption = offline_caption(labels or {}, record_id)["caption"]
    return {"caption": caption, "vehicles": vehicles}


def offline_output(
    record: dict,
    labels: dict | None,
    model_id: str,
    image_tokens: int | None = None,
    frame: dict | None = None,
    misread_rate: float = 0.0,
) -> dict:
    """The `.jsonl.out` line for one request: a Claude or Nova response (by the shape of the
    request) from whatever labels the image has (partial labels are labels), or a record error (as
    Bedrock reports failed records) when it has none. A vehicles request is answered from the
    frame's boxes (`frame`: its manifest row, with `width`, `height`, `boxes`) as well."""
    rid, body = record["recordId"], record["modelInput"]
    if formats.wants_vehicles(body):
        if not has_labels(labels) and not (frame or {}).get("boxes"):
            return formats.output_record(rid, body, error={"errorCode": 400, "errorMessage": NO_LABELS_OR_BOXES})
        text = json.dumps(offline_vehicles(labels, frame, rid, formats.stated_image_size(body), misread_rate))
    elif not has_labels(labels):
        return formats.output_record(rid, body, error={"errorCode": 400, "errorMessage": NO_LABELS})
    else:
        text = json.dumps(offline_caption(labels, rid, misread_rate))
    n_in, n_out = estimate_input_tokens(body, image_tokens), max(1, len(text) // 4)
    if "schemaVersion" in body:
        out = formats.nova_response(text, n_in, n_out)
    else:
        out = formats.claude_response(text, model_id, n_in, n_out)
    return formats.output_record(rid, body, model_output=out)


def offline_captioner_version() -> str:
    """A hash of the offline captioner's code (part of its cache key: new code, new answers)."""
    src = inspect.getsource(sys.modules[__name__]) + inspect.getsource(vocab) + inspect.getsource(estimate_input_tokens)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def offline_key_extra(labels: dict | None, frame: dict | None = None) -> dict:
    """Per-record cache-key material of the offline captioner: it answers from the labels (and, asked
    for every vehicle, from the frame's boxes and size: `frame` given only then)."""
    if frame is None:
        return {"labels": labels}
    return {"labels": labels, "boxes": frame.get("boxes") or [], "size": [frame.get("width"), frame.get("height")]}


def run_offline(
    input_files: list[Path],
    out_dir: Path,
    labels_by_id: dict[str, dict | None],
    model_id: str,
    progress: bool = True,
    cache=None,
    frames_by_id: dict[str, dict] | None = None,
    misread_rate: float = 0.0,
) -> dict:
    """Answer every input file into `out_dir/<name>.out` plus `manifest.json.out`. With a
    `caption_cache.CaptionCache`, records answered before are replayed from it and only the rest
    are captioned (and stored); the returned totals (and manifest.json.out) count what was captioned.
    `frames_by_id` (recordId -> manifest row): the frames' boxes, for vehicles requests;
    `misread_rate`: `caption.offline.plate_misread_rate`."""
    frames = frames_by_id or {}

    def answer_all(records):
        return (
            offline_output(
                rec,
                labels_by_id.get(rec["recordId"]),
                model_id,
                frame=frames.get(rec["recordId"]),
                misread_rate=misread_rate,
            )
            for rec in records
        )

    def extra(rec: dict) -> dict:
        frame = frames.get(rec["recordId"], {}) if formats.wants_vehicles(rec["modelInput"]) else None
        return offline_key_extra(labels_by_id.get(rec["recordId"]), frame)

    return answer_files(
        input_files,
        out_dir,
        cache,
        answer_all,
        progress,
        extra=extra,
    )
