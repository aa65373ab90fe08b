"""`eval` (conf/eval/default.yaml): the evaluation protocol, its eval sets, bootstrap and calibration."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from carsearch.core.schema.base import Fraction, NonNegInt, PosInt, StrictSection, Text, to_number


class EvalSetDefaults(StrictSection):
    """What an `eval.sets` item does not say (conf/eval/default.yaml `set_defaults`): the block an
    eval set shares with its defaults, declared once."""

    source: Literal["folder", "s3"]
    subfolder_key: Optional[str]
    labels_csv: str
    kind: Literal["labels", "judgments"]  # judgments: path is a judgments.jsonl (carsearch.feedback)
    eval_fraction: Fraction  # judgments: the share of judged queries held out for evaluation


class EvalSet(EvalSetDefaults):
    """One `eval.sets` item: a name and a path, the rest filled from `set_defaults` (`Eval._fill_sets`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    path: Text


class Bootstrap(StrictSection):
    """Confidence intervals of the retrieval metrics: percentile bootstrap over queries."""

    n: PosInt
    seed: NonNegInt
    confidence: Annotated[float, BeforeValidator(to_number), Field(gt=0, lt=1)]


class Calibration(StrictSection):
    top_k: PosInt
    folds: Annotated[int, Field(ge=2)]
    target_precision: Annotated[float, BeforeValidator(to_number), Field(gt=0, le=1)]
    min_confident: PosInt
    margin_z: Annotated[float, BeforeValidator(to_number), Field(ge=0)]
    bins: PosInt
    reference_rows: Annotated[int, Field(ge=16)]
    image_match: list[Text]
    null_frames: NonNegInt


class Eval(StrictSection):
    ks: Annotated[list[PosInt], Field(min_length=1)]
    map_k: PosInt
    split: Text
    attributes: list[Text]
    by_combo: bool
    zero_shot: list[Text]
    min_relevant: PosInt
    n_examples: NonNegInt
    bootstrap: Bootstrap
    set_defaults: EvalSetDefaults
    sets: list["EvalSet"]
    set_k: PosInt
    set_attributes: list[Text]
    calibration: Calibration

    @model_validator(mode="before")
    @classmethod
    def _fill_sets(cls, v: Any) -> Any:
        if isinstance(v, dict) and isinstance(v.get("set_defaults"), dict) and isinstance(v.get("sets"), list):
            v = {**v, "sets": [{**v["set_defaults"], **x} if isinstance(x, dict) else x for x in v["sets"]]}
        return v

    @model_validator(mode="after")
    def _unique_set_names(self):
        names = [x.name for x in self.sets]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"eval set name {dup!r} is used twice")
        return self
