"""What every section shares: the scalar types with short errors, the read-only section bases
(read by attribute only), and the error a validator raises for a more precise key."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from carsearch.core.errors import CarsearchError


class ConfigError(CarsearchError, ValueError):
    """One line: `params.yaml: key = value: what is allowed`."""


# ------------------------------------------------------------------ scalar types with short errors
def to_number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("not a number (true/false)")
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError("not a number") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def to_integer(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("not an integer (true/false)")
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise ValueError("not an integer") from None
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError("not an integer")
        v = int(v)
    return v


Num = Annotated[float, BeforeValidator(to_number)]
Int = Annotated[int, BeforeValidator(to_integer)]
PosInt = Annotated[int, BeforeValidator(to_integer), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(to_integer), Field(ge=0)]
PosNum = Annotated[float, BeforeValidator(to_number), Field(gt=0)]
NonNegNum = Annotated[float, BeforeValidator(to_number), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(to_number), Field(ge=0, le=1)]
Text = Annotated[str, Field(min_length=1)]


class Section(BaseModel):
    """A validated config section: read it by attribute (`cfg.index.batch_size`), already typed.

    No dict access: `section["key"]`, `.get("key", fallback)` and `"key" in section` raise (a fallback
    would be a second home for a default; conf/ is the only one). Sections are read-only: a stage that
    needs a changed copy uses `model_copy(update=...)`."""

    def __getitem__(self, key: object) -> Any:
        raise TypeError(f"{type(self).__name__} is a typed config section: read .{key} (not [{key!r}])")

    def __contains__(self, key: object) -> bool:
        raise TypeError(f"{type(self).__name__} is a typed config section: every key is set (read .{key})")

    def as_dict(self) -> dict:
        """The section as the plain mapping params.yaml holds (for logging and hashing)."""
        return self.model_dump(exclude_unset=True)


class StrictSection(Section):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class OpenSection(Section):
    model_config = ConfigDict(extra="allow", protected_namespaces=(), frozen=True)


def check_pair(v: list, lo: float, hi: float, what: str) -> list:
    if len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"must be [low, high] with low <= high ({what})")
    if not (lo <= v[0] and v[1] <= hi):
        raise ValueError(f"both ends must be in [{lo:g}, {hi:g}] ({what})")
    return v


class KeyProblem(ValueError):
    """Raised by validators that know a more precise key than the one they run on."""

    def __init__(self, loc: tuple, value: Any, msg: str):
        super().__init__(msg)
        self.loc, self.value, self.msg = loc, value, msg
