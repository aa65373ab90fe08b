"""What the build_index stage writes and prints about a `carsearch.index.build.BuiltIndex`:
metrics/index.json and the summary lines."""

from __future__ import annotations

import pyarrow.compute as pc

from carsearch.core.rejects import summarise
from carsearch.core.schema import Index
from carsearch.index.build import BuiltIndex

MACHINE_STATE = ("seconds", "embed_seconds", "embedded", "cached", "images_per_second")  # not metrics


def index_metrics(built: BuiltIndex) -> dict:
    """metrics/index.json: the summary less machine state (what the embedding cache held), and the
    registry pointer without the alias history of this machine."""
    s = built.summary
    return {
        **{k: v for k, v in s.items() if k not in MACHINE_STATE},
        "registered_model": {k: v for k, v in s["registered_model"].items() if k != "previous_champion"},
    }


def _s(n: int) -> str:
    return "s" if n != 1 else ""


def summary_lines(built: BuiltIndex, c: Index, index_rel: str) -> list[str]:
    """What the stage prints (`c`: the `index` section, `index_rel`: paths.index_dir): rejects, frames
    without a vehicle, rows left out, then the headline."""
    s, rows, version = built.summary, built.rows, built.version
    out = [f"build_index: {line}" for line in summarise(built.rejects, "file", f"{index_rel}/{version}/rejects.jsonl")]
    if empty := built.notes.get("frames_without_vehicle"):
        out.append(
            f"build_index: {len(empty)} frame{_s(len(empty))} without a vehicle box (annotated without one, or none "
            f"detected), e.g. {empty[0]}; each stays one whole-frame row; listed in {index_rel}/{version}/no_vehicle.jsonl"
        )
    left_out, before = built.left_out, built.before
    if left_out and built.switched:
        out.append(
            f"build_index: the previous index was built from another corpus ({before.get('corpus')} "
            f"{before.get('corpus_path') or ''}); its {len(left_out)} rows not in this corpus ({c.corpus} "
            f"{c.corpus_path or ''}) are not kept; listed in {index_rel}/{version}/left_out.jsonl"
        )
    elif left_out:
        out.append(
            f"build_index: {len(left_out)} rows of the previous index are not in the corpus and not in this one "
            f"(added by `carsearch index add` outside index.corpus_path, or deleted), e.g. {left_out[0]['origin']}; "
            f"listed in {index_rel}/{version}/left_out.jsonl; to keep them, put their files in the corpus"
        )
    reg = s["registered_model"]
    reg_txt = f", registered {reg['name']} v{reg['version']}" if reg and reg.get("version") else ""
    n, vehicles = rows.num_rows, s["vehicles"]
    frames = pc.count_distinct(rows.filter(pc.is_valid(rows["box"]))["frame_id"]).as_py() if vehicles else 0
    what = (
        f"{n} images"
        if not vehicles
        else f"{n} rows ({vehicles} vehicles in {frames} frames, {n - vehicles} whole image{_s(n - vehicles)})"
    )
    out.append(
        f"build_index: {what} ({s['embedded']} embedded, {s['cached']} from the embedding cache) "
        f"into {index_rel}/{version}/{c.table} ({s['search']}) with the {s['model']} model {s['model_ref']}{reg_txt}; "
        f"{s['promotion']['reason']}"
    )
    return out
