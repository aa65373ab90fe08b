"""`curate`, `model` and `train` (conf/curate, conf/model, conf/train)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from carsearch.core.schema.base import (
    Fraction,
    KeyProblem,
    NonNegInt,
    NonNegNum,
    PosInt,
    PosNum,
    StrictSection,
    Text,
    to_integer,
    to_number,
)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class Boxes(StrictSection):
    margin: Annotated[float, Field(ge=0, le=2)]
    min_side: PosInt


class Curate(StrictSection):
    splits: dict[str, Fraction]
    near_duplicate_max_distance: Annotated[int, BeforeValidator(to_integer), Field(ge=-1)]
    require_fields: list[Text]
    boxes: Boxes

    @field_validator("splits")
    @classmethod
    def _splits(cls, v):
        if not v or sum(v.values()) <= 0:
            raise ValueError("needs at least one split with a fraction > 0, e.g. {train: 0.7, val: 0.1, test: 0.2}")
        if "train" not in v:
            raise ValueError("needs a 'train' split")
        return v


class TinyModel(StrictSection):
    name: Text
    kind: Literal["tiny"]
    image_size: PosInt
    patch_size: PosInt
    vision_width: PosInt
    vision_layers: PosInt
    vision_heads: PosInt
    text_width: PosInt
    text_layers: PosInt
    text_heads: PosInt
    max_text_len: Annotated[int, BeforeValidator(to_integer), Field(ge=8, le=77)]
    projection_dim: PosInt

    @model_validator(mode="after")
    def _shapes(self):
        if self.image_size % self.patch_size:
            raise KeyProblem(("image_size",), self.image_size, f"must be a multiple of patch_size ({self.patch_size})")
        for tower in ("vision", "text"):
            w, h = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if w % h:
                raise KeyProblem((f"{tower}_width",), w, f"must be a multiple of {tower}_heads ({h})")
        return self


class PretrainedModel(StrictSection):
    name: Text
    kind: Literal["pretrained"]
    pretrained: Text

    @field_validator("pretrained")
    @classmethod
    def _where(cls, v: str, info: ValidationInfo):
        root = (info.context or {}).get("root")
        p = Path(v).expanduser()
        if root is not None and (p if p.is_absolute() else Path(root) / p).is_dir():
            return v
        looks_local = v.startswith(("/", ".", "~")) or v.count("/") > 1 or "\\" in v
        if root is not None and looks_local:
            raise ValueError(
                "no such directory (a local save_pretrained directory or a hub id such as openai/clip-vit-base-patch32)"
            )
        if not looks_local and not HUB_ID.match(v):
            raise ValueError("not a hub id (such as openai/clip-vit-base-patch32) or a local directory")
        return v


def _lock(v: Any) -> Any:
    if v in ("none", "all") or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise ValueError("must be 'none', 'all' or a number of trainable last layers (>= 0)")


LockSetting = Annotated[Union[str, int], BeforeValidator(_lock)]


class Lock(StrictSection):
    image: LockSetting
    text: LockSetting


class Augment(StrictSection):
    shift: NonNegInt
    flip: bool


class EarlyStopping(StrictSection):
    metric: Optional[str]
    patience: NonNegInt
    min_delta: NonNegNum


class Train(StrictSection):
    lr: PosNum
    epochs: PosInt
    batch_size: PosInt
    seed: NonNegInt
    weight_decay: NonNegNum
    warmup_ratio: Fraction
    min_lr_ratio: Fraction
    grad_accum: PosInt
    max_grad_norm: NonNegNum
    precision: Literal["auto", "bf16", "fp32"]
    grad_checkpointing: bool
    lock: Lock
    texts: Literal["caption", "caption+queries"]
    texts_per_image: PosInt
    loss: Literal["multi_positive", "clip"]
    image_loss_weight: NonNegNum
    identity_loss_weight: NonNegNum
    prompt_loss_weight: NonNegNum
    logit_scale_init: Optional[PosNum]
    augment: Augment
    early_stopping: Optional[EarlyStopping]
    val_sets: list[Text]
    feedback_weight: NonNegNum
    feedback_queries_per_step: PosInt
    feedback_images_per_query: PosInt
    ema: Optional[Annotated[float, BeforeValidator(to_number), Field(gt=0, lt=1)]]  # EMA decay; null: off
    checkpoint_dir: Optional[str]
    resume: bool
    nproc_per_node: PosInt
    num_workers: NonNegInt
    log_every: PosInt
