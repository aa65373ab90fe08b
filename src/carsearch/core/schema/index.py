"""`index` and `detect` (conf/index, conf/detect): the vector index, its promotion gate and the detector."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field

from carsearch.core.schema.base import NonNegInt, NonNegNum, Num, OpenSection, PosInt, StrictSection, Text, to_number


class Promote(StrictSection):
    metric: Optional[str]
    min_gain: Num
    set: Optional[str]  # an eval.sets name decides (its metric, e.g. text_to_image.precision@5)


class WiseFT(StrictSection):
    alphas: list[Annotated[float, BeforeValidator(to_number), Field(ge=0, le=1)]]
    only_pretrained: bool


class Detect(StrictSection):
    model: Optional[Text]
    tiny: bool
    threshold: Annotated[float, Field(ge=0, le=1)]
    prompts: list[Text]
    batch_size: PosInt


class IndexRay(StrictSection):
    """`index.engine: ray` (carsearch.index.ray_engine)."""

    address: Optional[str]
    num_cpus: Optional[PosInt]
    actors: Optional[PosInt]
    actor_cpus: PosInt
    num_gpus: Optional[NonNegNum]
    chunk: PosInt


class PlateSearch(StrictSection):
    max_distance: Annotated[float, BeforeValidator(to_number), Field(ge=0, le=4)]
    confusion_cost: Annotated[float, BeforeValidator(to_number), Field(ge=0, le=1)]


class Index(OpenSection):
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
