"""Motion and counts against the street world's ground truth (issue 33's floors), measured.

Renders street corridors (two pole cameras looking east, 40 frames 0.1 s apart per session:
eastbound vehicles drive away from the cameras, westbound towards them, parked ones stand still),
puts every box through the real track linker and motion (`detection.footage.collapse_tracks`) and
reports, per render and over all:
  - direction accuracy on tracks of >= 3 boxes, from the image alone and with each camera's ground
    homography (fitted, DLT, to the world camera's own projection of 40 street points);
  - the median absolute speed error (relative to the world's km/h) on moving tracks of >= 5 boxes,
    with the homography;
  - counts: tracks per camera and class against the world's identities, and crossings of a line
    across each camera's street per way against each vehicle's own boxes' crossings (exact or not).
Floors: direction >= 0.95, speed error <= 10 %, counts exact.

    python benchmarks/bench_motion.py                      # seeds 5 (1 session), 11 and 23 (3 each)
    python benchmarks/bench_motion.py --renders 5:1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DT, N_FRAMES, SIZE, CAMS = 0.1, 40, (160, 120), 2
WAY = {"eastbound": "away", "westbound": "towards", "parked": "stopped"}  # the cameras look east
LINE = (0.0, 80.0, 160.0, 80.0)  # across each camera's street, in its pixels
FLOORS = {"direction": 0.95, "speed_error": 0.10}


def fleet():
    from carsearch_world.street import build_fleet

    mix = yaml.safe_load((ROOT / "conf/data/_base.yaml").read_text())["street"]["fleet"]
    return build_fleet(0, 60, mix["types"], mix["colors"], mix["liveries"], 2, "us")


def render(seed: int, sessions: int, out: Path) -> list[dict]:
    """One row per box (the corpus's fields plus the world's truth: identity, way, km/h, session)."""
    from carsearch_world.corridor import render_corridor

    items = render_corridor(
        fleet(), out, seed=seed, sessions=sessions, cameras=CAMS, frames_per_camera=N_FRAMES,
        interval_s=DT, moving=16, parked=3, size=SIZE, workers=1,
    )  # fmt: skip
    rows = []
    for p, lab, boxes, epoch in items:
        video = f"{out}/session{lab['session']}_{lab['camera']}.mp4"
        for b in boxes:
            rows.append({
                "origin": f"{video}#t={lab['frame_index'] * DT:.3f}s", "frame_id": p.stem,
                "box": [b["x1"], b["y1"], b["x2"], b["y2"]], "box_class": b["class"], "box_score": 1.0,
                "time": epoch, "camera": lab["camera"], "session": lab["session"], "fi": lab["frame_index"],
                "identity": b["labels"]["identity"], "truth": WAY[b["labels"]["direction"]],
                "kmh": b["labels"]["speed_kmh"],
            })  # fmt: skip
    return rows


def homographies(seed: int, session: int) -> dict:
    """{camera: {"homography": 3x3}} of one session's cameras (pixels -> metres east, north)."""
    from carsearch_world import corridor as C
    from carsearch_world.traffic_scene import camera_of

    s = C.plan_session(np.random.default_rng([seed, 7]), fleet(), session, CAMS, 80.0, N_FRAMES, DT, 16, 3)
    out = {}
    for cam in range(CAMS):
        co = camera_of(C._spec(np.random.default_rng(0), s, cam, 0.0, (60, 95), seed), *SIZE)
        g = np.array([(x, y, 0.0) for x in np.linspace(5, 70, 8) for y in np.linspace(-9, 9, 5)])
        a = []
        for (u, v), (x, y, _) in zip(co.project(co.to_cam(g)), g):
            a += [[u, v, 1, 0, 0, 0, -x * u, -x * v, -x], [0, 0, 0, u, v, 1, -y * u, -y * v, -y]]
        h = np.linalg.svd(np.array(a))[2][-1].reshape(3, 3)
        out[f"cam-{cam + 1}"] = {"homography": (h / h[2, 2]).tolist()}
    return out


def truth_crossings(rows: list[dict]) -> Counter:
    from carsearch.index.counts import crossings

    by_id = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["fi"]):
        by_id[r["identity"]].append({"box": r["box"], "offset": r["fi"] * DT})
    return Counter(w for ms in by_id.values() for w in crossings({"track_json": json.dumps(ms)}, LINE))


def measure(rows: list[dict], seed: int) -> dict:
    """The figures of one render (module docstring), per (session, camera) video."""
    from carsearch.core.schema import Cameras
    from carsearch.detection.footage import collapse_tracks
    from carsearch.index.counts import count_rows

    right = {"image": 0, "homography": 0}
    n, errs, count_ok, cross_ok = 0, [], True, True
    for session in sorted({r["session"] for r in rows}):
        srows = [r for r in rows if r["session"] == session]
        plain, _ = collapse_tracks([dict(r) for r in srows])
        geo, _ = collapse_tracks(
            [dict(r) for r in srows], Cameras.model_validate({"cameras": homographies(seed, session)})
        )
        for a, g in zip(plain, geo):
            if len(json.loads(a["track_json"])) >= 3:
                n += 1
                right["image"] += a["direction"] == a["truth"]
                right["homography"] += g["direction"] == g["truth"]
            if len(json.loads(g["track_json"])) >= 5 and g["truth"] != "stopped":
                errs.append(abs(g["speed"] - g["kmh"]) / g["kmh"])
        got = Counter({(r["camera"], r["class"]): r["count"] for r in count_rows(plain, ["camera", "class"])})
        want = Counter((r["camera"], r["box_class"]) for r in {(r["camera"], r["identity"]): r for r in srows}.values())
        count_ok &= got == want
        for cam in sorted({r["camera"] for r in srows}):
            crossed = {
                r["direction"]: r["count"]
                for r in count_rows([t for t in plain if t["camera"] == cam], ["direction"], LINE)
            }
            cross_ok &= Counter(crossed) == truth_crossings([r for r in srows if r["camera"] == cam])
    return {
        "tracks": n,
        "direction_image": right["image"] / n,
        "direction_homography": right["homography"] / n,
        "speed_tracks": len(errs),
        "speed_error_median": float(np.median(errs)) if errs else None,
        "_errs": errs,
        "_right": right,
        "counts_exact": bool(count_ok),
        "crossings_exact": bool(cross_ok),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renders", default="5:1,11:3,23:3", help="seed:sessions, comma-separated")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    out, errs, right, n, exact = {}, [], Counter(), 0, True
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.renders.split(","):
            seed, sessions = (int(v) for v in spec.split(":"))
            t0 = time.perf_counter()
            m = measure(render(seed, sessions, Path(tmp) / f"s{seed}"), seed)
            errs += m.pop("_errs")
            right.update(m.pop("_right"))
            n += m["tracks"]
            exact &= m["counts_exact"] and m["crossings_exact"]
            out[f"seed{seed}x{sessions}"] = {**m, "seconds": round(time.perf_counter() - t0, 1)}
            print(f"seed {seed} x {sessions} sessions: {json.dumps(out[f'seed{seed}x{sessions}'])}")
    total = {
        "tracks": n,
        "direction_image": right["image"] / n,
        "direction_homography": right["homography"] / n,
        "speed_tracks": len(errs),
        "speed_error_median": float(np.median(errs)),
        "counts_exact": bool(exact),
    }
    out["all"] = total
    print(f"all: {json.dumps(total)}")
    ok = (
        min(total["direction_image"], total["direction_homography"]) >= FLOORS["direction"]
        and total["speed_error_median"] <= FLOORS["speed_error"]
        and exact
    )
    print("floors (direction >= 0.95, speed error <= 10 %, counts exact): " + ("met" if ok else "NOT met"))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
