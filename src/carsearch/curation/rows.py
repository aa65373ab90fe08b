"""Index rows as Arrow columns: what `curation.corpus` reads becomes the table's metadata columns
(`index.store` adds `model_ref` and the vectors). The columns and who fills each are declared once
in `carsearch.core.columns`. Light on purpose (pyarrow only): the search path imports it."""

from __future__ import annotations

import json

import pyarrow as pa

from carsearch.core.columns import ROW, Row


def read_plate(r: dict) -> str:
    """The row's plate: the one its caption read (the curated `plate` attribute: an LLM's or the
    offline captioner's, misreads included), else its labels' plate where legible (COCO /
    labels.csv attributes, the offline world's `plate` with `plate_legible`), else ""."""
    read = (r.get("attributes") or {}).get("plate")
    if read:
        return str(read)
    lab = r.get("labels") or {}
    legible = lab.get("plate_legible", True)
    if isinstance(legible, str):
        legible = legible.strip().lower() in ("1", "true", "yes")
    return str(lab.get("plate") or "") if legible else ""


def _values(rows: list[dict], c) -> list:
    """One column's values: a label (labels over curated attributes), a derived value, or the row's own."""
    if c.source == "label":
        return [str((r.get("labels") or {}).get(c.name) or (r.get("attributes") or {}).get(c.name) or "") for r in rows]
    if c.name == "labels_json":
        return [json.dumps(r.get("labels") or {}, sort_keys=True) for r in rows]
    if c.name == "plate":
        return [read_plate(r) for r in rows]
    if c.name == "frame_id":  # the vehicle's frame: the image's own id when the row is a whole image
        return [r.get("frame_id") or r["id"] for r in rows]
    if c.source == "derived":
        raise ValueError(f"column {c.name}: derived, but curation.rows does not say how")
    if pa.types.is_string(c.type):
        return (
            [r[c.name] for r in rows]
            if not c.optional and c.kind in ("id", "path")
            else [r.get(c.name) or "" for r in rows]
        )
    return [r.get(c.name) for r in rows]


def row_table(rows: list[dict], row: Row = ROW) -> pa.Table:
    """Index rows as Arrow columns (the table's schema less `model_ref` and `vector`): ~0.3 kB a
    row where a row dict takes ~1.6 kB, so a 1M-image corpus is held as columns, not dicts. A box is
    a variable-size list: a fixed-size float list would be taken for a second vector column."""
    schema = row.arrow_schema()
    return pa.table({f.name: pa.array(_values(rows, row.by_name[f.name]), f.type) for f in schema}, schema=schema)
