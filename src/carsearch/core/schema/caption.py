"""`caption` (conf/caption/): the captioner backends, their quotas, cache and prompts."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BeforeValidator, Field, model_validator

from carsearch.core.schema.base import (
    Int,
    KeyProblem,
    NonNegNum,
    OpenSection,
    PosInt,
    PosNum,
    StrictSection,
    Text,
    to_integer,
    to_number,
)


class Quotas(StrictSection):
    min_records_per_job: PosInt
    max_records_per_job: PosInt
    max_file_bytes: PosInt

    @model_validator(mode="after")
    def _order(self):
        if self.min_records_per_job > self.max_records_per_job:
            raise KeyProblem(
                ("min_records_per_job",),
                self.min_records_per_job,
                f"must be <= max_records_per_job ({self.max_records_per_job})",
            )
        return self


class CaptionS3(StrictSection):
    bucket: Optional[str]
    prefix: str
    bucket_owner: Optional[Union[str, Int]]


class Bedrock(StrictSection):
    role_arn: Optional[Annotated[str, Field(pattern=r"^arn:")]]
    region: Optional[str]
    poll_initial_s: NonNegNum
    poll_max_s: NonNegNum
    poll_factor: Annotated[float, BeforeValidator(to_number), Field(ge=1)]
    wait_timeout_s: Optional[NonNegNum]
    job_timeout_hours: Annotated[int, BeforeValidator(to_integer), Field(ge=24, le=168)]
    api_max_attempts: PosInt
    api_backoff_s: NonNegNum
    resubmit_failed: bool
    allow_incomplete: bool
    state_dir: Text


class OpenAI(StrictSection):
    base_url: Optional[Annotated[str, Field(pattern=r"^https?://")]]
    model: Optional[str]
    api_key_env: Optional[str]
    concurrency: PosInt
    timeout_s: PosNum
    max_attempts: PosInt
    backoff_s: NonNegNum


class CaptionCache(StrictSection):
    enabled: bool
    dir: Text
    pad_small_jobs: bool


class CaptionOffline(StrictSection):
    plate_misread_rate: Annotated[float, BeforeValidator(to_number), Field(ge=0, le=1)]


class Caption(OpenSection):
    backend: Literal["offline", "bedrock", "openai"]
    model_id: Text
    family: Literal["auto", "claude", "nova"]
    max_tokens: PosInt
    temperature: Annotated[float, BeforeValidator(to_number), Field(ge=0, le=2)]
    max_image_edge: Annotated[int, BeforeValidator(to_integer), Field(ge=16)]
    max_image_bytes: PosInt
    records_per_file: Optional[PosInt]
    quotas: Quotas
    system_prompt: Text
    user_prompt: Text
    vehicles: Union[bool, Literal["auto"]]
    vehicles_system_prompt: Optional[Text]
    vehicles_max_tokens: PosInt
    s3: CaptionS3
    bedrock: Bedrock
    openai: OpenAI
    cache: CaptionCache
    pricing: Optional[str]
    offline: CaptionOffline
