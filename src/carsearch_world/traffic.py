"""Multi-vehicle traffic frames: 2-8 TORCS cars on a road, seen from a pole-mounted traffic camera or
a dashcam (scenes: traffic_scene.py), each car labelled with its exact box.

Each car is rasterized on its own, the per-car depth buffers are composited (nearest wins, ties to
the lower slot) into an id buffer at the supersampled resolution, and a car's box is the extent of
the output pixels that any of its winning sub-pixels fall in (x2/y2 exclusive, like COCO x + w).
`visible` = winning / unoccluded sub-pixels x the share of the car's outline inside the frame.
Boxes under 12 px a side or under 15% visible are dropped and counted. Output is byte-identical for
a seed on any machine and for any worker count (elementwise IEEE + `xmath` only, as scene.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from carsearch.core import xmath
from carsearch_world.api import CAMERAS, load_cars
from carsearch_world.raster import Camera, Fragments, rasterize, sample_bilinear
from carsearch_world.scene import COLORS, encode_jpeg, recolour, view_from_azimuth
from carsearch_world.torcs import CarModel, find_torcs_cars
from carsearch_world.traffic_scene import (
    MIN_SIDE,
    Placement,
    TrafficSpec,
    background,
    camera_of,
    lighting,
    rot,
    sample_traffic,
)

MIN_VISIBLE = 0.15
BOX, EXTRA = ("x1", "y1", "x2", "y2"), ("labels", "visible")  # box contract order: frame, x1..y2, class, ...
_CARS: list[CarModel] = []  # per worker process


@dataclass
class TrafficFrame:
    image: Image.Image  # RGB, size (W, H)
    boxes: list[dict]  # kept cars: {x1, y1, x2, y2 (px, x2/y2 exclusive), visible, car: slot, labels}
    dropped: list[tuple[int, str]]  # (slot, reason) of cars too small or too hidden to label
    ids: np.ndarray  # (H*ss, W*ss) int16: slot of the car seen at each sub-pixel, -1 = background
    labels: dict  # frame labels (camera, scene, ...)
    spec: TrafficSpec


def _shade(
    car: CarModel, p: Placement, fr: Fragments, sel: np.ndarray, cam: Camera, spec: TrafficSpec, lit: dict
) -> np.ndarray:
    """Colours of the sub-pixels `sel` (flat indices) where `car` is seen; shaded in the car's frame."""
    t_, b = fr.tri.ravel()[sel], fr.bary.reshape(-1, 3)[sel]
    cl = np.array([*rot(cam.pos[0] - p.x, cam.pos[1] - p.y, -p.heading), cam.pos[2]], np.float32)
    L = np.array([*rot(lit["L"][0], lit["L"][1], -p.heading), lit["L"][2]])
    uv, nrm = xmath.bary3(car.uv[t_], b), xmath.bary3(car.nrm[t_], b)
    nrm /= np.maximum(xmath.norm3(nrm)[:, None], 1e-6)
    view = cl - xmath.bary3(car.pos[t_], b)
    view /= xmath.norm3(view)[:, None]
    ndv = xmath.dot3(nrm, view)
    nrm[ndv < 0] *= -1
    ndv = np.abs(ndv)
    texid = car.tex[t_]
    alb = np.zeros((t_.size, 3), np.float32)
    for k in np.unique(texid):
        s = texid == k
        smp = sample_bilinear(car.textures[k], uv[s])
        alb[s] = recolour(smp[:, :3], smp[:, 3], smp[:, 4] * (255 / 170), p.paint) if k == car.paint_tex else smp
    ndl = np.clip(xmath.dot3(nrm, L), 0, 1)[:, None]
    col = alb * (lit["amb"] * (0.55 + 0.45 * nrm[:, 2])[:, None] + lit["sun"] * ndl)
    shiny = car.shiny[t_][:, None]
    H = L + view
    H /= xmath.norm3(H)[:, None]
    col += shiny * xmath.ipow(np.clip(xmath.dot3(nrm, H), 0, 1), 60)[:, None] * lit["sun"] * 0.9
    fres = 0.04 + 0.5 * xmath.ipow(1 - np.clip(ndv, 0, 1), 5)[:, None]
    env = np.where(
        (2 * ndv * nrm[:, 2] - view[:, 2])[:, None] > 0,
        (lit["horizon"] + lit["zenith"]) * 0.5,
        lit["amb"] * 0.75 * spec.asphalt,
    )
    col = col * (1 - shiny * fres) + shiny * fres * env * 1.1
    if spec.fog > 0:
        W = cam.width
        rx, ry = ((sel % W) + 0.5 - W / 2) / cam.f, ((sel // W) + 0.5 - cam.height / 2) / cam.f
        f = (1 - xmath.exp(-spec.fog * fr.depth.ravel()[sel] * np.sqrt(1 + rx * rx + ry * ry)))[:, None]
        col = col * (1 - f) + lit["fog"] * f
    return col


def _lamps(img: np.ndarray, cars: list[CarModel], spec: TrafficSpec, cam: Camera, ids, depth) -> None:
    """Additive head (white) / rear (red) lamp glows facing the camera and not hidden."""
    Hh, Ww = ids.shape
    for slot, p in enumerate(spec.cars):
        for kind, x, y, z, size in cars[p.car].lights:
            wx, wy = rot(x, y, p.heading)
            pw = np.array([wx + p.x, wy + p.y, z])
            to_cam = cam.pos - pw
            fx = rot(to_cam[0], to_cam[1], -p.heading)[0] / xmath.vnorm(to_cam)
            facing = fx if kind == "head" else -fx
            pc = cam.to_cam(pw[None])[0]
            if facing < 0.15 or pc[2] < 1.0:
                continue
            u, v = cam.project(pc)
            iu, iv = int(np.floor(u)), int(np.floor(v))
            if not (0 <= iu < Ww and 0 <= iv < Hh) or (ids[iv, iu] != slot and depth[iv, iu] < pc[2] - 0.25):
                continue
            sig = max(1.5, cam.f * size * 0.55 / pc[2])
            r = int(4 * sig) + 1
            y0, y1, x0, x1 = max(0, iv - r), min(Hh, iv + r + 1), max(0, iu - r), min(Ww, iu + r + 1)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            ddx, ddy = xx + 0.5 - u, yy + 0.5 - v
            g = xmath.exp(-(ddx * ddx + ddy * ddy) / (2 * sig * sig))
            col = np.array([255, 245, 215]) if kind == "head" else np.array([255, 40, 25])
            inten = (1.0 if spec.time == "night" else 0.6) * min(1.0, 1.5 * facing) * (1.0 if kind == "head" else 0.8)
            img[y0:y1, x0:x1] += (g * inten)[..., None] * col


def _in_frame_share(pc: np.ndarray, cam: Camera, budget: int = 120_000) -> float:
    """Share of a car's projected area inside the frame (1.0 unless its outline crosses an edge):
    the car alone on an enlarged, coarser canvas around it, by pixels in / out of the frame."""
    v = pc.reshape(-1, 3)
    v = v[v[:, 2] > cam.near]
    u, w = cam.f * v[:, 0] / v[:, 2] + cam.width / 2, cam.f * v[:, 1] / v[:, 2] + cam.height / 2
    W, H = cam.width, cam.height
    if len(v) == 0 or (u.min() >= 0 and u.max() <= W and w.min() >= 0 and w.max() <= H):
        return 1.0
    x0, x1 = max(np.floor(u.min()), -W), min(np.ceil(u.max()), 2 * W)
    y0, y1 = max(np.floor(w.min()), -H), min(np.ceil(w.max()), 2 * H)
    s = min(1.0, float(np.sqrt(budget / max((x1 - x0) * (y1 - y0), 1.0))))
    cw, ch = int((x1 - x0) * s) + 2, int((y1 - y0) * s) + 2
    sh = pc.copy()  # shift the projection so the canvas starts at (x0, y0), scale by s
    sh[..., 0] = pc[..., 0] + pc[..., 2] * (((W / 2 - x0) * s - cw / 2) / (cam.f * s))
    sh[..., 1] = pc[..., 1] + pc[..., 2] * (((H / 2 - y0) * s - ch / 2) / (cam.f * s))
    m = rasterize(sh, cw, ch, cam.f * s).tri >= 0
    total = int(m.sum())
    xs, ys = (np.arange(cw) + 0.5) / s + x0, (np.arange(ch) + 0.5) / s + y0
    inside = m & ((ys >= 0) & (ys < H))[:, None] & ((xs >= 0) & (xs < W))[None, :]
    return int(inside.sum()) / total if total else 0.0


def _place(car: CarModel, p: Placement, cam: Camera) -> np.ndarray:
    """The car's triangles in camera space (T,3,3), turned to its heading and moved to its spot."""
    P = car.pos.astype(np.float64)
    wx, wy = rot(P[..., 0], P[..., 1], p.heading)
    return cam.to_cam(np.stack([wx + p.x, wy + p.y, P[..., 2]], -1).reshape(-1, 3)).reshape(-1, 3, 3)


def render_traffic_spec(
    cars: list[CarModel], spec: TrafficSpec, size: tuple[int, int] = (320, 240), ss: int = 2
) -> TrafficFrame:
    """Render a sampled scene (`sample_traffic`) -> image, exact boxes and the id buffer."""
    W, H = int(size[0]), int(size[1])
    SW, SH = W * ss, H * ss
    rng = np.random.default_rng(spec.seed)
    lit = lighting(spec)
    cam = camera_of(spec, SW, SH)
    bg = background(camera_of(spec, W, H), spec, lit, cars)
    bg_img = Image.fromarray((np.clip(bg * spec.exposure, 0, 1) * 255 + 0.5).astype(np.uint8))
    img8 = np.array(bg_img.resize((SW, SH), Image.BILINEAR) if ss > 1 else bg_img)
    pcs = [_place(cars[p.car], p, cam) for p in spec.cars]
    frags = [rasterize(pc, SW, SH, cam.f) for pc in pcs]
    zmin, ids = np.full((SH, SW), np.inf, np.float32), np.full((SH, SW), -1, np.int16)
    for slot, fr in enumerate(frags):  # nearest wins; on a tie the lower slot keeps the pixel
        closer = fr.depth < zmin
        zmin[closer], ids[closer] = fr.depth[closer], slot
    flat, idf = img8.reshape(-1, 3), ids.ravel()
    for slot, (p, fr) in enumerate(zip(spec.cars, frags)):
        sel = np.nonzero(idf == slot)[0]
        if sel.size:
            col = _shade(cars[p.car], p, fr, sel, cam, spec, lit)
            flat[sel] = (np.clip(col * spec.exposure, 0, 1) * 255 + 0.5).astype(np.uint8)
    if spec.lights:
        f32 = img8.astype(np.float32)
        _lamps(f32, cars, spec, cam, ids, zmin)
        img8 = np.clip(f32, 0, 255).astype(np.uint8)
    out = Image.fromarray(img8)
    if ss > 1:
        out = out.reduce(ss)
    if spec.blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(spec.blur))
    arr = np.asarray(out, np.float32) + rng.normal(0, spec.noise, (H, W, 3)).astype(np.float32)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))

    boxes, dropped = [], []
    weather = spec.weather or "clear"
    for slot, (p, fr, pc) in enumerate(zip(spec.cars, frags, pcs)):
        car = cars[p.car]
        alone, seen = int(np.count_nonzero(fr.tri >= 0)), ids == slot
        n_seen = int(np.count_nonzero(seen))
        if not n_seen:
            dropped.append((slot, "hidden" if alone else "out of frame"))
            continue
        # the output pixels its sub-pixels fall in: sub-pixel extent // ss (exclusive end rounded up)
        ys, xs = np.nonzero(seen.any(1))[0], np.nonzero(seen.any(0))[0]
        x1, y1, x2, y2 = int(xs[0]) // ss, int(ys[0]) // ss, int(xs[-1]) // ss + 1, int(ys[-1]) // ss + 1
        vis = n_seen / alone * _in_frame_share(pc, cam)
        if min(x2 - x1, y2 - y1) < MIN_SIDE or vis < MIN_VISIBLE:
            dropped.append((slot, f"box {x2 - x1}x{y2 - y1} px, {vis:.0%} visible"))
            continue
        cx, cy = rot(cam.pos[0] - p.x, cam.pos[1] - p.y, -p.heading)
        az = xmath.degrees(xmath.atan2(cy, cx))
        labels = car.labels()
        labels.update(
            color=p.color,
            view=view_from_azimuth(az),
            scene=spec.scene,
            camera=spec.camera,
            source="torcs",
            azimuth_deg=round(az, 1),
            distance_m=round(float(np.sqrt(cx * cx + cy * cy)), 1),
            time_of_day=spec.time,
            weather=weather,
        )
        boxes.append(dict(x1=x1, y1=y1, x2=x2, y2=y2, visible=round(vis, 4), car=slot, labels=labels))
    frame = dict(camera=spec.camera, scene=spec.scene, time_of_day=spec.time, weather=weather, source="torcs-traffic")
    frame.update(width=W, height=H, n_cars=len(spec.cars), n_boxes=len(boxes), n_dropped=len(dropped))
    return TrafficFrame(out, boxes, dropped, ids, frame, spec)


def render_traffic_frame(
    cars: list[CarModel],
    rng: np.random.Generator | int,
    size: tuple[int, int] = (320, 240),
    camera: str = "pole",
    cars_per_frame: tuple[int, int] = (2, 8),
    colors: list[str] | None = None,
    jpeg_quality: tuple[int, int] = (60, 95),
    models: list[int] | None = None,
    car_colors: list[str] | None = None,
    ss: int = 2,
) -> TrafficFrame:
    """One traffic frame of cars drawn from `cars` (or `models`, indices into it) in `camera` view
    ("pole" | "dashcam"); `rng` a Generator or a seed. See `TrafficFrame` for what comes back."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    spec = sample_traffic(rng, cars, camera, size, cars_per_frame, colors, jpeg_quality, models, car_colors)
    return render_traffic_spec(cars, spec, size, ss)


def _init_worker(cars: list[CarModel]) -> None:
    global _CARS
    _CARS = cars


def _job(job: tuple) -> tuple[int, bytes, dict, list[dict]]:
    i, seed, camera, models, cols, size, jq = job
    fr = render_traffic_frame(_CARS, np.random.default_rng([seed, i]), size, camera, (2, 8), None, jq, models, cols)
    return i, encode_jpeg(fr.image, fr.spec.jpeg_quality), fr.labels, fr.boxes


def _counts(weights: dict[str, float], n: int) -> list[int]:
    """Largest-remainder split of n over the weights."""
    w = np.array([max(float(v), 0.0) for v in weights.values()])
    raw = w / w.sum() * n
    c = np.floor(raw).astype(int)
    c[np.argsort(-(raw - c), kind="stable")[: n - int(c.sum())]] += 1
    return c.tolist()


def render_traffic(
    torcs_dir: Path,
    out_dir: Path,
    n_frames: int,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
    workers: int = 0,
    colors: list[str] | None = None,
    jpeg_quality: tuple[int, int] = (60, 95),
    cars_per_frame: tuple[int, int] = (2, 8),
    cameras: dict[str, float] | None = None,
    progress: bool = True,
) -> tuple[list[tuple[Path, dict, list[dict]]], list[tuple[str, str]]]:
    """Render `n_frames` traffic JPEGs (W x H) of the TORCS cars under `torcs_dir` into `out_dir`.

    Camera kinds are split by `cameras` weights (default half pole, half dashcam); car models and
    colours are spread evenly over all car slots. Byte-identical for a seed whatever `workers` is
    (0 = all cores). Returns ([(jpeg_path, frame labels, boxes)], [(car_folder, reason)] skipped),
    boxes in the `boxes` contract plus `visible` (share of the car seen)."""
    t0 = time.time()
    colors = list(colors) if colors else list(COLORS)
    if [c for c in colors if c not in COLORS]:
        raise ValueError(f"unknown colours {[c for c in colors if c not in COLORS]}; choose from {COLORS}")
    lo, hi = int(cars_per_frame[0]), int(cars_per_frame[1])
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"bad cars_per_frame {cars_per_frame}: expected 1 <= lo <= hi <= 8")
    cameras = dict(cameras or {"pole": 0.5, "dashcam": 0.5})
    if set(cameras) - set(CAMERAS) or sum(cameras.values()) <= 0:
        raise ValueError(f"bad cameras {cameras}: weights of {CAMERAS}")
    jq = (int(jpeg_quality[0]), int(jpeg_quality[1]))
    cars, skips = load_cars(find_torcs_cars(Path(torcs_dir)))
    if not cars or n_frames <= 0:
        return [], skips
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cams = rng.permutation(np.repeat(list(cameras), _counts(cameras, n_frames)))
    n_cars = rng.integers(lo, hi + 1, n_frames)
    total = int(n_cars.sum())
    mods = rng.permutation(np.resize(np.arange(len(cars)), total))
    cols = rng.permutation(np.resize(np.arange(len(colors)), total))
    ends = np.cumsum(n_cars)
    jobs = [
        (i, seed, str(cams[i]), [int(k) for k in mods[e - n : e]], [colors[c] for c in cols[e - n : e]], size, jq)
        for i, (e, n) in enumerate(zip(ends, n_cars))
    ]
    nw = max(1, min(workers if workers > 0 else (os.cpu_count() or 1), n_frames))
    items: list[tuple[Path, dict, list[dict]]] = []
    bar = tqdm(total=n_frames, desc="render_traffic", unit="frame", file=sys.stderr) if progress else None

    def consume(res) -> None:
        i, data, labels, boxes = res
        p = out_dir / f"traffic_s{seed}_{i:06d}.jpg"
        p.write_bytes(data)
        head = {"frame": p.stem}
        tail = {"class": "car", "score": None, "source": "render"}
        items.append(
            (p, labels, [dict(head) | {k: b[k] for k in BOX} | tail | {k: b[k] for k in EXTRA} for b in boxes])
        )
        if bar is not None:
            bar.update(1)

    try:
        if nw == 1:
            _init_worker(cars)
            for job in jobs:
                consume(_job(job))
        else:  # fork, like render_torcs: workers inherit the loaded cars; numpy/PIL only
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(nw, initializer=_init_worker, initargs=(cars,)) as pool:
                for res in pool.imap(_job, jobs, chunksize=max(1, min(4, n_frames // (nw * 4) or 1))):
                    consume(res)
    finally:
        if bar is not None:
            bar.close()
    dt = time.time() - t0
    n_box = sum(len(b) for _, _, b in items)
    print(
        f"render_traffic: {len(items)} frames ({size[0]}x{size[1]}), {n_box} boxes, {len(cars)} cars"
        f"{f', {len(skips)} cars skipped' if skips else ''} in {dt:.1f}s ({nw} workers) -> {out_dir}",
        file=sys.stderr,
    )
    return items, skips
