"""Stage ingest: images from the demo generator, a folder (or other sources) -> data/raw/ with a
manifest and a rejects file."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from carsearch.core.io import atomic_dir, write_json, write_jsonl
from carsearch.core.params import load_config, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.schema import Data
from carsearch.curation.frames import folder_items, frame_rows
from carsearch.sources import demo
from carsearch.sources import files as data
from carsearch_world import (
    HIGHWAY_CAMERA,
    build_fleet,
    default_torcs_dir,
    find_torcs_cars,
    render_corridor,
    render_fleet,
    render_highway,
    render_torcs,
    render_traffic,
    write_coco,
    write_mot,
    write_videos,
)


def _street_items(cfg: dict, seed: int, tmp_dir):
    """Render the street world (single vehicles, the camera corridor, the highway clip) into a scratch
    folder; per session camera, the MOTChallenge track files go to <raw_dir>/mot/, its COCO files (box
    labels as attributes) to <raw_dir>/coco/ and its mp4 to <raw_dir>/video/. Returns (items, total,
    boxes, capture)."""
    s, f, c = cfg["street"], cfg["street"]["fleet"], cfg["street"]["corridor"]
    scratch = tmp_dir.with_name(tmp_dir.name + ".render")
    shutil.rmtree(scratch, ignore_errors=True)
    fleet = build_fleet(
        seed, f["n_identities"], f["types"], f["colors"], f["liveries"], f["variants"], f["plate_region"]
    )
    jq = tuple(s["jpeg_quality"])
    framing = tuple(s["framing"]) if s["framing"] else None
    singles = render_fleet(fleet, scratch / "cars", s["n_images"], s["size"], seed, s["workers"], jq, framing)
    frames = render_corridor(
        fleet,
        scratch / "frames",
        seed + 1,
        c["sessions"],
        c["cameras"],
        c["spacing_m"],
        c["frames_per_camera"],
        c["interval_s"],
        c["moving"],
        c["parked"],
        tuple(c["size"]),
        s["workers"],
        jq,
    )
    h = s.get("highway") or {}
    if h.get("frames"):  # a gantry camera over a highway: one clip, MOT/COCO/mp4 beside the corridor's
        frames += render_highway(
            fleet,
            scratch / "frames",
            seed + 2,
            h["frames"],
            h["lanes"],
            h["vehicles"],
            h["interval_s"],
            tuple(h["size"]),
            s["workers"],
            jq,
        )
    write_mot(frames, tmp_dir / "mot")
    write_coco(frames, tmp_dir / "coco")  # COCO with every box's labels as attributes, per camera
    on_highway = [fr[1]["camera"] == HIGHWAY_CAMERA for fr in frames]
    for interval, part in (
        (c["interval_s"], [fr for fr, hw in zip(frames, on_highway) if not hw]),
        (h.get("interval_s"), [fr for fr, hw in zip(frames, on_highway) if hw]),
    ):
        if part:  # each camera's frames as an mp4
            write_videos(part, tmp_dir / "video", interval)
    boxes = {f"street/{p.name}": bs for p, _, bs, _ in frames}
    capture = {f"street/{p.name}": (lab["camera"], epoch) for p, lab, _, epoch in frames}

    def items():
        for path, labels in singles:
            yield f"cars/{path.name}", path.read_bytes(), labels, None
        for path, labels, _, _ in frames:
            yield f"street/{path.name}", path.read_bytes(), labels, None
        shutil.rmtree(scratch, ignore_errors=True)

    return items(), len(singles) + len(frames), boxes, capture


def _torcs_items(cfg: Data, seed: int, tmp_dir, root: Path):
    """Render the TORCS set into a scratch folder; fall back to the toy set (one line) without the data."""
    t = cfg.torcs
    torcs_dir = default_torcs_dir() if not t.dir else resolve(t.dir, root)
    if not find_torcs_cars(torcs_dir):
        print(f"ingest: no TORCS car models under {torcs_dir} (run scripts/fetch_torcs.sh); using the toy demo set")
        return None, None, "demo", None
    scratch = tmp_dir.with_name(tmp_dir.name + ".render")
    shutil.rmtree(scratch, ignore_errors=True)
    rendered, skips = render_torcs(
        torcs_dir,
        scratch,
        t.n_images,
        t.size,
        seed,
        t.workers,
        t.colors,
        tuple(t.jpeg_quality),
        framing=tuple(t.framing) if t.framing else None,
    )

    tr = t.traffic  # multi-vehicle street frames with their exact boxes (every vehicle is a hit)
    frames, _ = render_traffic(
        torcs_dir,
        scratch / "traffic",
        tr.n_frames,
        tuple(tr.size),
        seed + 1,
        t.workers,
        t.colors,
        tuple(t.jpeg_quality),
        cars_per_frame=tuple(tr.cars_per_frame),
        cameras=tr.cameras,
    )
    boxes = {f"traffic/{path.name}": bs for path, _, bs in frames}

    def items():
        for path, labels in rendered:
            yield f"torcs/{path.name}", path.read_bytes(), labels, None
        for path, labels, _ in frames:
            yield f"traffic/{path.name}", path.read_bytes(), labels, None
        for car, reason in skips:
            yield car, None, None, f"car model skipped: {reason}"
        shutil.rmtree(scratch, ignore_errors=True)

    return items(), len(rendered) + len(frames), "torcs", boxes


def main() -> None:
    cfg = load_config()
    root, paths = repo_root(), cfg.paths
    raw_dir = resolve(paths.raw_dir, root)
    # everything is written into a temp folder beside data/raw and swapped in complete (carsearch.core.io.atomic_dir)
    with atomic_dir(raw_dir) as tmp_dir:
        rows, rejects, source = _ingest(cfg.data, cfg.seed, root, paths, raw_dir, tmp_dir)

    sheet = [(root / r["path"], r["labels"]) for r in rows]
    demo.contact_sheet(sheet, resolve(paths.contact_sheet, root))
    labelled = sum(1 for r in rows if r["labels"])
    groups = _group_rejects(rejects)
    write_json(
        resolve(paths.metrics_dir, root) / "ingest.json",
        {
            "images": len(rows),
            "labelled": labelled,
            "rejected": len(rejects),
            "reencoded": sum(1 for r in rows if r.get("reencoded")),
            "rejected_by_kind": {kind: len(g) for kind, (g, _) in groups.items()},
        },
    )
    for kind, (group, fix) in groups.items():
        ex = group[0]
        print(f"rejected {len(group)} x {kind}: e.g. {ex.path}: {ex.reason} -- fix: {fix}")
    print(
        f"ingest: {len(rows)} images ({labelled} labelled) from {source}; {len(rejects)} rejected"
        + (f", every one with its reason in {paths.rejects}" if rejects else "")
    )
    if not rows:
        raise ValueError(f"ingest: no usable images from source {source!r} (see {paths.rejects})")


def _ingest(cfg: Data, seed: int, root: Path, paths, raw_dir: Path, tmp_dir: Path):
    """Read the source `cfg.source` into `tmp_dir` (images, manifest, rejects); returns (rows, rejects, source)."""
    source = cfg.source
    images_tmp = tmp_dir / resolve(paths.images_dir, root).relative_to(raw_dir)

    items, total, rendered_boxes, capture = None, None, None, {}
    boxes, stamp = None, None  # a folder's annotations; where capture times are read from
    if source == "street":
        items, total, rendered_boxes, capture = _street_items(cfg, seed, tmp_dir)
    if source == "torcs":
        items, total, source, rendered_boxes = _torcs_items(cfg, seed, tmp_dir, root)
    if source == "demo":
        d = cfg.demo
        items = demo.demo_items(d.n_images, d.size, seed, d.colors)
        total = d.n_images
    elif source == "folder":
        f = cfg.folder
        folder = resolve(f.path, root)
        items, ann = folder_items(folder, f.subfolder_key, f.labels_csv, cfg.video)
        boxes, stamp = (ann, folder), (str(folder), cfg.capture)
    elif source == "s3":
        f = cfg.s3
        items = data.iter_s3(f.uri, f.subfolder_key, f.labels_csv)
        stamp = (f.uri, cfg.capture)
    elif items is None:
        raise ValueError(f"data.source: unknown source {source!r} (expected street, torcs, demo, folder or s3)")

    items = tqdm(items, total=total, desc=f"ingest {source}", unit="img")
    rows, rejects = frame_rows(
        items,
        images_tmp,
        tmp_dir,
        source,
        (cfg.max_pixels, cfg.max_edge),
        rendered=(rendered_boxes, capture) if rendered_boxes else None,
        boxes=boxes,
        capture=stamp,
    )
    if boxes is not None:
        rejects += [data.Rejected(p, r) for p, r in boxes[0].problems]
    # manifest paths are repo-relative
    prefix = raw_dir.relative_to(root).as_posix()
    for r in rows:
        r["path"] = f"{prefix}/{r['path']}"
    write_jsonl(tmp_dir / resolve(paths.manifest, root).relative_to(raw_dir), rows)
    write_jsonl(tmp_dir / resolve(paths.rejects, root).relative_to(raw_dir), [vars(r) for r in rejects])
    return rows, rejects, source


def _group_rejects(rejects: list) -> dict[str, tuple[list, str]]:
    """{kind: (rejects of that kind, fix)}, the most frequent kind first."""
    groups: dict[str, tuple[list, str]] = {}
    for r in rejects:
        kind, fix = data.reject_kind(r.reason)
        groups.setdefault(kind, ([], fix))[0].append(r)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1][0])))


if __name__ == "__main__":
    run_stage(main)
