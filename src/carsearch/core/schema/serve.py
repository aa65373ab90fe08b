"""`serve` and `mlflow` (conf/serve/default.yaml, conf/config.yaml)."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BeforeValidator, Field

from carsearch.core.schema.base import NonNegInt, OpenSection, PosInt, Text, to_integer


class Serve(OpenSection):
    """`carsearch serve` (conf/serve/default.yaml); permissive: the service reads what it knows."""

    host: Text
    port: Annotated[int, BeforeValidator(to_integer), Field(ge=0, le=65535)]
    token: Optional[Text]
    upload_rate_per_minute: NonNegInt
    max_upload_bytes: PosInt
    max_image_pixels: PosInt
    default_page_size: PosInt
    max_page_size: PosInt
    max_results: PosInt
    facet_candidates: PosInt
    facet_top: PosInt
    thumb_size: Annotated[int, BeforeValidator(to_integer), Field(ge=16, le=2048)]
    cache_dir: Optional[str]
    text_cache_size: NonNegInt
    torch_threads: NonNegInt
    export_clip_margin_s: Annotated[float, Field(ge=0)]
    export_max_hits: PosInt


class MLflow(OpenSection):
    tracking_uri: Text
    experiment: Text
    registered_model: Text
