"""Bedrock batch-inference record formats (documented JSONL in, `.jsonl.out` out) for two model
families: Anthropic Claude (messages body, image inline as base64) and Amazon Nova (messages-v1,
image by `source.s3Location`).

Input line:  {"recordId": "...", "modelInput": {<the model's InvokeModel body>}}
Output line: {"recordId": "...", "modelInput": {...}, "modelOutput": {<InvokeModel response>}}
         or  {"recordId": "...", "modelInput": {...}, "error": {"errorCode": int, "errorMessage": str}}
Bedrock does not guarantee output order: join on recordId.

The vehicles prompt (`vehicles_prompt`: every vehicle, its box in pixels of the image as sent, whose
size the prompt states) lives here too: make_jsonl writes it, the offline captioner, the emulators
and curate read it back (`wants_vehicles`, `stated_image_size`).

Over 350 lines on purpose: the Claude, Nova and chat-completions record formats are checked side by
side, so a change to one is made against the others; the vehicles prompt is part of every one of them.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carsearch.captioning import formats
from carsearch.core import imaging
from carsearch.core.errors import CarsearchError
from carsearch.core.vocab import BODY_TYPES, CAPTION_CLASSES, COLORS, VIEWS

ANTHROPIC_VERSION = "bedrock-2023-05-31"


class FormatError(CarsearchError, ValueError):
    """A record that does not follow the documented format."""


# ---------------------------------------------------------------- Anthropic Claude messages
class _ImageSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^base64$")
    media_type: str = Field(pattern="^image/(jpeg|png|gif|webp)$")
    data: str = Field(min_length=1)


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(pattern="^(text|image)$")
    text: str | None = None
    source: _ImageSource | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(user|assistant)$")
    content: list[_Block] = Field(min_length=1)


class ClaudeRequest(BaseModel):
    """The InvokeModel body of Anthropic Claude (messages API) on Bedrock."""

    model_config = ConfigDict(extra="forbid")
    anthropic_version: str = Field(pattern="^bedrock-")
    max_tokens: int = Field(gt=0)
    system: str | None = None
    messages: list[_Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=1)


class RequestRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recordId: str = Field(min_length=1, max_length=256)
    modelInput: dict[str, Any]


def image_media_type(data: bytes) -> str:
    with imaging.open_image(data) as im:
        fmt = (im.format or "").lower()
    return {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}.get(fmt, "")


def claude_request(
    image: bytes,
    system_prompt: str,
    user_prompt: str,
    max_tokens: int = 512,
    temperature: float | None = 0.0,
    media_type: str | None = None,
) -> dict:
    """A validated Claude messages body with the image inline as base64."""
    body = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": max_tokens,
        "system": system_prompt,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": media_type or image_media_type(image),
                            "data": base64.b64encode(image).decode("ascii"),
                        },
                    },
                    {"type": "text", "text": user_prompt},
                ],
            }
        ],
    }
    if temperature is not None:
        body["temperature"] = temperature
    ClaudeRequest.model_validate(body)
    return body


def request_record(record_id: str, model_input: dict) -> dict:
    rec = {"recordId": record_id, "modelInput": model_input}
    try:
        RequestRecord.model_validate(rec)
    except ValidationError as e:
        raise FormatError(f"record {record_id!r}: {e.errors()[0]['msg']}") from None
    return rec


def claude_response(
    text: str, model_id: str, input_tokens: int, output_tokens: int, stop_reason: str = "end_turn"
) -> dict:
    """A Claude messages response as Bedrock returns it in `modelOutput`."""
    return {
        "id": f"msg_bdrk_{uuid.uuid5(uuid.NAMESPACE_URL, model_id + text).hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model_id.split(".", 1)[-1].split(":")[0],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def output_record(
    record_id: str, model_input: dict, model_output: dict | None = None, error: dict | None = None
) -> dict:
    rec = {"recordId": record_id, "modelInput": model_input}
    if error is not None:
        rec["error"] = error
    else:
        rec["modelOutput"] = model_output
    return rec


def response_text(model_output: dict) -> str:
    """The text of a model response (Claude messages or Amazon Nova converse shape)."""
    if not isinstance(model_output, dict):
        raise FormatError("modelOutput is not an object")
    if "content" in model_output and isinstance(model_output["content"], list):  # Claude
        parts = [b.get("text", "") for b in model_output["content"] if isinstance(b, dict) and b.get("type") == "text"]
    elif "output" in model_output:  # Nova: {"output": {"message": {"content": [{"text": ...}]}}}
        content = model_output["output"].get("message", {}).get("content", [])
        parts = [b.get("text", "") for b in content if isinstance(b, dict)]
    elif "choices" in model_output:  # OpenAI-compatible chat completion
        parts = [c.get("message", {}).get("content") or "" for c in model_output["choices"]]
    else:
        raise FormatError("modelOutput has no content/output/choices")
    return "".join(parts)


def usage_tokens(model_output: dict) -> tuple[int, int]:
    u = model_output.get("usage") or {}
    return int(u.get("input_tokens", u.get("inputTokens", u.get("prompt_tokens", 0))) or 0), int(
        u.get("output_tokens", u.get("outputTokens", u.get("completion_tokens", 0))) or 0
    )


# ---------------------------------------------------------------- model families
FAMILIES = ("claude", "nova")
_REGION_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "jp.", "au.", "ca.", "global.")


def base_model_id(model_id: str) -> str:
    """`anthropic.claude-3-haiku-...` from an id, a cross-region profile id (`us.anthropic...`) or an ARN."""
    mid = (model_id or "").strip()
    if mid.startswith("arn:"):
        mid = mid.rsplit("/", 1)[-1]
    for p in _REGION_PREFIXES:
        if mid.startswith(p):
            return mid[len(p) :]
    return mid


def model_family(model_id: str, family: str | None = "auto") -> str:
    """The request format for a model: `claude` or `nova` (from the id unless `family` names one)."""
    if family and family != "auto":
        if family not in FAMILIES:
            raise FormatError(f"caption.family: unknown model family {family!r} (expected auto, {', '.join(FAMILIES)})")
        return family
    mid = base_model_id(model_id)
    if mid.startswith("anthropic.claude"):
        return "claude"
    if mid.startswith("amazon.nova"):
        if mid.startswith("amazon.nova-micro"):
            raise FormatError(
                f"caption.model_id: {model_id!r} is text-only (Nova Micro takes no images); use amazon.nova-lite or -pro"
            )
        return "nova"
    raise FormatError(
        f"caption.model_id: unknown model family for {model_id!r} "
        "(supported: anthropic.claude-* and amazon.nova-*, optionally with a us./eu./apac. profile prefix; "
        "or set caption.family to claude/nova)"
    )


# ---------------------------------------------------------------- Amazon Nova (messages-v1)
class _NovaText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)


class _NovaS3Location(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+")
    bucketOwner: str | None = Field(default=None, pattern=r"^[0-9]{12}$")


class _NovaImageSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    s3Location: _NovaS3Location | None = None
    bytes: str | None = None


class _NovaImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field(pattern="^(jpeg|png|gif|webp)$")
    source: _NovaImageSource


class _NovaBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    image: _NovaImage | None = None


class _NovaMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(user|assistant)$")
    content: list[_NovaBlock] = Field(min_length=1)


class _NovaInference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    maxTokens: int | None = Field(default=None, gt=0, le=10000)
    temperature: float | None = Field(default=None, ge=0, le=1)
    topP: float | None = Field(default=None, ge=0, le=1)
    topK: int | None = None
    stopSequences: list[str] | None = None


class NovaRequest(BaseModel):
    """The InvokeModel body of Amazon Nova Lite/Pro (`messages-v1`) on Bedrock."""

    model_config = ConfigDict(extra="forbid")
    schemaVersion: str = Field(pattern="^messages-v1$")
    system: list[_NovaText] | None = None
    messages: list[_NovaMessage] = Field(min_length=1)
    inferenceConfig: _NovaInference | None = None


def nova_request(
    image_uri: str,
    image_format: str,
    system_prompt: str,
    user_prompt: str,
    max_tokens: int = 512,
    temperature: float | None = 0.0,
    bucket_owner: str | None = None,
) -> dict:
    """A validated Nova messages-v1 body with the image referenced by `source.s3Location`."""
    loc = {"uri": image_uri}
    if bucket_owner:
        loc["bucketOwner"] = str(bucket_owner)
    inference = {"maxTokens": max_tokens}
    if temperature is not None:
        inference["temperature"] = temperature
    body = {
        "schemaVersion": "messages-v1",
        "system": [{"text": system_prompt}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": {"format": image_format, "source": {"s3Location": loc}}},
                    {"text": user_prompt},
                ],
            }
        ],
        "inferenceConfig": inference,
    }
    NovaRequest.model_validate(body)
    return body


def nova_response(text: str, input_tokens: int, output_tokens: int, stop_reason: str = "end_turn") -> dict:
    """A Nova response as Bedrock returns it in `modelOutput`."""
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop_reason,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
    }


_SCHEMAS = {"claude": ClaudeRequest, "nova": NovaRequest}


def validate_record(rec: Any, family: str, where: str = "") -> dict:
    """Validate one input line (recordId + the family's InvokeModel body); FormatError names the record."""
    if not isinstance(rec, dict):
        raise FormatError(f"{where}: line is not a JSON object")
    rid = rec.get("recordId")
    name = f"{where} record {rid!r}" if where else f"record {rid!r}"
    try:
        RequestRecord.model_validate(rec)
        _SCHEMAS[family].model_validate(rec["modelInput"])
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise FormatError(f"{name}: {loc}: {err['msg']}") from None
    return rec


# ---------------------------------------------------------------- output lines
_RID = re.compile(r'"recordId"\s*:\s*"([^"]{1,256})"')
REFUSAL_STOPS = {"refusal", "content_filtered", "guardrail_intervened", "content_filter"}


def parse_output_line(line: str, where: str) -> dict:
    """One `.jsonl.out` line; a malformed or truncated line raises FormatError naming `where` and,
    when it can still be read from the text, the recordId."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        m = _RID.search(line)
        who = f" (record {m.group(1)!r})" if m else ""
        raise FormatError(f"{where}{who}: malformed or truncated output line ({e.msg})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("recordId"), str):
        raise FormatError(f"{where}: output line has no recordId")
    if "modelOutput" not in rec and "error" not in rec:
        raise FormatError(f"{where} record {rec['recordId']!r}: output line has neither modelOutput nor error")
    return rec


def stop_reason(model_output: dict) -> str | None:
    if not isinstance(model_output, dict):
        return None
    if "stop_reason" in model_output:
        return model_output.get("stop_reason")
    if "stopReason" in model_output:
        return model_output.get("stopReason")
    ch = model_output.get("choices")
    if isinstance(ch, list) and ch and isinstance(ch[0], dict):
        return ch[0].get("finish_reason")
    return None


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False)


def empty_totals() -> dict:
    return {
        "totalRecordCount": 0,
        "processedRecordCount": 0,
        "successRecordCount": 0,
        "errorRecordCount": 0,
        "inputTokenCount": 0,
        "outputTokenCount": 0,
    }


def count_output(totals: dict, out: dict) -> None:
    """Add one `.jsonl.out` line to manifest.json.out-style totals (processed, success/error, tokens)."""
    totals["processedRecordCount"] += 1
    if "error" in out:
        totals["errorRecordCount"] += 1
    else:
        totals["successRecordCount"] += 1
        i, o = formats.usage_tokens(out["modelOutput"])
        totals["inputTokenCount"] += i
        totals["outputTokenCount"] += o


# ---------------------------------------------------------------- the vehicles prompt
VEHICLES_SYSTEM_PROMPT = (
    "You are a vehicle annotator for a traffic-camera search engine. Find every vehicle in the image. "
    "Answer with exactly one JSON object and nothing else."
)
# what every prompt that asks for plates says about them (the vehicles prompt; conf's caption prompt too)
PLATE_INSTRUCTION = (
    '"plate" is the number plate\'s text exactly as written (letters A-Z, digits, and its spaces or hyphens), '
    "front or rear, whichever you can read; null where no plate is visible or it cannot be read with certainty "
    "(never guess a character)."
)
_STATED_SIZE = re.compile(r"The image is (\d+)x(\d+) pixels")
_ASKS_VEHICLES = re.compile(r'"vehicles"\s*:\s*\[')


def vehicles_prompt(width: int, height: int) -> str:
    """The user prompt asking for every vehicle with its box, in pixels of the image as sent
    (`width` x `height`, stated in the prompt so the answer can be scaled back to the frame)."""
    return (
        f"The image is {width}x{height} pixels (width x height). List every vehicle in it, as one JSON object: "
        '{"caption": "one sentence about the whole scene", "vehicles": [{"box": [x1, y1, x2, y2], '
        f'"class": "{"|".join(CAPTION_CLASSES)}", "color": "...", "body_type": "...", "view": "...", '
        '"plate": "..." or null, "caption": "one sentence about this vehicle"}]}. '
        f'"box" is in pixels of this {width}x{height} image, origin at the top-left corner, x1 < x2 and y1 < y2, '
        "tight around the vehicle. "
        f'"color" is one of: {", ".join(COLORS)}; "body_type" one of: {", ".join(BODY_TYPES)}; '
        f'"view" one of: {", ".join(VIEWS)}; "unknown" where you cannot tell. '
        f"{PLATE_INSTRUCTION} "
        'One entry per vehicle (never two boxes for one vehicle); "vehicles": [] when there is none.'
    )


def _texts(model_input: dict) -> list[str]:
    """Every prompt text of a Claude, Nova or chat-completions body."""
    if not isinstance(model_input, dict):
        return []
    out = []
    for part in [model_input.get("system")] + [m.get("content") for m in model_input.get("messages") or []]:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, list):
            out += [b["text"] for b in part if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return out


def wants_vehicles(model_input: dict) -> bool:
    """Whether a request (Claude, Nova or chat body) asks for every vehicle (the `vehicles` JSON)."""
    return any(_ASKS_VEHICLES.search(t) for t in _texts(model_input))


def stated_image_size(model_input: dict) -> tuple[int, int] | None:
    """The image size a vehicles prompt states (the pixels its boxes are in), or None."""
    for t in _texts(model_input):
        m = _STATED_SIZE.search(t)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None
