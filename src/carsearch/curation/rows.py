"""Index rows as Arrow columns: what `curation.corpus` reads becomes the table's metadata columns
(`index.store` adds `model_ref` and the vectors). Light on purpose (pyarrow only): the search
path imports it."""

from __future__ import annotations

import json

import pyarrow as pa

ATTRS = ("make", "model", "model_id", "body_type", "color", "view", "scene")


def row_table(rows: list[dict]) -> pa.Table:
    """Index rows as Arrow columns (the table's schema less `model_ref` and `vector`): ~0.3 kB a
    row where a row dict takes ~1.6 kB, so a 1M-image corpus is held as columns, not dicts."""
    cols = {
        "id": [r["id"] for r in rows],
        "path": [r["path"] for r in rows],
        "caption": [r.get("caption") or "" for r in rows],
        "split": [r.get("split") or "" for r in rows],
    }
    for a in ATTRS:
        cols[a] = [str((r.get("labels") or {}).get(a) or (r.get("attributes") or {}).get(a) or "") for r in rows]
    cols["labels_json"] = [json.dumps(r.get("labels") or {}, sort_keys=True) for r in rows]
    cols["origin"] = [r.get("origin") or "" for r in rows]
    # the vehicle: its frame (the image's own id when the row is a whole image), box and where/when
    cols["frame_id"] = [r.get("frame_id") or r["id"] for r in rows]
    for k in ("frame_path", "box_class", "box_source", "camera", "track_id", "track_json"):
        cols[k] = [r.get(k) or "" for r in rows]
    return pa.table(
        {
            **{k: pa.array(v, pa.string()) for k, v in cols.items()},
            # a variable-size list: a fixed-size float list would be taken for a second vector column
            "box": pa.array([r.get("box") for r in rows], pa.list_(pa.float32())),
            "box_score": pa.array([r.get("box_score") for r in rows], pa.float32()),
            "time": pa.array([r.get("time") for r in rows], pa.float64()),
            "first_seen": pa.array([r.get("first_seen") for r in rows], pa.float64()),
            "last_seen": pa.array([r.get("last_seen") for r in rows], pa.float64()),
        }
    )
