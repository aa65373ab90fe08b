"""A multi-lane highway seen from a camera on an overhead gantry: the fleet's vehicles at highway
speeds in two carriageways (oncoming traffic from the front, the other carriageway from behind),
grass verges, a median barrier and the next gantry with its sign down the road.

`render_highway` returns the same items as `render_corridor` (jpeg, frame labels, boxes, epoch), so
`write_mot` / `write_coco` / `write_videos` take them too (camera `hwy-1`, session 0). Every box is
labelled with identity, plate, direction, speed, camera and time. Byte-identical for a seed whatever
the worker count: each frame is one job with its own generator, and the pixel maths is the street
renderer's (`traffic.py`: elementwise IEEE + `xmath`, no BLAS).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from carsearch_world.fleet import plate_corners
from carsearch_world.plates import plate_seen
from carsearch_world.scene import encode_jpeg
from carsearch_world.street import Identity, box_rows, paint_of, pool_map, seen_labels, vehicle_of
from carsearch_world.torcs import CarModel
from carsearch_world.traffic import render_traffic_spec
from carsearch_world.traffic_scene import LANE_W, Placement, TrafficSpec, camera_of

CAMERA = "hwy-1"
VIEW = (6.0, 130.0)  # the camera sees the carriageways this far ahead (m)
GAP = 14.0  # m between vehicles in one lane at every frame
START = datetime(2026, 3, 6, 14, 0, tzinfo=timezone.utc)
SLOW = ("bus", "box truck")  # keep to the outer lane, below 90 km/h
GANTRY_X = 75.0  # the next gantry down the road


@dataclass(frozen=True)
class Lane:
    k: int  # index into the fleet
    y: float  # lane centre (m; y < 0 drives towards +x, away from the camera)
    direction: int  # +1 away from the camera ("eastbound"), -1 towards it ("westbound")
    speed: float  # m/s
    x0: float


def lane_centres(lanes: int) -> dict[int, list[float]]:
    """Lane centres per direction, inner lane first: `lanes` each way, right-hand traffic."""
    return {d: [-d * (j + 0.5) * LANE_W for j in range(lanes)] for d in (1, -1)}


def plan_highway(rng, fleet: list[Identity], lanes: int, n_vehicles: int, times: np.ndarray) -> list[Lane]:
    """Vehicles in lanes at constant highway speeds, `GAP` apart in a lane at every frame time."""
    centres = lane_centres(lanes)
    out: list[Lane] = []
    taken: dict[float, list[np.ndarray]] = {}
    for k in rng.permutation(len(fleet)):
        if len(out) >= n_vehicles:
            break
        ident = fleet[int(k)]
        d = 1 if rng.random() < 0.5 else -1
        slow = ident.body_type in SLOW
        j = lanes - 1 if slow else int(rng.integers(lanes))
        v = float(rng.uniform(20.0, 25.0) if slow else rng.uniform(24.0, 36.0)) - 1.5 * j  # 72-130 km/h
        x_mid = float(rng.uniform(VIEW[0] + 4, VIEW[1] - 20))  # where it is at the middle frame
        x0 = x_mid - d * v * float(times[len(times) // 2])
        pos = x0 + d * v * times
        y = centres[d][j]
        if any(np.min(np.abs(p - pos)) < GAP for p in taken.get(y, [])):
            continue
        taken.setdefault(y, []).append(pos)
        out.append(Lane(int(k), y, d, v, x0))
    return out


def _box(P, N, UV, TX, lo, hi, tex: int) -> None:
    """The six faces of an axis-aligned box lo..hi (outward normals), texture `tex`."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    faces = (
        ((x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1), (-1, 0, 0)),
        ((x1, y1, z0), (x1, y0, z0), (x1, y0, z1), (x1, y1, z1), (1, 0, 0)),
        ((x1, y0, z0), (x0, y0, z0), (x0, y0, z1), (x1, y0, z1), (0, -1, 0)),
        ((x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1), (0, 1, 0)),
        ((x0, y0, z1), (x0, y1, z1), (x1, y1, z1), (x1, y0, z1), (0, 0, 1)),
        ((x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0), (0, 0, -1)),
    )
    uv = ((0, 0), (1, 0), (1, 1), (0, 1))
    for *q, n in faces:
        for i, j, k in ((0, 1, 2), (0, 2, 3)):
            P.append([q[i], q[j], q[k]])
            N.append([n, n, n])
            UV.append([uv[i], uv[j], uv[k]])
            TX.append(tex)


def roadside(span: float, gantry_x: float, height: float = 6.5) -> CarModel:
    """The highway's furniture, never labelled: a concrete median barrier between the carriageways and,
    `gantry_x` m ahead, an overhead sign gantry (two posts, a beam and a green sign panel)."""
    P: list = []
    N: list = []
    UV: list = []
    TX: list = []
    h = span / 2
    _box(P, N, UV, TX, (-gantry_x + 2.0, -0.22, 0.0), (VIEW[1] + 40 - gantry_x, 0.22, 0.85), 2)
    for s in (-1, 1):
        _box(P, N, UV, TX, (-0.2, s * h - 0.2, 0.0), (0.2, s * h + 0.2, height + 0.6), 0)
    _box(P, N, UV, TX, (-0.25, -h, height), (0.25, h, height + 0.6), 0)
    _box(P, N, UV, TX, (-0.35, -0.45 * h, height - 1.6), (-0.3, 0.05 * h, height + 0.4), 1)
    sign = np.zeros((16, 32, 3), np.uint8)
    sign[...] = (20, 110, 60)
    sign[5:7, 4:28] = sign[10:12, 4:20] = (235, 235, 235)  # lines of lettering
    n = len(TX)
    return CarModel(
        model_id="roadside",
        folder="",
        make="",
        model="",
        body_type="roadside",
        pos=np.array(P, np.float32),
        nrm=np.array(N, np.float32),
        uv=np.array(UV, np.float32),
        tex=np.array(TX, np.int32),
        textures=[np.array([[[150, 152, 156]]], np.uint8), sign, np.array([[[178, 176, 168]]], np.uint8)],
        paint_tex=-1,
        shiny=np.full(n, 0.2, np.float32),
        length=0.3,  # the contact shadow of `traffic_scene` stays a thin band under the posts
        width=0.3,
        height=height + 0.6,
        n_body_tris=n,
    )


def _spec(rng, seed: int, lanes: int, jq: tuple[int, int]) -> TrafficSpec:
    crng = np.random.default_rng([seed, 41])  # the camera, light and weather are fixed for the clip
    tod = ("day", "dusk", "night")[int(crng.choice(3, p=[0.6, 0.2, 0.2]))]
    weather = ("", "rain", "fog")[int(crng.choice(3, p=[0.6, 0.2, 0.2]))]
    h = float(crng.uniform(7.0, 8.5))
    y = float(crng.uniform(-0.5, 0.5)) * LANE_W  # above the middle of the road
    sun_el = {"day": (25, 70), "dusk": (2, 12), "night": (55, 80)}[tod]
    return TrafficSpec(
        camera="pole",
        pos=(0.0, y, h),
        target=(float(crng.uniform(35, 45)), y, 0.0),
        fov=float(crng.uniform(45, 55)),
        roll=float(crng.normal(0, 0.5)),
        time=tod,
        weather=weather,
        sun_az=float(crng.uniform(0, 360)),
        sun_el=float(crng.uniform(*sun_el)),
        n_lanes=2 * lanes,
        cross_x=None,
        asphalt=float(crng.uniform(0.22, 0.3)),
        fog=float(crng.uniform(0.008, 0.02)) if weather == "fog" else 0.0,
        blur=float(rng.uniform(0.0, 0.5)),
        noise=float(rng.uniform(1.0, 3.0)) * (2.0 if tod == "night" else 1.0),
        exposure=float(crng.uniform(0.95, 1.05)) * (1.6 if tod == "night" else 1.0),
        jpeg_quality=int(rng.integers(jq[0], jq[1] + 1)),
        seed=int(rng.integers(2**31)),
        lights=tod != "day" or bool(weather),
    )


_CARS: list = []
_FLEET: list[Identity] = []


def _init(cars, fleet) -> None:
    global _CARS, _FLEET
    _CARS, _FLEET = cars, fleet


def _frame_job(job: tuple):
    seed, plan, lanes, ti, t, size, jq = job
    rng = np.random.default_rng([seed, 43, ti])
    spec = _spec(rng, seed, lanes, jq)
    shown = []
    for tr in plan:
        x = tr.x0 + tr.direction * tr.speed * t
        if VIEW[0] - 6 < x < VIEW[1] + 6:
            ident = _FLEET[tr.k]
            paint = paint_of(np.random.default_rng([seed, 47, tr.k]), ident.color)  # the same paint every frame
            shown.append(tr)
            spec.cars.append(Placement(tr.k, x, tr.y, 0.0 if tr.direction > 0 else 180.0, ident.color, paint))
    n_shown = len(spec.cars)
    spec.cars.append(Placement(len(_CARS), GANTRY_X, 0.0, 0.0, "none", (0.0, 0.0, 0.0)))
    fr = render_traffic_spec(_CARS + [roadside(2 * lanes * LANE_W + 3.0, GANTRY_X)], spec, size)
    when = START + timedelta(days=seed % 7, seconds=t)
    cam = camera_of(spec, *size)
    boxes = []
    for b in fr.boxes:
        if b["car"] >= n_shown:  # the barrier and gantry
            continue
        tr, p = shown[b["car"]], spec.cars[b["car"]]
        ident = _FLEET[tr.k]
        side, px = plate_seen(*plate_corners(_CARS[tr.k], p.heading, p.x, p.y), cam)
        move = "eastbound" if tr.direction > 0 else "westbound"
        lab = seen_labels(b["labels"], ident, CAMERA, "gantry", move, tr.speed, when, (side, px), road="highway")
        boxes.append(dict(x1=b["x1"], y1=b["y1"], x2=b["x2"], y2=b["y2"], visible=b["visible"], labels=lab))
    labels = dict(fr.labels, n_cars=n_shown, n_boxes=len(boxes), source="street", camera=CAMERA)
    labels.update(camera_kind="gantry", road="highway", time=when.isoformat(), session=0)
    return ti, encode_jpeg(fr.image, spec.jpeg_quality), labels, boxes, when.timestamp()


def render_highway(
    fleet: list[Identity],
    out_dir: Path,
    seed: int = 0,
    frames: int = 8,
    lanes: int = 3,
    vehicles: int = 16,
    interval_s: float = 0.1,
    size: tuple[int, int] = (320, 240),
    workers: int = 0,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> list[tuple[Path, dict, list[dict], float]]:
    """`frames` frames of the gantry camera, `interval_s` apart -> [(jpeg, frame labels, boxes, epoch s)],
    boxes in the `boxes` contract plus `visible` and `labels` (as `render_corridor`)."""
    t0 = time.time()
    if frames <= 0 or not fleet:
        return []
    if lanes < 1:
        raise ValueError(f"street highway lanes {lanes}: expected >= 1 per direction")
    times = np.arange(frames) * float(interval_s)
    plan = plan_highway(np.random.default_rng([seed, 40]), fleet, lanes, vehicles, times)
    used = {tr.k for tr in plan}
    cars = [vehicle_of(fleet[k]) if k in used else None for k in range(len(fleet))]
    jq = (int(jpeg_quality[0]), int(jpeg_quality[1]))
    jobs = [(seed, plan, lanes, ti, float(times[ti]), tuple(size), jq) for ti in range(frames)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for ti, data, labels, boxes, epoch in pool_map(_frame_job, jobs, workers, _init, (cars, fleet)):
        p = out_dir / f"highway_s{seed}_{CAMERA}_{ti:04d}.jpg"
        p.write_bytes(data)
        items.append((p, labels | {"frame_index": ti}, box_rows(p.stem, boxes), epoch))
    n_box = sum(len(b) for _, _, b, _ in items)
    print(
        f"render_highway: {len(items)} frames, {n_box} boxes of {len(used)} vehicles in {time.time() - t0:.1f}s "
        f"-> {out_dir}",
        file=sys.stderr,
    )
    return items
