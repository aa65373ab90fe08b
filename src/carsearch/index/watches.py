"""Watchlists (issue 33): a watch is a saved search (text, an image, a plate, the index's filters)
with a confidence rule, kept in `conf/watchlists.yaml` (versioned with the repo; format `version: 1`),
typed here. `carsearch watch add|list|rm`, `/api/v1/watches` and the page edit it; after every
build_index and `carsearch index add` each watch runs on the new rows only (`index.alerts`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carsearch.core.columns import ROW
from carsearch.core.errors import CarsearchError
from carsearch.core.io import write_text

WATCHLIST_FILE = "conf/watchlists.yaml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER = (
    "# Watchlists (docs/search/watchlists.md): saved searches that alert on new rows after every\n"
    "# build_index and `carsearch index add`. Edited by `carsearch watch add|rm`, the API and the page.\n"
)


class WatchError(CarsearchError, ValueError):
    """A watch or watchlist that cannot be used: one line naming the file or watch and the reason."""


class Delivery(BaseModel):
    """How alerts are delivered: webhook retries (tenacity: exponential backoff), the per-try timeout,
    and where the alert files and the queue of undelivered webhooks live (relative to the repo root)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    alerts_dir: str
    attempts: int = Field(ge=1, le=20)
    wait_s: float = Field(ge=0)
    max_wait_s: float = Field(ge=0)
    timeout_s: float = Field(gt=0)


class Watch(BaseModel):
    """One saved search. `min_confidence` None: "confident only" (the calibration's own threshold);
    a number: hits with calibrated confidence at least that. An exact plate match always alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    text: Optional[str] = None
    image: Optional[str] = None  # an image file (relative to the repo root) or an indexed image's id
    plate: Optional[str] = None
    filters: dict[str, list[str]] = {}
    ranges: dict[str, float] = {}  # min_speed / max_speed (core.columns range filters)
    where: Optional[str] = None
    min_confidence: Optional[float] = Field(None, ge=0, le=1)
    url: Optional[str] = None  # webhook: each alert POSTed as JSON

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME.match(v):
            raise ValueError("a name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v):
        bad = sorted(set(v) - set(ROW.filters) - set(ROW.fuzzy))
        if bad:
            raise ValueError(f"unknown filter(s) {bad} (known: {', '.join(ROW.filters)})")
        return {k: list(vals) for k, vals in v.items() if vals}

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        bad = sorted(set(v) - set(ROW.ranges))
        if bad:
            raise ValueError(f"unknown range filter(s) {bad} (known: {', '.join(ROW.ranges)})")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("a webhook URL starts with http:// or https://")
        return v

    @model_validator(mode="after")
    def _something(self):
        if not (self.text or self.image or self.plate):
            raise ValueError("a watch needs a text, an image or a plate")
        if self.text and self.image:
            raise ValueError("give a text or an image, not both")
        return self

    @property
    def kind(self) -> Literal["text", "image", "plate"]:
        return "text" if self.text else "image" if self.image else "plate"

    def search_filters(self) -> dict:
        """The filters as `CarSearch.plan` takes them (the plate as the fuzzy plate filter)."""
        return {**self.filters, **self.ranges, **({"plate": [self.plate]} if self.plate else {})}


class Watchlist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1]
    delivery: Delivery
    watches: list[Watch] = []

    @model_validator(mode="after")
    def _unique(self):
        names = [w.name for w in self.watches]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"watch name(s) used twice: {dup}")
        return self

    def get(self, name: str) -> Watch | None:
        return next((w for w in self.watches if w.name == name), None)


def watchlist_path(root: Path) -> Path:
    return Path(root) / WATCHLIST_FILE


def _problem(where: str, e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{where}: {loc + ': ' if loc else ''}{err['msg'].removeprefix('Value error, ')}"


def load(root: Path) -> Watchlist | None:
    """conf/watchlists.yaml, typed (None: the repo has no watchlist file: nothing is watched)."""
    p = watchlist_path(root)
    if not p.is_file():
        return None
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise WatchError(f"{p}: not YAML ({str(e).splitlines()[0]})") from None
    try:
        return Watchlist.model_validate(data)
    except ValidationError as e:
        raise WatchError(_problem(str(p), e)) from None


def save(root: Path, wl: Watchlist) -> None:
    """Write the watchlist (atomic: temp file + rename)."""
    body = yaml.safe_dump(wl.model_dump(mode="json", exclude_defaults=False), sort_keys=False, allow_unicode=True)
    write_text(watchlist_path(root), HEADER + body)


def _require(root: Path) -> Watchlist:
    wl = load(root)
    if wl is None:
        raise WatchError(f"{watchlist_path(root)}: no watchlist file (copy the repo's conf/watchlists.yaml)")
    return wl


def make_watch(**fields) -> Watch:
    try:
        return Watch.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        raise WatchError(_problem(f"watch {fields.get('name')!r}", e)) from None


def add(root: Path, watch: Watch) -> Watchlist:
    wl = _require(root)
    if wl.get(watch.name):
        raise WatchError(f"watch {watch.name!r} exists already (remove it first: carsearch watch rm {watch.name})")
    wl = wl.model_copy(update={"watches": [*wl.watches, watch]})
    save(root, wl)
    return wl


def remove(root: Path, name: str) -> Watchlist:
    wl = _require(root)
    if not wl.get(name):
        known = ", ".join(w.name for w in wl.watches) or "none"
        raise WatchError(f"no watch named {name!r} (watches: {known})")
    wl = wl.model_copy(update={"watches": [w for w in wl.watches if w.name != name]})
    save(root, wl)
    return wl
