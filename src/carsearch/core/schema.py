"""The schema of `params.yaml` (what DVC composes from conf/): one check, before any stage works,
of types, ranges, choices and paths, with one line per problem naming the key, the bad value and
what is allowed, e.g. `params.yaml: train.epochs = -1: must be >= 1`.

Every field has the default of conf/, so a partial params.yaml (tests, hand-written scratch repos)
validates what it has. Sections where people add settings (`paths`, `data`, `caption`, `index`,
`mlflow`, the top level) accept unknown keys; the others refuse them (a typo there would
otherwise be silently ignored).
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


def _pair(v: list, lo: float, hi: float, what: str) -> list:
    if len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"must be [low, high] with low <= high ({what})")
    if not (lo <= v[0] and v[1] <= hi):
        raise ValueError(f"both ends must be in [{lo:g}, {hi:g}] ({what})")
    return v


# ------------------------------------------------------------------ sections
class Paths(_Open):
    raw_dir: Text = "data/raw"
    images_dir: Text = "data/raw/images"
    manifest: Text = "data/raw/manifest.jsonl"
    rejects: Text = "data/raw/rejects.jsonl"
    contact_sheet: Text = "metrics/plots/contact_sheet.png"
    jsonl_dir: Text = "data/jsonl"
    captions_dir: Text = "data/captions"
    pairs_dir: Text = "data/pairs"
    model_dir: Text = "models/finetuned"
    index_dir: Text = "data/index"
    metrics_dir: Text = "metrics"
    plots_dir: Text = "metrics/plots"


class Torcs(_Strict):
    dir: Optional[str] = None
    n_images: PosInt = 2000
    size: Annotated[int, BeforeValidator(_integer), Field(ge=16)] = 224
    workers: NonNegInt = 0
    colors: Optional[list[Text]] = None
    jpeg_quality: list[Int] = [60, 95]
    framing: Optional[list[Num]] = None

    @field_validator("jpeg_quality")
    @classmethod
    def _jq(cls, v):
        return _pair(v, 1, 100, "JPEG quality")

    @field_validator("framing")
    @classmethod
    def _framing(cls, v):
        return v if v is None else _pair(v, 0.05, 1.0, "fraction of the frame the car spans; null: whole scene")


class Demo(_Strict):
    n_images: PosInt = 384
    size: Annotated[int, BeforeValidator(_integer), Field(ge=16)] = 128
    colors: Optional[list[Text]] = None


class Folder(_Open):
    path: Text = "data/incoming"
    subfolder_key: Optional[str] = "color"
    labels_csv: Optional[str] = "labels.csv"

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
    uri: Annotated[str, Field(pattern=r"^s3://[^/]+")] = "s3://my-bucket/traffic-images/"
    subfolder_key: Optional[str] = "color"
    labels_csv: Optional[str] = "labels.csv"


class Data(_Open):
    source: Literal["torcs", "demo", "folder", "s3"] = "torcs"
    torcs: Torcs = Torcs()
    demo: Demo = Demo()
    # never null: dvc.yaml tracks it as a dependency of ingest whatever the source
    folder: Folder = Folder()
    s3: S3Source = S3Source()

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
    min_records_per_job: PosInt = 100
    max_records_per_job: PosInt = 50000
    max_file_bytes: PosInt = 1_000_000_000

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
    bucket: Optional[str] = None
    prefix: str = "carsearch"
    bucket_owner: Optional[Union[str, Int]] = None


class Bedrock(_Strict):
    role_arn: Optional[Annotated[str, Field(pattern=r"^arn:")]] = None
    region: Optional[str] = None
    poll_initial_s: NonNegNum = 30
    poll_max_s: NonNegNum = 600
    poll_factor: Annotated[float, BeforeValidator(_number), Field(ge=1)] = 1.5
    wait_timeout_s: Optional[NonNegNum] = None
    job_timeout_hours: Annotated[int, BeforeValidator(_integer), Field(ge=24, le=168)] = 24
    api_max_attempts: PosInt = 8
    api_backoff_s: NonNegNum = 1.0
    resubmit_failed: bool = True
    allow_incomplete: bool = False
    state_dir: Text = ".carsearch/jobs"


class OpenAI(_Strict):
    base_url: Optional[Annotated[str, Field(pattern=r"^https?://")]] = None
    model: Optional[str] = None
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    concurrency: PosInt = 4
    timeout_s: PosNum = 120
    max_attempts: PosInt = 4
    backoff_s: NonNegNum = 1.0


class Caption(_Open):
    backend: Literal["offline", "bedrock", "openai"] = "offline"
    model_id: Text = "anthropic.claude-3-haiku-20240307-v1:0"
    family: Literal["auto", "claude", "nova"] = "auto"
    max_tokens: PosInt = 300
    temperature: Annotated[float, BeforeValidator(_number), Field(ge=0, le=2)] = 0.0
    max_image_edge: Annotated[int, BeforeValidator(_integer), Field(ge=16)] = 1568
    max_image_bytes: PosInt = 3_750_000
    records_per_file: Optional[PosInt] = 50000
    quotas: Quotas = Quotas()
    system_prompt: Text = "..."
    user_prompt: Text = "..."
    s3: CaptionS3 = CaptionS3()
    bedrock: Bedrock = Bedrock()
    openai: OpenAI = OpenAI()
    pricing: Optional[str] = "conf/pricing.yaml"


class Curate(_Strict):
    splits: dict[str, Fraction] = {"train": 0.7, "val": 0.1, "test": 0.2}
    near_duplicate_max_distance: Annotated[int, BeforeValidator(_integer), Field(ge=-1)] = 2
    require_fields: list[Text] = ["body_type", "color", "view"]

    @field_validator("splits")
    @classmethod
    def _splits(cls, v):
        if not v or sum(v.values()) <= 0:
            raise ValueError("needs at least one split with a fraction > 0, e.g. {train: 0.7, val: 0.1, test: 0.2}")
        if "train" not in v:
            raise ValueError("needs a 'train' split")
        return v


class TinyModel(_Strict):
    name: Text = "clip_tiny"
    kind: Literal["tiny"] = "tiny"
    image_size: PosInt = 64
    patch_size: PosInt = 8
    vision_width: PosInt = 128
    vision_layers: PosInt = 4
    vision_heads: PosInt = 4
    text_width: PosInt = 128
    text_layers: PosInt = 3
    text_heads: PosInt = 4
    max_text_len: Annotated[int, BeforeValidator(_integer), Field(ge=8, le=77)] = 32
    projection_dim: PosInt = 128

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
    name: Text = "clip_vit_b32"
    kind: Literal["pretrained"] = "pretrained"
    pretrained: Text = "openai/clip-vit-base-patch32"

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
    image: LockSetting = "none"
    text: LockSetting = "none"


class Augment(_Strict):
    shift: NonNegInt = 4
    flip: bool = True


class EarlyStopping(_Strict):
    metric: Optional[str] = "val_recall@5"
    patience: NonNegInt = 0
    min_delta: NonNegNum = 0.0


class Train(_Strict):
    lr: PosNum = 2.5e-4
    epochs: PosInt = 24
    batch_size: PosInt = 32
    seed: NonNegInt = 42
    weight_decay: NonNegNum = 0.1
    warmup_ratio: Fraction = 0.1
    min_lr_ratio: Fraction = 0.0
    grad_accum: PosInt = 1
    max_grad_norm: NonNegNum = 1.0
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    grad_checkpointing: bool = False
    lock: Lock = Lock()
    texts: Literal["caption", "caption+queries"] = "caption+queries"
    loss: Literal["multi_positive", "clip"] = "multi_positive"
    image_loss_weight: NonNegNum = 0.0
    logit_scale_init: Optional[PosNum] = None
    augment: Augment = Augment()
    early_stopping: Optional[EarlyStopping] = EarlyStopping()
    val_sets: list[Text] = []
    checkpoint_dir: Optional[str] = "models/checkpoints/finetune_clip"
    resume: bool = True
    nproc_per_node: PosInt = 1
    num_workers: NonNegInt = 0
    log_every: PosInt = 5


class EvalSet(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    path: Text
    source: Literal["folder", "s3"] = "folder"
    subfolder_key: Optional[str] = "color"
    labels_csv: str = "labels.csv"


class Bootstrap(_Strict):
    """Confidence intervals of the retrieval metrics: percentile bootstrap over queries."""

    n: PosInt = 1000
    seed: NonNegInt = 0
    confidence: Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)] = 0.95


class Eval(_Strict):
    ks: Annotated[list[PosInt], Field(min_length=1)] = [1, 5, 10]
    map_k: PosInt = 10
    split: Text = "test"
    attributes: list[Text] = ["color", "body_type", "view"]
    by_combo: bool = True
    zero_shot: list[Text] = ["color", "body_type", "model", "view"]
    min_relevant: PosInt = 1
    n_examples: NonNegInt = 6
    bootstrap: Bootstrap = Bootstrap()
    sets: list["EvalSet"] = []
    set_k: PosInt = 5
    set_attributes: list[Text] = ["color", "body_type", "view", "make"]

    @model_validator(mode="after")
    def _unique_set_names(self):
        names = [x.name for x in self.sets]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"eval set name {dup!r} is used twice")
        return self


class Promote(_Strict):
    metric: Optional[str] = "text_to_image.recall@5"
    min_gain: Num = 0.0
    set: Optional[str] = None  # an eval.sets name decides (its metric, e.g. text_to_image.precision@5)


class Index(_Open):
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")] = "cars"
    metric: Literal["cosine", "l2", "dot"] = "cosine"
    ann_min_rows: PosInt = 100_000
    ann_index: Literal["IVF_HNSW_SQ", "IVF_PQ"] = "IVF_HNSW_SQ"
    num_partitions: Optional[PosInt] = None
    rows_per_partition: PosInt = 4096
    num_sub_vectors: Optional[PosInt] = None
    nprobes: NonNegInt = 20
    refine_factor: NonNegInt = 5
    scalar_indices: bool = True
    fts: bool = True
    batch_size: PosInt = 64
    num_workers: Optional[NonNegInt] = None
    decode_draft: bool = True
    promote: Optional[Promote] = Promote()
    uri: Optional[Annotated[str, Field(pattern=r"^s3://[^/]+")]] = None  # the table on object storage


class Serve(_Open):
    """`carsearch serve` (conf/serve/default.yaml); permissive: the service reads what it knows."""

    host: Text = "127.0.0.1"
    port: Annotated[int, BeforeValidator(_integer), Field(ge=0, le=65535)] = 8000
    max_upload_bytes: PosInt = 8_000_000
    max_image_pixels: PosInt = 40_000_000
    default_page_size: PosInt = 24
    max_page_size: PosInt = 100
    max_results: PosInt = 1000
    facet_candidates: PosInt = 200
    facet_top: PosInt = 12
    thumb_size: Annotated[int, BeforeValidator(_integer), Field(ge=16, le=2048)] = 256
    cache_dir: Optional[str] = ".carsearch/thumbs"
    text_cache_size: NonNegInt = 2048
    torch_threads: NonNegInt = 1


class MLflow(_Open):
    tracking_uri: Text = "sqlite:///mlruns.db"
    experiment: Text = "carsearch"


class Params(_Open):
    seed: NonNegInt = 42
    lr: PosNum = 2.5e-4
    epochs: PosInt = 24
    batch_size: PosInt = 32
    paths: Paths = Paths()
    data: Data = Data()
    caption: Caption = Caption()
    curate: Curate = Curate()
    model: Annotated[Union[TinyModel, PretrainedModel], Field(discriminator="kind")] = TinyModel()
    train: Train = Train()
    eval: Eval = Eval()
    index: Index = Index()
    serve: Serve = Serve()
    mlflow: MLflow = MLflow()

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


def validate_params(params: Any, label: str = "params.yaml", root: str | Path | None = None) -> dict:
    """Validate a loaded params.yaml; the same dict back (numbers coerced, unknown keys kept where
    allowed, defaults not added). Raises ConfigError with one line naming key, value and what is allowed."""
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
    return m.model_dump(exclude_unset=True)
