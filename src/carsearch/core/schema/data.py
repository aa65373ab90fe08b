"""`data` (conf/data/): where the images come from and how they are read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from carsearch.core.schema.base import (
    Int,
    KeyProblem,
    NonNegInt,
    NonNegNum,
    Num,
    OpenSection,
    PosInt,
    PosNum,
    StrictSection,
    Text,
    check_pair,
    to_integer,
)
from carsearch.core.vocab import BODY_TYPES, COLORS


def _width_height(v: list[int]) -> list[int]:
    if len(v) != 2:
        raise ValueError(f"expected [width, height], got {v}")
    return v


# The field types the renderers' sections share (one declaration each)
FrameSize = Annotated[list[Annotated[int, BeforeValidator(to_integer), Field(ge=32)]], AfterValidator(_width_height)]
JpegQuality = Annotated[list[Int], AfterValidator(lambda v: check_pair(v, 1, 100, "JPEG quality"))]
Framing = Annotated[
    Optional[list[Num]],
    AfterValidator(
        lambda v: (
            v if v is None else check_pair(v, 0.05, 1.0, "fraction of the frame the vehicle spans; null: whole scene")
        )
    ),
]


class Traffic(StrictSection):
    n_frames: NonNegInt
    size: FrameSize
    cars_per_frame: list[Int]
    cameras: dict[Literal["pole", "dashcam"], Annotated[float, Field(ge=0)]]

    @field_validator("cars_per_frame")
    @classmethod
    def _cars(cls, v):
        return check_pair(v, 1, 8, "cars per frame")


class Torcs(StrictSection):
    dir: Optional[str]
    n_images: PosInt
    size: Annotated[int, BeforeValidator(to_integer), Field(ge=16)]
    workers: NonNegInt
    colors: Optional[list[Text]]
    jpeg_quality: JpegQuality
    framing: Framing
    traffic: Traffic


class Fleet(StrictSection):
    n_identities: PosInt
    variants: PosInt
    types: dict[str, NonNegNum]
    colors: dict[str, NonNegNum]
    liveries: dict[Literal["taxi", "police"], Annotated[float, Field(ge=0, le=1)]]
    plate_region: Literal["us", "eu", "uk"]

    @field_validator("types")
    @classmethod
    def _types(cls, v):
        return _shares(v, BODY_TYPES, "body type")

    @field_validator("colors")
    @classmethod
    def _colors(cls, v):
        return _shares(v, COLORS, "colour")


def _shares(v: dict, names, what: str) -> dict:
    bad = [k for k in v if k not in names]
    if bad:
        raise ValueError(f"unknown {what} {bad}; choose from {list(names)}")
    if not sum(v.values()) > 0:
        raise ValueError(f"the {what} shares sum to 0")
    return v


class Corridor(StrictSection):
    sessions: PosInt
    cameras: Annotated[int, BeforeValidator(to_integer), Field(ge=2)]
    spacing_m: PosNum
    frames_per_camera: NonNegInt
    interval_s: PosNum
    moving: NonNegInt
    parked: NonNegInt
    size: FrameSize


class Highway(StrictSection):
    frames: NonNegInt
    interval_s: PosNum
    lanes: PosInt
    vehicles: NonNegInt
    size: FrameSize


class Street(StrictSection):
    fleet: Fleet
    n_images: NonNegInt
    size: Annotated[int, BeforeValidator(to_integer), Field(ge=16)]
    framing: Framing
    workers: NonNegInt
    jpeg_quality: JpegQuality
    corridor: Corridor
    highway: Highway


class Demo(StrictSection):
    n_images: PosInt
    size: Annotated[int, BeforeValidator(to_integer), Field(ge=16)]
    colors: Optional[list[Text]]


class _Labelled(OpenSection):
    """What the folder and S3 readers share: the label a subfolder gives, and a labels.csv's name."""

    subfolder_key: Optional[str]
    labels_csv: Optional[str]


class Folder(_Labelled):
    path: Text

    @field_validator("path", mode="before")
    @classmethod
    def _not_null(cls, v):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(
                "must be a folder path (dvc.yaml tracks it as a dependency of ingest whatever "
                "data.source is; the default is data/incoming)"
            )
        return v


class S3Source(_Labelled):
    uri: Annotated[str, Field(pattern=r"^s3://[^/]+")]


class Capture(StrictSection):
    pattern: Optional[Text]
    timezone: Text
    track_gap_s: PosNum


class Video(StrictSection):
    fps: PosNum
    max_frames: Optional[PosInt]


class Data(OpenSection):
    source: Literal["street", "torcs", "demo", "folder", "s3"]
    capture: Capture
    video: Video
    max_pixels: Optional[PosInt]
    max_edge: Optional[NonNegInt]
    torcs: Torcs
    street: Street
    demo: Demo
    # never null: dvc.yaml tracks it as a dependency of ingest whatever the source
    folder: Folder
    s3: S3Source

    @model_validator(mode="after")
    def _folder_exists(self, info: ValidationInfo):
        root = (info.context or {}).get("root")
        if self.source == "folder" and root is not None and "folder" in self.model_fields_set:
            p = Path(self.folder.path).expanduser()
            p = p if p.is_absolute() else Path(root) / p
            if not p.is_dir():
                raise KeyProblem(
                    ("folder", "path"),
                    self.folder.path,
                    "no such folder (data.source is folder: give a directory of images)",
                )
        return self
