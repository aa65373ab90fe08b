"""The whole of params.yaml (`Params`, its `paths` and top-level keys) and `validate_params`, which
renders pydantic's errors as one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, ValidationError, model_validator

from carsearch.core.schema.base import (
    ConfigError,
    KeyProblem,
    NonNegInt,
    OpenSection,
    PosInt,
    PosNum,
    StrictSection,
    Text,
)
from carsearch.core.schema.caption import Caption
from carsearch.core.schema.data import Data
from carsearch.core.schema.eval import Eval
from carsearch.core.schema.index import Detect, Index
from carsearch.core.schema.serve import MLflow, Serve
from carsearch.core.schema.train import Curate, PretrainedModel, TinyModel, Train


class Paths(OpenSection):
    raw_dir: Text
    images_dir: Text
    manifest: Text
    rejects: Text
    contact_sheet: Text
    jsonl_dir: Text
    captions_dir: Text
    pairs_dir: Text
    model_dir: Text
    index_dir: Text
    index_manifest: Text
    corpus_listing: Text
    metrics_dir: Text
    plots_dir: Text
    judgments: Text
    examples_dir: Text


class Examples(StrictSection):
    queries: list[Text]
    k: PosInt


class Params(OpenSection):
    seed: NonNegInt
    lr: PosNum
    epochs: PosInt
    batch_size: PosInt
    paths: Paths
    data: Data
    caption: Caption
    curate: Curate
    model: Annotated[Union[TinyModel, PretrainedModel], Field(discriminator="kind")]
    train: Train
    eval: Eval
    detect: Detect
    index: Index
    serve: Serve
    mlflow: MLflow
    examples: Examples

    @model_validator(mode="after")
    def _cross(self):
        if {"eval", "curate"} <= self.model_fields_set and self.eval.split not in self.curate.splits:
            raise KeyProblem(
                ("eval", "split"),
                self.eval.split,
                f"not a split of curate.splits (one of {', '.join(self.curate.splits)})",
            )
        return self


def _fields_at(loc: tuple) -> list[str]:
    cls: Any = Params
    for part in loc:
        f = getattr(cls, "model_fields", {}).get(part)
        if f is None:
            return []
        ann = f.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (args[0] if args else None)
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


_MESSAGES = {
    "missing": "missing",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "int_type": "not an integer",
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "float_type": "not a number",
    "float_parsing": "not a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def describe_error(err: dict) -> tuple[tuple, Any, str]:
    loc, typ, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
    # drop the union / discriminator members pydantic puts into the location
    loc = tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "model" and p in ("tiny", "pretrained")))
    loc = tuple(
        p
        for p in loc
        if not (
            isinstance(p, str)
            and (p.startswith(("literal[", "int", "str", "function-")) or p.startswith("constrained-"))
        )
    )
    value = err.get("input")
    inner = ctx.get("error")
    if isinstance(inner, KeyProblem):
        return loc + inner.loc, inner.value, inner.msg
    if typ == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return loc, value, f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if typ == "union_tag_invalid":
        return loc + ("kind",), ctx.get("tag"), f"must be one of {ctx.get('expected_tags')}"
    if typ == "union_tag_not_found":
        return loc + ("kind",), None, "missing (tiny or pretrained)"
    if typ == "literal_error":
        return loc, value, f"must be one of {ctx.get('expected')}"
    if typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[typ]
        bound = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")))
        return loc, value, f"must be {op} {bound}"
    if typ == "string_pattern_mismatch":
        return loc, value, f"must match {ctx.get('pattern')}"
    if typ in ("string_too_short", "too_short"):
        return loc, value, "must not be empty"
    if typ == "value_error":
        return loc, value, str(inner) if inner is not None else err["msg"]
    return loc, value, _MESSAGES.get(typ, err["msg"])


def error_line(label: str, loc: tuple, value: Any, msg: str) -> str:
    key = ".".join(str(p) for p in loc) or "(top level)"
    if msg == "missing":
        return f"{label}: {key}: missing"
    shown = value if not isinstance(value, (dict, BaseModel)) else "{...}"
    return f"{label}: {key} = {shown!r}: {msg}"


def validate_params(params: Any, label: str = "params.yaml", root: str | Path | None = None) -> Params:
    """Validate a loaded params.yaml; the typed `Params` back (numbers coerced, unknown keys kept where
    allowed, defaults not added: `.as_dict()` is the same mapping). Raises ConfigError with one line
    naming key, value and what is allowed."""
    if not isinstance(params, dict):
        raise ConfigError(f"{label}: top level is not a mapping")
    try:
        m = Params.model_validate(params, context={"root": Path(root) if root is not None else None})
    except ValidationError as e:
        seen, lines = set(), []
        for err in e.errors(include_url=False):
            loc, value, msg = describe_error(err)
            if loc not in seen:
                seen.add(loc)
                lines.append((loc, value, msg))
        first = error_line(label, *lines[0])
        more = [".".join(map(str, loc)) for loc, _, _ in lines[1:]]
        raise ConfigError(
            first + (f" (also: {', '.join(more[:5])}{', ...' if len(more) > 5 else ''})" if more else "")
        ) from None
    return m
