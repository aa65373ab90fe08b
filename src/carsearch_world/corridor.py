"""A camera network along a street: pole cameras at the intersections of a corridor, vehicles of the
fleet driving through it (each with a lane, a direction and a constant speed) and parked along the
kerb, so one identity is seen by several cameras at plausible times.

`render_corridor` writes each camera's frames (stills; `video.write_videos` makes mp4s of them) with every
box labelled with the vehicle's identity, plate, direction, speed, camera and timestamp, plus
MOTChallenge-style track files (`write_mot`) and COCO files with every box's labels as attributes
(`write_coco`) per camera, and an mp4 per camera (`write_videos`). Frames are byte-identical for a seed whatever the worker
count (the street renderer's elementwise maths, `traffic.py`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from carsearch_world.buildings import street_buildings
from carsearch_world.fleet import plate_corners
from carsearch_world.plates import plate_seen
from carsearch_world.scene import encode_jpeg
from carsearch_world.street import Identity, box_rows, paint_of, pool_map, seen_labels, vehicle_of
from carsearch_world.traffic import render_traffic_spec
from carsearch_world.traffic_scene import LANE_W, Placement, TrafficSpec, camera_of

N_LANES = 6  # parking, two lanes each way, parking (right-hand traffic: y < 0 drives towards +x)
LANES = {1: (-1.5 * LANE_W, -0.5 * LANE_W), -1: (0.5 * LANE_W, 1.5 * LANE_W)}
PARKING = (-2.5 * LANE_W + 0.6, 2.5 * LANE_W - 0.6)
VIEW = (4.0, 70.0)  # a camera sees the street this far ahead (m)
GAP = 9.0  # m between vehicles in one lane
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
HOURS = {"day": 10.0, "dusk": 18.5, "night": 22.0}


@dataclass(frozen=True)
class Track:
    k: int  # index into the fleet
    lane_y: float
    direction: int  # +1 towards +x ("eastbound"), -1 ("westbound"), 0 parked
    speed: float  # m/s
    x0: float  # position at session time 0 (m along the street)

    def x(self, t: float) -> float:
        return self.x0 + self.direction * self.speed * t


@dataclass(frozen=True)
class Session:
    index: int
    time: str
    weather: str
    tracks: tuple[Track, ...]
    cams: tuple[float, ...]  # x of each camera
    frame_times: tuple[float, ...]  # seconds from the session start


def plan_session(
    rng,
    fleet: list[Identity],
    index: int,
    n_cams: int,
    spacing: float,
    n_times: int,
    dt: float,
    n_moving: int,
    n_parked: int,
) -> Session:
    """One session: light/weather, cameras every `spacing` m, vehicles whose middle of the corridor
    falls inside the session (so most are seen at >= 2 cameras), lanes kept `GAP` apart at every frame."""
    tod = ("day", "dusk", "night")[int(rng.choice(3, p=[0.55, 0.22, 0.23]))]
    weather = ("", "rain", "fog")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    cams = tuple(k * spacing for k in range(n_cams))
    times = np.arange(n_times) * dt
    span = cams[-1] + VIEW[1]
    tracks: list[Track] = []
    lane_pos: dict[float, list[np.ndarray]] = {}
    order = rng.permutation(len(fleet))
    moving = [int(k) for k in order if fleet[int(k)].body_type != "bus" or rng.random() < 0.5][: n_moving + n_parked]
    for j, k in enumerate(moving):
        if j >= n_moving:  # parked along the kerb, facing the traffic of its side
            d = 1 if rng.random() < 0.5 else -1
            y = PARKING[0] if d > 0 else PARKING[1]
            x = float(rng.uniform(0, span))
            tr = Track(k, y, 0, 0.0, x)
            pos = np.full(times.size, x)
        else:
            d = 1 if rng.random() < 0.5 else -1
            v = float(rng.uniform(8.0, 15.0))  # 29-54 km/h
            mid = float(rng.uniform(-0.2, 1.2)) * times[-1]  # when it is half-way along the corridor
            x0 = span / 2 - d * v * mid
            y = LANES[d][int(rng.integers(2))]
            tr = Track(k, y, d, v, x0)
            pos = x0 + d * v * times
        if any(np.min(np.abs(p - pos)) < GAP for p in lane_pos.get(tr.lane_y, [])):
            other = [yy for yy in LANES.get(tr.direction, ()) if yy != tr.lane_y]
            if not other or any(np.min(np.abs(p - pos)) < GAP for p in lane_pos.get(other[0], [])):
                continue
            tr = Track(tr.k, other[0], tr.direction, tr.speed, tr.x0)
        lane_pos.setdefault(tr.lane_y, []).append(pos)
        tracks.append(tr)
    return Session(index, tod, weather, tuple(tracks), cams, tuple(float(t) for t in times))


def _spec(rng, s: Session, cam: int, t: float, jq: tuple[int, int], seed: int) -> TrafficSpec:
    crng = np.random.default_rng([seed, s.index, cam])  # the camera's mount is fixed for the session
    h = float(crng.uniform(6.0, 9.0))
    pos = (0.0, -(N_LANES * LANE_W / 2 + float(crng.uniform(1.0, 3.0))), h)
    target = (float(crng.uniform(22, 32)), float(crng.uniform(-2, 2)), 0.0)
    sun_el = {"day": (25, 70), "dusk": (2, 12), "night": (55, 80)}[s.time]
    return TrafficSpec(
        camera="pole",
        pos=pos,
        target=target,
        fov=float(crng.uniform(48, 58)),
        roll=float(crng.normal(0, 0.8)),
        time=s.time,
        weather=s.weather,
        sun_az=float(crng.uniform(0, 360)),
        sun_el=float(crng.uniform(*sun_el)),
        n_lanes=N_LANES,
        cross_x=float(crng.uniform(14, 24)),  # the camera's intersection
        asphalt=float(crng.uniform(0.2, 0.3)),
        fog=float(crng.uniform(0.01, 0.03)) if s.weather == "fog" else 0.0,
        blur=float(rng.uniform(0.0, 0.6)),
        noise=float(rng.uniform(1.0, 3.0)) * (2.0 if s.time == "night" else 1.0),
        exposure=float(crng.uniform(0.95, 1.05)) * (1.6 if s.time == "night" else 1.0),
        jpeg_quality=int(rng.integers(jq[0], jq[1] + 1)),
        seed=int(rng.integers(2**31)),
        lights=s.time != "day" or bool(s.weather),
        urban=True,
    )


_CARS: list = []
_FLEET: list[Identity] = []


def _init(cars, fleet) -> None:
    global _CARS, _FLEET
    _CARS, _FLEET = cars, fleet


def _frame_job(job: tuple):
    seed, s, cam, ti, size, jq = job
    rng = np.random.default_rng([seed, s.index, cam, ti])
    t = s.frame_times[ti]
    spec = _spec(rng, s, cam, t, jq, seed)
    shown = []
    for tr in s.tracks:
        xl = tr.x(t) - s.cams[cam]
        if VIEW[0] - 6 < xl < VIEW[1] + 6:
            heading = 180.0 if tr.direction < 0 or (tr.direction == 0 and tr.lane_y > 0) else 0.0
            shown.append(tr)
            spec.cars.append(
                Placement(tr.k, xl, tr.lane_y, heading, _FLEET[tr.k].color, paint_of(rng, _FLEET[tr.k].color))
            )
    n_shown = len(spec.cars)
    models, places = street_buildings(
        np.random.default_rng([seed, s.index, cam, 99]), N_LANES, spec.cross_x, len(_CARS)
    )
    spec.cars.extend(places)
    fr = render_traffic_spec(_CARS + models, spec, size)
    when = START + timedelta(days=s.index, hours=HOURS[s.time], seconds=t)
    cam_out = camera_of(spec, *size)
    camera = f"cam-{cam + 1}"
    boxes = []
    for b in fr.boxes:
        if b["car"] >= n_shown:  # a building
            continue
        tr = shown[b["car"]]
        ident = _FLEET[tr.k]
        p = spec.cars[b["car"]]
        side, px = plate_seen(*plate_corners(_CARS[tr.k], p.heading, p.x, p.y), cam_out)
        if side is not None:  # the plate's centre must be this vehicle's pixel (not hidden behind another)
            centre = plate_corners(_CARS[tr.k], p.heading, p.x, p.y)[0][side].mean(0)
            u, v = cam_out.project(cam_out.to_cam(centre[None]))[0]
            ss = fr.ids.shape[0] // size[1]
            if fr.ids[min(int(v * ss), fr.ids.shape[0] - 1), min(int(u * ss), fr.ids.shape[1] - 1)] != b["car"]:
                side, px = None, 0.0
        move = {1: "eastbound", -1: "westbound", 0: "parked"}[tr.direction]
        lab = seen_labels(b["labels"], ident, camera, "pole", move, tr.speed, when, (side, px))
        boxes.append(dict(x1=b["x1"], y1=b["y1"], x2=b["x2"], y2=b["y2"], visible=b["visible"], labels=lab))
    labels = dict(
        fr.labels,
        n_cars=n_shown,
        n_boxes=len(boxes),
        source="street",
        camera=camera,
        camera_kind="pole",
        time=when.isoformat(),
        session=s.index,
    )
    return (s.index, cam, ti), encode_jpeg(fr.image, spec.jpeg_quality), labels, boxes, when.timestamp()


def render_corridor(
    fleet: list[Identity],
    out_dir: Path,
    seed: int = 0,
    sessions: int = 3,
    cameras: int = 4,
    spacing_m: float = 80.0,
    frames_per_camera: int = 10,
    interval_s: float = 1.5,
    moving: int = 24,
    parked: int = 6,
    size: tuple[int, int] = (320, 240),
    workers: int = 0,
    jpeg_quality: tuple[int, int] = (60, 95),
) -> list[tuple[Path, dict, list[dict], float]]:
    """Render every camera's frames of `sessions` sessions -> [(jpeg, frame labels, boxes, epoch s)];
    boxes in the `boxes` contract (frame, x1..y2, class, score, source) plus `visible` and `labels`."""
    t0 = time.time()
    if cameras < 2:
        raise ValueError(f"street cameras {cameras}: a corridor needs >= 2")
    rng = np.random.default_rng([seed, 7])
    plans = [
        plan_session(rng, fleet, i, cameras, spacing_m, frames_per_camera, interval_s, moving, parked)
        for i in range(sessions)
    ]
    used = sorted({tr.k for s in plans for tr in s.tracks})
    cars = [vehicle_of(fleet[k]) if k in set(used) else None for k in range(len(fleet))]
    jq = (int(jpeg_quality[0]), int(jpeg_quality[1]))
    jobs = [(seed, s, c, ti, tuple(size), jq) for s in plans for c in range(cameras) for ti in range(frames_per_camera)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for (si, c, ti), data, labels, boxes, epoch in pool_map(_frame_job, jobs, workers, _init, (cars, fleet)):
        p = out_dir / f"street_s{seed}_{si}_cam{c + 1}_{ti:04d}.jpg"
        p.write_bytes(data)
        items.append((p, labels | {"frame_index": ti}, box_rows(p.stem, boxes), epoch))
    n_box = sum(len(b) for _, _, b, _ in items)
    print(
        f"render_corridor: {len(items)} frames ({sessions} sessions x {cameras} cameras), {n_box} boxes of "
        f"{len(used)} vehicles in {time.time() - t0:.1f}s -> {out_dir}",
        file=sys.stderr,
    )
    return items


def write_mot(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path) -> list[Path]:
    """MOTChallenge-style ground truth, one file per session and camera:
    `frame,id,x,y,w,h,1,class,visibility` (frame 1-based, id = the identity's number)."""
    rows: dict[str, list[str]] = {}
    for _, lab, boxes, _ in items:
        key = f"session{lab['session']}_{lab['camera']}"
        for b in boxes:
            ident = int(b["labels"]["track_id"])
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            rows.setdefault(key, []).append(
                f"{lab['frame_index'] + 1},{ident},{b['x1']},{b['y1']},{w},{h},1,{b['class']},{b['visible']:.3f}"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, lines in sorted(rows.items()):
        p = out_dir / f"{key}.txt"
        p.write_text("\n".join(sorted(lines, key=lambda s: tuple(int(v) for v in s.split(",")[:2]))) + "\n")
        paths.append(p)
    return paths


COCO_CATEGORIES = ("car", "pickup", "van", "truck", "bus", "motorcycle")  # the boxes' classes (`BOX_CLASS`)


def write_coco(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path) -> list[Path]:
    """COCO with attributes, one file per session and camera (beside `write_mot`'s): `images` (the
    frame's file name, size, camera, time, frame index), `categories` (`COCO_CATEGORIES`) and
    `annotations` (`bbox` [x, y, w, h] in pixels, `track_id` = the identity's number as in the MOT
    file, `attributes`: every label of the box, identity, plate, direction, speed, colour, body type,
    plus its `visibility`)."""
    cats = {name: k for k, name in enumerate(COCO_CATEGORIES, 1)}
    docs: dict[str, dict] = {}
    for p, lab, boxes, _ in sorted(items, key=lambda it: (it[1]["session"], it[1]["camera"], it[1]["frame_index"])):
        key = f"session{lab['session']}_{lab['camera']}"
        doc = docs.setdefault(key, {"images": [], "annotations": [], "categories": []})
        image_id = lab["frame_index"] + 1
        with Image.open(p) as im:
            w, h = im.size
        doc["images"].append(
            {"id": image_id, "file_name": p.name, "width": w, "height": h, "frame_index": lab["frame_index"],
             "camera": lab["camera"], "time": lab["time"]}
        )  # fmt: skip
        for b in boxes:
            x, y, bw, bh = b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]
            doc["annotations"].append(
                {"id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": cats[b["class"]],
                 "bbox": [x, y, bw, bh], "area": round(bw * bh, 2), "iscrowd": 0,
                 "track_id": int(b["labels"]["track_id"]),
                 "attributes": dict(b["labels"], visibility=round(float(b["visible"]), 3))}
            )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, doc in sorted(docs.items()):
        doc["categories"] = [{"id": k, "name": name, "supercategory": "vehicle"} for name, k in cats.items()]
        path = out_dir / f"{key}.json"
        path.write_text(json.dumps(doc) + "\n")
        paths.append(path)
    return paths
