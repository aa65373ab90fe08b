"""Open and search a LanceDB table written by build_index (`index.store.build_table`) anywhere,
a folder or an object-store URI (s3://bucket/prefix), with CarSearch's filter grammar and ANN
knobs, without the model: `search_table(open_table(uri), vector, k)`. The scale-out embedding
itself runs inside build_index (`index.engine: ray`, carsearch.index.ray_engine)."""

from __future__ import annotations

import numpy as np


def open_table(uri: str, table: str = "cars"):
    """A table written by `embed_corpus` or `index.build_table` (folder or s3:// URI)."""
    from carsearch.index.store import connect

    return connect(uri).open_table(table)


def search_table(
    tbl,
    vector,
    k: int = 10,
    where: str | None = None,
    nprobes: int | None = None,
    refine_factor: int | None = None,
    metric: str = "cosine",
) -> list[dict]:
    """The k nearest rows (metadata + `score` = 1 - distance) of a table opened by `open_table`,
    with CarSearch's filter grammar and ANN knobs."""
    from carsearch.index.query import check_where
    from carsearch.index.store import RESULT_COLUMNS

    where = check_where(where)
    q = tbl.search(np.asarray(vector, np.float32)).distance_type(metric)
    if nprobes:
        q = q.nprobes(int(nprobes))
    if refine_factor:
        q = q.refine_factor(int(refine_factor))
    q = q.select(list(RESULT_COLUMNS)).limit(int(k))
    rows = (q.where(where, prefilter=True) if where else q).to_list()
    return [
        {**{c: r[c] for c in RESULT_COLUMNS if c != "_distance"}, "score": 1.0 - float(r["_distance"])} for r in rows
    ]
