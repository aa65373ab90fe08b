"""conf/cameras.yaml (a file of its own, read by carsearch.detection; not part of params.yaml).
Its defaults are only "not given" (None / empty): the file and each camera's geometry are optional."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from carsearch.core.schema.base import ConfigError, StrictSection
from carsearch.core.schema.params import describe_error, error_line


class CameraSettings(StrictSection):
    """One camera's ground geometry (conf/cameras.yaml, docs/search/motion.md): `homography` maps
    image pixels (x, y, 1) to ground metres (east, north, 1); `heading` is the compass bearing (deg,
    0 = north) the camera looks along. Either gives compass headings; only a homography gives km/h."""

    homography: Optional[list[list[float]]] = None
    heading: Optional[float] = Field(None, ge=0, lt=360)

    @field_validator("homography")
    @classmethod
    def _three_by_three(cls, v):
        if v is not None and (len(v) != 3 or any(len(r) != 3 for r in v)):
            raise ValueError("must be a 3x3 matrix (image pixels -> ground metres)")
        return v


class CameraPair(StrictSection):
    """A travel-time window between two cameras (conf/cameras.yaml `pairs`): the |time difference|
    of one vehicle's sightings at `a` and `b`, in seconds; it wins over a window learned from labels."""

    a: str
    b: str
    min_s: float = Field(ge=0)
    max_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_s < self.min_s:
            raise ValueError(f"max_s {self.max_s} < min_s {self.min_s}")
        return self


class Travel(StrictSection):
    """How the camera network's windows are learned from labelled identities (core.sightings.learn_windows)."""

    margin_s: float = Field(ge=0)
    min_identities: int = Field(ge=1)
    coverage: float = Field(gt=0, le=1)
    max_pass_s: float = Field(gt=0)


class Cameras(StrictSection):
    cameras: dict[str, CameraSettings] = {}
    pairs: list[CameraPair] = []
    travel: Optional[Travel] = None  # None (no file, or no section): nothing is learned

    def fixed_windows(self) -> dict[str, list[float]]:
        """{pair key: [min_s, max_s]} of `pairs` (core.sightings.pair_key names)."""
        return {"|".join(sorted((p.a, p.b))): [p.min_s, p.max_s] for p in self.pairs}


def load_cameras(path: str | Path) -> Cameras:
    """conf/cameras.yaml, typed (no file: no camera has ground geometry); one line per problem."""

    p = Path(path)
    if not p.is_file():
        return Cameras()
    data = yaml.safe_load(p.read_text()) or {}
    try:
        return Cameras.model_validate(data)
    except ValidationError as e:
        loc, value, msg = describe_error(e.errors(include_url=False)[0])
        raise ConfigError(error_line(str(p), loc, value, msg)) from None
