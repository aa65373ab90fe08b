"""The offline captioner: a caption JSON restated from an image's known labels, answered in exactly
the `.jsonl.out` format Bedrock batch writes (so the rest of the pipeline cannot tell it apart)."""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import sys
from pathlib import Path

from carsearch.core import vocab
from carsearch.core.vocab import UNKNOWN, has_labels, known, view_phrase
from carsearch.features.captioning import formats
from carsearch.features.captioning.cache import answer_files
from carsearch.features.captioning.requests import estimate_input_tokens

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
        "caption": text,
    }


# The offline captioner restates labels; an image with none cannot be captioned offline.
NO_LABELS = "offline captioner: image has no labels"


def offline_output(record: dict, labels: dict | None, model_id: str, image_tokens: int | None = None) -> dict:
    """The `.jsonl.out` line for one request: a Claude or Nova response (by the shape of the
    request) from whatever labels the image has (partial labels are labels), or a record error (as
    Bedrock reports failed records) when it has none."""
    rid, body = record["recordId"], record["modelInput"]
    if not has_labels(labels):
        return formats.output_record(rid, body, error={"errorCode": 400, "errorMessage": NO_LABELS})
    text = json.dumps(offline_caption(labels, rid))
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


def offline_key_extra(labels: dict | None) -> dict:
    """Per-record cache-key material of the offline captioner: it answers from the labels."""
    return {"labels": labels}


def run_offline(
    input_files: list[Path],
    out_dir: Path,
    labels_by_id: dict[str, dict | None],
    model_id: str,
    progress: bool = True,
    cache=None,
) -> dict:
    """Answer every input file into `out_dir/<name>.out` plus `manifest.json.out`. With a
    `caption_cache.CaptionCache`, records answered before are replayed from it and only the rest
    are captioned (and stored); the returned totals (and manifest.json.out) count what was captioned."""

    def answer_all(records):
        return (offline_output(rec, labels_by_id.get(rec["recordId"]), model_id) for rec in records)

    return answer_files(
        input_files,
        out_dir,
        cache,
        answer_all,
        progress,
        extra=lambda r: offline_key_extra(labels_by_id.get(r["recordId"])),
    )
