"""The schema of `params.yaml` (what DVC composes from conf/): one check, before any stage works,
of types, ranges, choices and paths, with one line per problem naming the key, the bad value and
what is allowed, e.g. `params.yaml: train.epochs = -1: must be >= 1`.

conf/ is the only home of default values: no field here has one, so every key must be in what
conf/ composes (a key missing from params.yaml is one line, `params.yaml: train.lr: missing`) and
the stages read complete, typed sections by attribute (`cfg.train.lr`; a section has no `["key"]`
or `.get(key, fallback)`). The items of `eval.sets` are filled from `eval.set_defaults` (in conf/eval)
before they are checked. Sections where people add settings (`paths`, `data`, `caption`, `index`,
`serve`, `mlflow`, the top level) accept unknown keys; the others refuse them (a typo there would
otherwise be silently ignored).

One module per conf group, read beside conf/: `data`, `caption`, `train` (curate, model, train),
`eval`, `index` (index, detect), `serve` (serve, mlflow), `params` (the whole file, its `paths`,
and the one-line error rendering), `cameras` (conf/cameras.yaml, read on its own); `base` holds
the scalar types and section bases they share. `carsearch.core.params.load_config()` is the entry.
"""

from carsearch.core.schema.base import (
    ConfigError,
    Fraction,
    Int,
    NonNegInt,
    NonNegNum,
    Num,
    PosInt,
    PosNum,
    Text,
)
from carsearch.core.schema.cameras import CameraPair, Cameras, CameraSettings, Travel, load_cameras
from carsearch.core.schema.caption import (
    Bedrock,
    Caption,
    CaptionCache,
    CaptionOffline,
    CaptionS3,
    OpenAI,
    Quotas,
)
from carsearch.core.schema.data import (
    Capture,
    Corridor,
    Data,
    Demo,
    Fleet,
    Folder,
    Highway,
    S3Source,
    Street,
    Torcs,
    Traffic,
    Video,
)
from carsearch.core.schema.eval import Bootstrap, Calibration, Eval, EvalSet, EvalSetDefaults
from carsearch.core.schema.index import Detect, Index, IndexRay, PlateSearch, Promote, WiseFT
from carsearch.core.schema.params import Examples, Params, Paths, validate_params
from carsearch.core.schema.serve import MLflow, Serve
from carsearch.core.schema.train import (
    HUB_ID,
    Augment,
    Boxes,
    Curate,
    EarlyStopping,
    Lock,
    PretrainedModel,
    TinyModel,
    Train,
)

__all__ = [
    "HUB_ID",
    "Augment",
    "Bedrock",
    "Bootstrap",
    "Boxes",
    "Calibration",
    "CameraPair",
    "Cameras",
    "CameraSettings",
    "Caption",
    "CaptionCache",
    "CaptionOffline",
    "CaptionS3",
    "Capture",
    "ConfigError",
    "Corridor",
    "Curate",
    "Data",
    "Demo",
    "Detect",
    "EarlyStopping",
    "Eval",
    "EvalSet",
    "EvalSetDefaults",
    "Examples",
    "Fleet",
    "Folder",
    "Fraction",
    "Highway",
    "Index",
    "IndexRay",
    "Int",
    "Lock",
    "MLflow",
    "NonNegInt",
    "NonNegNum",
    "Num",
    "OpenAI",
    "Params",
    "Paths",
    "PlateSearch",
    "PosInt",
    "PosNum",
    "PretrainedModel",
    "Promote",
    "Quotas",
    "S3Source",
    "Serve",
    "Street",
    "Text",
    "TinyModel",
    "Torcs",
    "Traffic",
    "Train",
    "Travel",
    "Video",
    "WiseFT",
    "load_cameras",
    "validate_params",
]
