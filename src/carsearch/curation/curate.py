"""Curating caption outputs into (image, caption) pairs: join on recordId, validate, de-duplicate,
split. Every input record ends up in a split or in the rejects list with its reason.

An answer to the vehicles prompt gives one pair per usable vehicle (`id` = `boxes.vehicle_id` of
the frame and its box, `frame_id`, `box` in the frame's pixels, `margin`, its own caption; the
crop is cut by `curation.crops.crop_pairs`, and build_index links it rather than cutting it again) and one reject per unusable one; the
vehicles of a frame share its split and its near-duplicate check (both by frame id).

A plate the answer reads is an attribute (and a label where the source has none); one that is not a
plate is dropped: a `bad plate` reject line names the record (and vehicle) while its pair is kept."""

from __future__ import annotations

import json
from pathlib import Path

from carsearch.captioning import formats
from carsearch.captioning.parse import Caption, CaptionError, parse_caption
from carsearch.captioning.vehicles import VehicleAnswer, iou, parse_vehicle_answer
from carsearch.core.io import read_jsonl
from carsearch.core.schema import Curate
from carsearch.core.vocab import UNKNOWN, known
from carsearch.curation.split import perceptual_groups, split_of
from carsearch.sources.boxes import vehicle_id

TRUNCATED_STOPS = {"max_tokens", "length"}
SOURCE_BOX_IOU = 0.5  # an LLM box this close to an annotated box of the frame takes that box's labels


def read_outputs(out_files: list[Path]) -> tuple[dict[str, dict], list[dict], dict[str, str]]:
    """recordId -> output line; rejects for malformed lines whose recordId cannot be read (named
    by file:line); and recordId -> reason for malformed/truncated lines whose recordId can."""
    outputs, rejects, problems = {}, [], {}
    for path in out_files:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path.name}:{lineno}"
                try:
                    rec = formats.parse_output_line(line, where)
                except formats.FormatError as e:
                    m = formats._RID.search(line)
                    if m:
                        problems[m.group(1)] = f"bad output line: {e}"
                    else:
                        rejects.append({"id": None, "where": where, "reason": f"bad output line: {e}"})
                    continue
                outputs[rec["recordId"]] = rec
    return outputs, rejects, problems


def load_jobs(captions_dir: Path) -> dict[str, dict]:
    """input file name -> Bedrock job summary (jobs.json of the bedrock backend), if any."""
    p = Path(captions_dir) / "jobs.json"
    if not p.is_file():
        return {}
    return {j["file"]: j for j in json.loads(p.read_text())}


def _answer_problem(model_output: dict) -> str | None:
    stop = formats.stop_reason(model_output)
    if stop in formats.REFUSAL_STOPS:
        return f"model refused (stop reason {stop})"
    if stop in TRUNCATED_STOPS:
        return f"answer cut off at the token limit (stop reason {stop}; raise caption.max_tokens)"
    return None


def _source_labels(row: dict, box: dict, n_boxes: int) -> dict:
    """The source's labels of a vehicle where it has them: the annotated box it matches (overlaying
    the frame's labels, as the index's crop rows do), or the frame's own when the frame has no boxes
    and this is its one vehicle; {} when the source says nothing about it."""
    frame_labels = row.get("labels") or {}
    source_boxes = row.get("boxes") or []
    if not source_boxes:
        return known(frame_labels) if n_boxes == 1 else {}
    best = max(source_boxes, key=lambda b: iou(b, box))
    return known({**frame_labels, **(best.get("labels") or {})}) if iou(best, box) >= SOURCE_BOX_IOU else {}


def vehicle_pairs(
    rid: str, row: dict, ans: VehicleAnswer, margin: float, require_fields: list[str]
) -> tuple[list[dict], list[dict]]:
    """(pairs, rejects) of one frame's vehicles answer: a pair per usable vehicle, a reject per entry
    that is not; a frame with no vehicle at all stays one frame pair (the scene caption)."""
    rejects = [{"id": rid, "path": row["path"], "reason": f"bad vehicle: {why}"} for why in ans.rejected]
    rejects += [{"id": rid, "path": row["path"], "reason": f"bad plate: {why}"} for why in ans.plates_dropped]
    if not ans.boxes and not ans.rejected:
        if not ans.caption or len(ans.caption) < 8:
            return [], [{"id": rid, "path": row["path"], "reason": "bad caption: no vehicles and no caption"}]
        if require_fields:
            return [], [{"id": rid, "path": row["path"], "reason": f"caption lacks {', '.join(require_fields)}"}]
        labels = known(row.get("labels"))
        return [{"id": rid, "path": row["path"], "caption": ans.caption, "attributes": {}, "labels": labels}], rejects
    pairs = []
    for box in ans.boxes:
        attrs = {"class": box["class"], **{k: box["labels"].get(k, UNKNOWN) for k in ("body_type", "color", "view")}}
        if box["labels"].get("plate"):
            attrs["plate"] = box["labels"]["plate"]
        xyxy = [box["x1"], box["y1"], box["x2"], box["y2"]]
        missing = [k for k in require_fields if attrs.get(k, UNKNOWN) in (None, "", UNKNOWN)]
        if missing:
            why = f"bad vehicle: vehicle {box['vehicle']} box {xyxy}: caption lacks {', '.join(missing)}"
            rejects.append({"id": rid, "path": row["path"], "reason": why})
            continue
        pair = {
            "id": vehicle_id(rid, box, margin),
            "frame_id": rid,
            "path": row["path"],
            "box": xyxy,
            "box_class": box["class"],
            "box_source": box["source"],
            "margin": margin,
            "caption": box["caption"],
            "frame_caption": ans.caption,
            "attributes": attrs,
            "labels": _source_labels(row, box, len(ans.boxes)) or known(box["labels"]),
        }
        if box.get("note"):
            pair["note"] = box["note"]
        pairs.append(pair)
    return pairs, rejects


def caption_pair(rid: str, row: dict, cap: Caption, require_fields: list[str]) -> tuple[list[dict], list[dict]]:
    """([the pair], rejects) of one single-caption answer, or ([], [why]) when it lacks a required field."""
    attrs = cap.model_dump(exclude_none=True)  # no plate read: no plate attribute
    missing = [k for k in require_fields if attrs.get(k) in (None, "", UNKNOWN)]
    if missing:
        return [], [{"id": rid, "path": row["path"], "reason": f"caption lacks {', '.join(missing)}"}]
    rejects = []
    if cap.plate_dropped:
        why = f"bad plate: {cap.plate_dropped}; plate dropped, caption kept"
        rejects.append({"id": rid, "path": row["path"], "reason": why})
    caption = attrs.pop("caption")
    # the source's labels where it has them, else what the caption says; "unknown" is no label
    labels = known(row.get("labels")) or known(attrs)
    return [{"id": rid, "path": row["path"], "caption": caption, "attributes": attrs, "labels": labels}], rejects


def curate(
    input_files: list[Path],
    output_files: list[Path],
    manifest: dict[str, dict],
    root: Path,
    cfg: Curate,
    seed: int,
    jobs: dict[str, dict] | None = None,
    margin: float | None = None,
    min_side: int | None = None,
):
    """Returns (pairs by split, rejects). `manifest` maps image id -> manifest row; `jobs` (input
    file name -> job summary) explains records missing from a job that did not complete. Vehicles
    answers: `margin` (the crop's context, part of the vehicle id) and `min_side` (px) default to
    `cfg.boxes` (curate.boxes.margin, curate.boxes.min_side)."""
    outputs, rejects, problems = read_outputs(output_files)
    jobs = jobs or {}
    margin = float(cfg.boxes.margin if margin is None else margin)
    min_side = int(cfg.boxes.min_side if min_side is None else min_side)
    pairs = []
    for rid, fname, asks_vehicles, sent_size in _requested(input_files):
        row = manifest.get(rid)
        if row is None:
            rejects.append({"id": rid, "reason": "recordId not in the ingest manifest"})
            outputs.pop(rid, None)
            continue
        out = outputs.pop(rid, None)
        if out is None:
            reason = problems.pop(rid, None) or _missing(fname, jobs.get(fname))
            rejects.append({"id": rid, "path": row["path"], "reason": reason})
            continue
        answer = (asks_vehicles, sent_size, margin, min_side)
        got, bad = _record_pairs(rid, row, out, answer, cfg.require_fields)
        pairs += got
        rejects += bad
    for rid in outputs:  # outputs nobody asked for
        rejects.append({"id": rid, "reason": "output record with no matching input record"})
    for rid, reason in problems.items():  # malformed lines of records nobody asked for
        rejects.append({"id": rid, "reason": reason})
    return _split(pairs, rejects, root, cfg, seed), rejects


def _requested(input_files: list[Path]) -> list[tuple[str, str, bool, tuple | None]]:
    """(recordId, input file, vehicles request?, the image size it states) of every request
    (request bodies are not kept)."""
    return [
        (
            rec["recordId"],
            f.name,
            formats.wants_vehicles(rec["modelInput"]),
            formats.stated_image_size(rec["modelInput"]),
        )
        for f in input_files
        for rec in read_jsonl(f)
    ]


def _missing(fname: str, job: dict | None) -> str:
    """Why a requested record has no output: its job's status where the job did not complete."""
    reason = f"no output record (missing from {fname}.out)"
    if job and job.get("status") not in ("Completed", "PartiallyCompleted"):
        reason += f": job {job.get('jobName')} {job.get('status')}" + (
            f" ({job['message']})" if job.get("message") else ""
        )
    return reason


def _record_pairs(rid: str, row: dict, out: dict, answer: tuple, require_fields: list[str]):
    """(pairs, rejects) of one answered record. `answer`: (vehicles request?, the image size it
    stated, curate.boxes.margin, curate.boxes.min_side)."""
    asks_vehicles, sent_size, margin, min_side = answer
    if "error" in out:
        err = out["error"] or {}
        why = f"model error {err.get('errorCode')}: {err.get('errorMessage')}"
        return [], [{"id": rid, "path": row["path"], "reason": why}]
    mo = out.get("modelOutput")
    problem = _answer_problem(mo)
    try:
        text = formats.response_text(mo)
        if problem and problem.startswith("model refused"):
            raise CaptionError(f"{problem}: {text.strip()[:80]!r}")
        if asks_vehicles:
            ans = parse_vehicle_answer(text, row["width"], row["height"], min_side, sent_size, frame_id=rid)
        else:
            cap = parse_caption(text)
    except (CaptionError, formats.FormatError, AttributeError, TypeError) as e:
        msg = str(e) if problem is None or str(e).startswith("model refused") else f"{e} ({problem})"
        return [], [{"id": rid, "path": row["path"], "reason": f"bad caption: {msg}"}]
    if asks_vehicles:
        return vehicle_pairs(rid, row, ans, margin, require_fields)
    return caption_pair(rid, row, cap, require_fields)


def _split(pairs: list[dict], rejects: list[dict], root: Path, cfg: Curate, seed: int) -> dict[str, list[dict]]:
    """The pairs by split; a near-duplicate's pairs go to `rejects`. By frame: the vehicles of one
    frame are one image (never near-duplicates of each other) and share its split (crops of a
    frame never straddle train/test)."""
    frames = {p.get("frame_id", p["id"]): root / p["path"] for p in pairs}
    groups = perceptual_groups(frames, cfg.near_duplicate_max_distance)
    by_split: dict[str, list[dict]] = {s: [] for s in cfg.splits}
    for p in pairs:
        frame = p.get("frame_id", p["id"])
        rep = groups[frame]
        if rep != frame:
            extra = {"frame_id": frame} if "frame_id" in p else {}
            rejects.append({"id": p["id"], **extra, "path": p["path"], "reason": f"near-duplicate of {rep}"})
            continue
        by_split[split_of(frame, seed, cfg.splits)].append(p)
    return by_split
