"""The schema of `params.yaml` (what DVC composes from conf/): one check, before any stage works,
of types, ranges, choices and paths, with one line per problem naming the key, the bad value and
what is allowed, e.g. `params.yaml: train.epochs = -1: must be >= 1`.

conf/ is the only home of default values: no field here has one, so every key must be in what
conf/ composes (a key missing from params.yaml is one line, `params.yaml: train.lr: missing`) and
the stages read complete, typed sections (`cfg.train.lr`, never `.get(key, fallback)`).
The items of `eval.sets` are filled from `eval.set_defaults` (in conf/eval) before they are checked.
Sections where people add settings (`paths`, `data`, `caption`, `index`, `mlflow`, the top level)
accept unknown keys; the others refuse them (a typo there would otherwise be silently ignored).

Over 350 lines on purpose: one model per conf group (and conf/cameras.yaml's, read on its own), read top to bottom beside conf/, plus the
one-line error rendering they share.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from carsearch.core.errors import CarsearchError
from carsearch.core.vocab import BODY_TYPES, COLORS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ConfigError(CarsearchError, ValueError):
    """One line: `params.yaml: key = value: what is allowed`."""


# ------------------------------------------------------------------ scalar types with short errors
def _number(v: Any) -> Any:
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


def _integer(v: Any) -> Any:
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


Num = Annotated[float, BeforeValidator(_number)]
Int = Annotated[int, BeforeValidator(_integer)]
PosInt = Annotated[int, BeforeValidator(_integer), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_integer), Field(ge=0)]
PosNum = Annotated[float, BeforeValidator(_number), Field(gt=0)]
NonNegNum = Annotated[float, BeforeValidator(_number), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
Text = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    """A validated config section: read it by attribute (`cfg.index.batch_size`), already typed.

    `section["key"]` / `.get("key")` / `.keys()` / `.items()` answer too, for library code not yet migrated from the
    dicts `validate_params` used to return (docs/ARCHITECTURE.md, "Configuration"); new code reads
    attributes. Sections are read-only: a stage that needs a changed copy uses `model_copy(update=...)`."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in type(self).model_fields or key in (self.model_extra or {}))

    def keys(self) -> list[str]:
        return [*type(self).model_fields, *(self.model_extra or {})]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def as_dict(self) -> dict:
        """The section as the plain mapping params.yaml holds (for logging and hashing)."""
        return self.model_dump(exclude_unset=True)


class _Strict(_Section):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class _Open(_Section):
    model_config = ConfigDict(extra="allow", protected_namespaces=(), frozen=True)


def _pair(v: list, lo: float, hi: float, what: str) -> list:
    if len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"must be [low, high] with low <= high ({what})")
    if not (lo <= v[0] and v[1] <= hi):
        raise ValueError(f"both ends must be in [{lo:g}, {hi:g}] ({what})")
    return v


# ------------------------------------------------------------------ sections
class Paths(_Open):
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


class Traffic(_Strict):
    n_frames: NonNegInt
    size: list[Annotated[int, BeforeValidator(_integer), Field(ge=32)]]
    cars_per_frame: list[Int]
    cameras: dict[Literal["pole", "dashcam"], Annotated[float, Field(ge=0)]]

    @field_validator("cars_per_frame")
    @classmethod
    def _cars(cls, v):
        return _pair(v, 1, 8, "cars per frame")

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if len(v) != 2:
            raise ValueError(f"expected [width, height], got {v}")
        return v


class Torcs(_Strict):
    dir: Optional[str]
    n_images: PosInt
    size: Annotated[int, BeforeValidator(_integer), Field(ge=16)]
    workers: NonNegInt
    colors: Optional[list[Text]]
    jpeg_quality: list[Int]
    framing: Optional[list[Num]]
    traffic: Traffic

    @field_validator("jpeg_quality")
    @classmethod
    def _jq(cls, v):
        return _pair(v, 1, 100, "JPEG quality")

    @field_validator("framing")
    @classmethod
    def _framing(cls, v):
        return v if v is None else _pair(v, 0.05, 1.0, "fraction of the frame the car spans; null: whole scene")


class Fleet(_Strict):
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


class Corridor(_Strict):
    sessions: PosInt
    cameras: Annotated[int, BeforeValidator(_integer), Field(ge=2)]
    spacing_m: PosNum
    frames_per_camera: NonNegInt
    interval_s: PosNum
    moving: NonNegInt
    parked: NonNegInt
    size: list[Annotated[int, BeforeValidator(_integer), Field(ge=32)]]

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if len(v) != 2:
            raise ValueError(f"expected [width, height], got {v}")
        return v


class Highway(_Strict):
    frames: NonNegInt
    interval_s: PosNum
    lanes: PosInt
    vehicles: NonNegInt
    size: list[Annotated[int, BeforeValidator(_integer), Field(ge=32)]]

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if len(v) != 2:
            raise ValueError(f"expected [width, height], got {v}")
        return v


class Street(_Strict):
    fleet: Fleet
    n_images: NonNegInt
    size: Annotated[int, BeforeValidator(_integer), Field(ge=16)]
    framing: Optional[list[Num]]
    workers: NonNegInt
    jpeg_quality: list[Int]
    corridor: Corridor
    highway: Highway

    @field_validator("jpeg_quality")
    @classmethod
    def _jq(cls, v):
        return _pair(v, 1, 100, "JPEG quality")

    @field_validator("framing")
    @classmethod
    def _framing(cls, v):
        return v if v is None else _pair(v, 0.05, 1.0, "fraction of the frame the vehicle spans; null: whole scene")


class Demo(_Strict):
    n_images: PosInt
    size: Annotated[int, BeforeValidator(_integer), Field(ge=16)]
    colors: Optional[list[Text]]


class Folder(_Open):
    path: Text
    subfolder_key: Optional[str]
    labels_csv: Optional[str]

    @field_validator("path", mode="before")
    @classmethod
    def _not_null(cls, v):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(
                "must be a folder path (dvc.yaml tracks it as a dependency of ingest whatever "
                "data.source is; the default is data/incoming)"
            )
        return v


class S3Source(_Open):
    uri: Annotated[str, Field(pattern=r"^s3://[^/]+")]
    subfolder_key: Optional[str]
    labels_csv: Optional[str]


class Capture(_Strict):
    pattern: Optional[Text]
    timezone: Text


class Video(_Strict):
    fps: PosNum
    max_frames: Optional[PosInt]


class Data(_Open):
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
                raise _KeyError(
                    ("folder", "path"),
                    self.folder.path,
                    "no such folder (data.source is folder: give a directory of images)",
                )
        return self


class Quotas(_Strict):
    min_records_per_job: PosInt
    max_records_per_job: PosInt
    max_file_bytes: PosInt

    @model_validator(mode="after")
    def _order(self):
        if self.min_records_per_job > self.max_records_per_job:
            raise _KeyError(
                ("min_records_per_job",),
                self.min_records_per_job,
                f"must be <= max_records_per_job ({self.max_records_per_job})",
            )
        return self


class CaptionS3(_Strict):
    bucket: Optional[str]
    prefix: str
    bucket_owner: Optional[Union[str, Int]]


class Bedrock(_Strict):
    role_arn: Optional[Annotated[str, Field(pattern=r"^arn:")]]
    region: Optional[str]
    poll_initial_s: NonNegNum
    poll_max_s: NonNegNum
    poll_factor: Annotated[float, BeforeValidator(_number), Field(ge=1)]
    wait_timeout_s: Optional[NonNegNum]
    job_timeout_hours: Annotated[int, BeforeValidator(_integer), Field(ge=24, le=168)]
    api_max_attempts: PosInt
    api_backoff_s: NonNegNum
    resubmit_failed: bool
    allow_incomplete: bool
    state_dir: Text


class OpenAI(_Strict):
    base_url: Optional[Annotated[str, Field(pattern=r"^https?://")]]
    model: Optional[str]
    api_key_env: Optional[str]
    concurrency: PosInt
    timeout_s: PosNum
    max_attempts: PosInt
    backoff_s: NonNegNum


class CaptionCache(_Strict):
    enabled: bool
    dir: Text
    pad_small_jobs: bool


class CaptionOffline(_Strict):
    plate_misread_rate: Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]


class Caption(_Open):
    backend: Literal["offline", "bedrock", "openai"]
    model_id: Text
    family: Literal["auto", "claude", "nova"]
    max_tokens: PosInt
    temperature: Annotated[float, BeforeValidator(_number), Field(ge=0, le=2)]
    max_image_edge: Annotated[int, BeforeValidator(_integer), Field(ge=16)]
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


class Boxes(_Strict):
    margin: Annotated[float, Field(ge=0, le=2)]
    min_side: PosInt


class Curate(_Strict):
    splits: dict[str, Fraction]
    near_duplicate_max_distance: Annotated[int, BeforeValidator(_integer), Field(ge=-1)]
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


class TinyModel(_Strict):
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
    max_text_len: Annotated[int, BeforeValidator(_integer), Field(ge=8, le=77)]
    projection_dim: PosInt

    @model_validator(mode="after")
    def _shapes(self):
        if self.image_size % self.patch_size:
            raise _KeyError(("image_size",), self.image_size, f"must be a multiple of patch_size ({self.patch_size})")
        for tower in ("vision", "text"):
            w, h = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if w % h:
                raise _KeyError((f"{tower}_width",), w, f"must be a multiple of {tower}_heads ({h})")
        return self


class PretrainedModel(_Strict):
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


class Lock(_Strict):
    image: LockSetting
    text: LockSetting


class Augment(_Strict):
    shift: NonNegInt
    flip: bool


class EarlyStopping(_Strict):
    metric: Optional[str]
    patience: NonNegInt
    min_delta: NonNegNum


class Train(_Strict):
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
    logit_scale_init: Optional[PosNum]
    augment: Augment
    early_stopping: Optional[EarlyStopping]
    val_sets: list[Text]
    feedback_weight: NonNegNum
    ema: Optional[Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)]]  # EMA decay; null: off
    checkpoint_dir: Optional[str]
    resume: bool
    nproc_per_node: PosInt
    num_workers: NonNegInt
    log_every: PosInt


class EvalSet(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    path: Text
    source: Literal["folder", "s3"]
    subfolder_key: Optional[str]
    labels_csv: str
    kind: Literal["labels", "judgments"]  # judgments: path is a judgments.jsonl (carsearch.feedback)
    eval_fraction: Fraction  # judgments: the share of judged queries held out for evaluation


class EvalSetDefaults(_Strict):
    """What an `eval.sets` item does not say (conf/eval/default.yaml `set_defaults`)."""

    source: Literal["folder", "s3"]
    subfolder_key: Optional[str]
    labels_csv: str
    kind: Literal["labels", "judgments"]
    eval_fraction: Fraction


class Bootstrap(_Strict):
    """Confidence intervals of the retrieval metrics: percentile bootstrap over queries."""

    n: PosInt
    seed: NonNegInt
    confidence: Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)]


class Calibration(_Strict):
    top_k: PosInt
    folds: Annotated[int, Field(ge=2)]
    target_precision: Annotated[float, BeforeValidator(_number), Field(gt=0, le=1)]
    min_confident: PosInt
    margin_z: Annotated[float, BeforeValidator(_number), Field(ge=0)]
    bins: PosInt
    reference_rows: Annotated[int, Field(ge=16)]
    image_match: list[Text]
    null_frames: NonNegInt


class Eval(_Strict):
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


class Promote(_Strict):
    metric: Optional[str]
    min_gain: Num
    set: Optional[str]  # an eval.sets name decides (its metric, e.g. text_to_image.precision@5)


class WiseFT(_Strict):
    alphas: list[Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]]
    only_pretrained: bool


class Detect(_Strict):
    model: Optional[Text]
    tiny: bool
    threshold: Annotated[float, Field(ge=0, le=1)]
    prompts: list[Text]
    batch_size: PosInt


class IndexRay(_Strict):
    """`index.engine: ray` (carsearch.index.ray_engine)."""

    address: Optional[str]
    num_cpus: Optional[PosInt]
    actors: Optional[PosInt]
    actor_cpus: PosInt
    num_gpus: Optional[NonNegNum]
    chunk: PosInt


class PlateSearch(_Strict):
    max_distance: Annotated[float, BeforeValidator(_number), Field(ge=0, le=4)]
    confusion_cost: Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]


class Index(_Open):
    corpus: Literal["ingested", "folder", "s3"]
    engine: Literal["local", "ray"]
    ray: IndexRay
    corpus_path: Optional[str]
    subfolder_key: Optional[str]
    labels_csv: Optional[str]
    embed_cache_dir: Text
    keep_versions: PosInt
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
    metric: Literal["cosine", "l2", "dot"]
    ann_min_rows: PosInt
    ann_index: Literal["IVF_HNSW_SQ", "IVF_PQ"]
    num_partitions: Optional[PosInt]
    rows_per_partition: PosInt
    hnsw_m: PosInt
    hnsw_ef_construction: PosInt
    num_sub_vectors: Optional[PosInt]
    nprobes: NonNegInt
    refine_factor: NonNegInt
    scalar_indices: bool
    fts: bool
    batch_size: PosInt
    num_workers: Optional[NonNegInt]
    decode_draft: bool
    promote: Optional[Promote]
    wise_ft: WiseFT
    uri: Optional[Annotated[str, Field(pattern=r"^s3://[^/]+")]]  # the table on object storage
    plate_search: PlateSearch


class Serve(_Open):
    """`carsearch serve` (conf/serve/default.yaml); permissive: the service reads what it knows."""

    host: Text
    port: Annotated[int, BeforeValidator(_integer), Field(ge=0, le=65535)]
    token: Optional[Text]
    upload_rate_per_minute: NonNegInt
    max_upload_bytes: PosInt
    max_image_pixels: PosInt
    default_page_size: PosInt
    max_page_size: PosInt
    max_results: PosInt
    facet_candidates: PosInt
    facet_top: PosInt
    thumb_size: Annotated[int, BeforeValidator(_integer), Field(ge=16, le=2048)]
    cache_dir: Optional[str]
    text_cache_size: NonNegInt
    torch_threads: NonNegInt
    export_clip_margin_s: Annotated[float, Field(ge=0)]
    export_max_hits: PosInt


class MLflow(_Open):
    tracking_uri: Text
    experiment: Text
    registered_model: Text


class Examples(_Strict):
    queries: list[Text]
    k: PosInt


class Params(_Open):
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
            raise _KeyError(
                ("eval", "split"),
                self.eval.split,
                f"not a split of curate.splits (one of {', '.join(self.curate.splits)})",
            )
        return self


# ------------------------------------------------------------------ errors
class _KeyError(ValueError):
    """Raised by validators that know a more precise key than the one they run on."""

    def __init__(self, loc: tuple, value: Any, msg: str):
        super().__init__(msg)
        self.loc, self.value, self.msg = loc, value, msg


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


def _describe(err: dict) -> tuple[tuple, Any, str]:
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
    if isinstance(inner, _KeyError):
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


def _line(label: str, loc: tuple, value: Any, msg: str) -> str:
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
            loc, value, msg = _describe(err)
            if loc not in seen:
                seen.add(loc)
                lines.append((loc, value, msg))
        first = _line(label, *lines[0])
        more = [".".join(map(str, loc)) for loc, _, _ in lines[1:]]
        raise ConfigError(
            first + (f" (also: {', '.join(more[:5])}{', ...' if len(more) > 5 else ''})" if more else "")
        ) from None
    return m


# ------------------------------------------------------------------ conf/cameras.yaml (its own file)
class CameraSettings(_Strict):
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


class CameraPair(_Strict):
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


class Travel(_Strict):
    """How the camera network's windows are learned from labelled identities (core.sightings.learn_windows)."""

    margin_s: float = Field(ge=0)
    min_identities: int = Field(ge=1)
    coverage: float = Field(gt=0, le=1)
    max_pass_s: float = Field(gt=0)


class Cameras(_Strict):
    cameras: dict[str, CameraSettings] = {}
    pairs: list[CameraPair] = []
    travel: Optional[Travel] = None  # None (no file, or no section): nothing is learned

    def fixed_windows(self) -> dict[str, list[float]]:
        """{pair key: [min_s, max_s]} of `pairs` (core.sightings.pair_key names)."""
        return {"|".join(sorted((p.a, p.b))): [p.min_s, p.max_s] for p in self.pairs}


def load_cameras(path: str | Path) -> Cameras:
    """conf/cameras.yaml, typed (no file: no camera has ground geometry); one line per problem."""
    import yaml

    p = Path(path)
    if not p.is_file():
        return Cameras()
    data = yaml.safe_load(p.read_text()) or {}
    try:
        return Cameras.model_validate(data)
    except ValidationError as e:
        loc, value, msg = _describe(e.errors(include_url=False)[0])
        raise ConfigError(_line(str(p), loc, value, msg)) from None
