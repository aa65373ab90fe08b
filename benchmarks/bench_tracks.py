"""Tracks from the street world's videos against its MOTChallenge ground truth, and how many vehicles
more than one camera sees.

Each camera's mp4 (data/raw/video/, from `make repro`'s ingest) is decoded by the product's video path
(`carsearch.detection.video.iter_frames`, every frame), the ground-truth boxes of each decoded frame
stand in for a detector (MOTChallenge's "public detections": the tracker alone is measured), and
`link_tracks` (ByteTrack association, then the appearance merge when a model embeds the crops cut
from the decoded pixels) links them into tracks. The CLEAR-MOT counts (`carsearch.detection.mot`)
compare those tracks with the MOT files: identity switches (IDSW), MOTA, and tracks per identity.
Cross-camera: the share of identities seen at >= 2 cameras of their session (from the COCO files'
attributes: all, and moving vehicles only).

    python benchmarks/bench_tracks.py                          # data/raw, models/finetuned if present
    python benchmarks/bench_tracks.py --raw DIR --model DIR --json out.json
Without data/raw/video a small corridor (one session, four cameras) is rendered into a temp folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from carsearch.detection.mot import clear_mot, read_mot  # noqa: E402
from carsearch.detection.video import iter_frames, link_tracks, probe  # noqa: E402


def render_small(out: Path) -> Path:
    """A one-session corridor with the default fleet, its videos, MOT and COCO files under `out`."""
    from carsearch_world import build_fleet, render_corridor, write_coco, write_mot, write_videos

    st = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["street"]
    f, c = st["fleet"], st["corridor"]
    fleet = build_fleet(42, f["n_identities"], f["types"], f["colors"], f["liveries"], f["variants"], f["plate_region"])
    items = render_corridor(fleet, out / "frames", 43, 1, c["cameras"], c["spacing_m"], c["frames_per_camera"],
                            c["interval_s"], c["moving"], c["parked"], tuple(c["size"]))  # fmt: skip
    write_mot(items, out / "mot")
    write_coco(items, out / "coco")
    write_videos(items, out / "video", c["interval_s"])
    return out


def track_video(video: Path, gt: dict, encoder=None) -> dict:
    """Decode `video`, link the ground-truth boxes of its frames into tracks, score them against `gt`."""
    fps = probe(video)["fps"] or 1.0
    frames, offsets, appearance = [], [], []
    for n, offset, _, im in iter_frames(video, fps):
        boxes = [dict(x1=b[0], y1=b[1], x2=b[2], y2=b[3], score=1.0, gt=i) for i, b in gt.get(n + 1, [])]
        frames.append(boxes)
        offsets.append(offset)
        if encoder is not None:
            crops = [im.crop((round(b["x1"]), round(b["y1"]), round(b["x2"]), round(b["y2"]))) for b in boxes]
            appearance.append(list(encoder.images(crops)) if crops else [])
    if len(frames) < max(gt, default=0):
        raise SystemExit(f"{video}: {len(frames)} frames decoded, the MOT file has {max(gt)}")
    tracks = link_tracks(frames, offsets, appearance if encoder is not None else None)
    hyp: dict[int, list] = defaultdict(list)
    per_id: dict[int, set] = defaultdict(set)
    for k, t in enumerate(tracks, 1):
        for b in t["boxes"]:
            hyp[b["frame"] + 1].append((k, (b["x1"], b["y1"], b["x2"], b["y2"])))
            per_id[b["gt"]].add(k)
    m = clear_mot(gt, dict(hyp))
    m["tracks"] = len(tracks)
    m["tracks_per_identity"] = sum(len(v) for v in per_id.values()) / max(len(per_id), 1)
    return m


def cross_camera(coco_dir: Path) -> dict:
    """Identities seen at >= 2 cameras of their session (the corridor's `cam-*` cameras), all and moving."""
    cams: dict[tuple, set] = defaultdict(set)
    moving: set = set()
    for p in sorted(coco_dir.glob("session*_cam-*.json")):
        session = p.stem.split("_")[0]
        for a in json.loads(p.read_text())["annotations"]:
            key = (session, a["attributes"]["identity"])
            cams[key].add(a["attributes"]["camera"])
            if a["attributes"].get("direction") != "parked":
                moving.add(key)
    multi = {k for k, v in cams.items() if len(v) >= 2}
    return dict(
        identities=len(cams),
        multi_camera=len(multi),
        share=len(multi) / max(len(cams), 1),
        moving=len(moving),
        moving_multi_camera=len(multi & moving),
        moving_share=len(multi & moving) / max(len(moving), 1),
    )


def _encoder(model: Path | None):
    if model is None or not (model / "config.json").is_file():
        return None
    from carsearch.index.encoder import QueryEncoder

    enc = QueryEncoder()
    enc.use(("bench_tracks", str(model)), str(model))
    return enc


def _total(rows: list[dict]) -> dict:
    keys = ("gt", "matches", "fp", "fn", "idsw", "tracks")
    tot = {k: sum(r[k] for r in rows) for k in keys}
    tot["mota"] = 1 - (tot["fn"] + tot["fp"] + tot["idsw"]) / max(tot["gt"], 1)
    return tot


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=REPO / "data" / "raw")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "finetuned")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = a.raw if any((a.raw / "video").glob("*.mp4")) else render_small(Path(tmp))
        videos = sorted(v for v in (raw / "video").glob("*.mp4") if (raw / "mot" / f"{v.stem}.txt").is_file())
        encoder = _encoder(a.model)
        out: dict = {"raw": str(raw), "videos": len(videos), "model": str(a.model) if encoder else None}
        t0 = time.perf_counter()
        for name, enc in (("iou", None), ("iou+appearance", encoder)):
            if name != "iou" and enc is None:
                continue
            rows = []
            for v in videos:
                m = track_video(v, read_mot(raw / "mot" / f"{v.stem}.txt"), enc)
                rows.append(m | {"video": v.stem})
                print(f"{name:15s} {v.stem:20s} boxes {m['gt']:4d}  ids {m['objects']:3d}  tracks {m['tracks']:3d}  "
                      f"IDSW {m['idsw']:3d}  tracks/id {m['tracks_per_identity']:.2f}  MOTA {m['mota']:.3f}")  # fmt: skip
            out[name] = {"total": _total(rows), "videos": rows}
            t = out[name]["total"]
            print(f"{name}: IDSW {t['idsw']} over {t['gt']} boxes in {len(videos)} videos, MOTA {t['mota']:.3f}")
        out["cross_camera"] = cross_camera(raw / "coco")
        out["seconds"] = round(time.perf_counter() - t0, 1)
    c = out["cross_camera"]
    print(f"cross-camera: {c['multi_camera']}/{c['identities']} identities ({c['share']:.0%}) seen at >= 2 cameras; "
          f"moving {c['moving_multi_camera']}/{c['moving']} ({c['moving_share']:.0%})")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
