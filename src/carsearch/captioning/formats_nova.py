"""Amazon Nova (messages-v1) request and response bodies for Bedrock batch inference (re-exported by
`carsearch.captioning.formats`, which holds the record format shared with Claude)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
