"""Bedrock batch-inference record formats (documented JSONL in, `.jsonl.out` out).

Input line:  {"recordId": "...", "modelInput": {<the model's InvokeModel body>}}
Output line: {"recordId": "...", "modelInput": {...}, "modelOutput": {<InvokeModel response>}}
         or  {"recordId": "...", "modelInput": {...}, "error": {"errorCode": int, "errorMessage": str}}
Bedrock does not guarantee output order: join on recordId.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ANTHROPIC_VERSION = "bedrock-2023-05-31"


class FormatError(ValueError):
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
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
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


def claude_response(text: str, model_id: str, input_tokens: int, output_tokens: int, stop_reason: str = "end_turn") -> dict:
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


def output_record(record_id: str, model_input: dict, model_output: dict | None = None, error: dict | None = None) -> dict:
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


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False)
