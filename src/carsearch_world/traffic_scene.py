"""Traffic scenes for `traffic.py`: a road with lanes (and sometimes a crossing street), a pole or
dashcam camera, light and weather, and 2-8 cars placed in lanes where the camera sees them without
overlapping; plus the background (road, roadside, car shadows, sky) of such a scene.

Pixel maths is elementwise IEEE + `xmath` only (no BLAS, no numpy/libm transcendentals), as in
scene.py, so a scene renders to the same bytes on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from carsearch.core import xmath
from carsearch_world.api import CAMERAS
from carsearch_world.raster import Camera
from carsearch_world.scene import COLORS, PALETTE, value_noise
from carsearch_world.torcs import CarModel

LANE_W = 3.5
MIN_SIDE = 12  # px: cars that look smaller than this are not placed (traffic.py drops smaller boxes)
LIGHT = {  # time -> sun, ambient, zenith, horizon (0..1 RGB)
    "day": ((0.85, 0.82, 0.77), (0.52, 0.56, 0.64), (0.30, 0.50, 0.85), (0.78, 0.85, 0.93)),
    "dusk": ((0.75, 0.41, 0.21), (0.33, 0.28, 0.36), (0.16, 0.20, 0.42), (0.95, 0.55, 0.32)),
    "night": ((0.75, 0.60, 0.39), (0.12, 0.13, 0.18), (0.01, 0.015, 0.04), (0.08, 0.07, 0.09)),
}


@dataclass
class Placement:
    car: int  # index into the car list
    x: float  # ground position (m); the road runs along x, lanes across y
    y: float
    heading: float  # degrees, 0 = driving towards +x
    color: str
    paint: tuple[float, float, float]


@dataclass
class TrafficSpec:
    camera: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fov: float
    roll: float
    time: str
    weather: str
    sun_az: float
    sun_el: float
    n_lanes: int
    cross_x: float | None  # x of a crossing street, None: none
    asphalt: float
    fog: float
    blur: float
    noise: float
    exposure: float
    jpeg_quality: int
    seed: int
    lights: bool
    cars: list[Placement] = field(default_factory=list)
    urban: bool = False  # sidewalks and zebra crossings instead of grass verges (the street world)

    @property
    def scene(self) -> str:
        return f"{self.time} {self.weather}".strip()


def rot(x, y, deg: float):
    """(x, y) turned by `deg` degrees about the vertical axis."""
    c, s = xmath.cos(xmath.radians(deg)), xmath.sin(xmath.radians(deg))
    return c * x - s * y, s * x + c * y


def camera_of(spec: TrafficSpec, width: int, height: int) -> Camera:
    return Camera.look_at(spec.pos, spec.target, spec.fov, width, height, roll_deg=spec.roll)


def _pick(rng: np.random.Generator, names, p) -> str:
    return names[int(rng.choice(len(names), p=np.asarray(p, float) / sum(p)))]


def sample_traffic(
    rng: np.random.Generator,
    cars: list[CarModel],
    camera: str = "pole",
    size: tuple[int, int] = (320, 240),
    cars_per_frame: tuple[int, int] = (2, 8),
    colors: list[str] | None = None,
    jpeg_quality: tuple[int, int] = (60, 95),
    models: list[int] | None = None,
    car_colors: list[str] | None = None,
) -> TrafficSpec:
    """A random traffic scene: road, camera, light and 2-8 cars in lanes (or crossing), placed where
    the camera sees them and not overlapping. `models`/`car_colors` fix the cars' models and colours."""
    if camera not in CAMERAS:
        raise ValueError(f"camera {camera!r}: choose from {CAMERAS}")
    colors = list(colors or COLORS)
    n = len(models) if models is not None else int(rng.integers(cars_per_frame[0], cars_per_frame[1] + 1))
    tod = _pick(rng, ("day", "dusk", "night"), (0.55, 0.22, 0.23))
    weather = _pick(rng, ("", "rain", "fog"), (0.6, 0.2, 0.2))
    n_lanes = int(rng.integers(2, 5))
    lane_y = [(j - (n_lanes - 1) / 2) * LANE_W for j in range(n_lanes)]
    oneway = rng.random() < 0.25
    lane_dir = [1 if (oneway or yj <= 0) else -1 for yj in lane_y]  # right-hand traffic (y points left)
    half = n_lanes * LANE_W / 2
    cross_x = float(rng.uniform(16, 40)) if rng.random() < 0.35 else None
    if camera == "pole":
        side = 1.0 if rng.random() < 0.5 else -1.0
        h = float(rng.uniform(6.0, 12.0))
        pos = (0.0, side * (half + float(rng.uniform(1.0, 4.0))), h)
        if rng.random() < 0.55:  # down the road
            target = (float(rng.uniform(20, 40)), float(rng.uniform(-half, half)), 0.0)
        else:  # across it, for side and three-quarter views
            target = (float(rng.uniform(10, 25)), -side * float(rng.uniform(0.0, half + 2)), 0.0)
        fov, roll = float(rng.uniform(40, 60)), float(rng.normal(0, 1.0))
    else:
        own = [yj for yj, d in zip(lane_y, lane_dir) if d > 0]
        yl = own[int(rng.integers(len(own)))] + float(rng.normal(0, 0.2))
        h = float(rng.uniform(1.2, 1.5))
        pos = (0.0, yl, h)
        target = (50.0, yl + float(rng.uniform(-2, 2)), h - float(rng.uniform(0.0, 1.5)))
        fov, roll = float(rng.uniform(50, 70)), float(rng.normal(0, 1.5))
    sun_el = {"day": (25, 70), "dusk": (2, 12), "night": (55, 80)}[tod]
    spec = TrafficSpec(
        camera=camera,
        pos=pos,
        target=target,
        fov=fov,
        roll=roll,
        time=tod,
        weather=weather,
        sun_az=float(rng.uniform(0, 360)),
        sun_el=float(rng.uniform(*sun_el)),
        n_lanes=n_lanes,
        cross_x=cross_x,
        asphalt=float(rng.uniform(0.2, 0.34)),
        fog=float(rng.uniform(0.01, 0.035)) if weather == "fog" else 0.0,
        blur=float(rng.uniform(0.0, 0.7)),
        noise=float(rng.uniform(1.0, 4.0)) * (2.0 if tod == "night" else 1.0),
        exposure=float(rng.uniform(0.9, 1.1)) * (1.6 if tod == "night" else 1.0),
        jpeg_quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)),
        seed=int(rng.integers(2**31)),
        lights=bool(tod == "night" or (tod == "dusk" and rng.random() < 0.6) or (weather and rng.random() < 0.3)),
    )
    cam = camera_of(spec, *size)
    # candidate spots every 0.5 m along each lane (d = +-1) and across the crossing street (d = +-2)
    xs, ys = np.arange(1.0, 90.0, 0.5), np.arange(-40.0, 40.0, 0.5)
    X, Y, D = np.tile(xs, n_lanes), np.repeat(lane_y, xs.size), np.repeat(lane_dir, xs.size).astype(float)
    if cross_x is not None:
        X = np.concatenate([X, np.full(ys.size, cross_x - LANE_W / 2), np.full(ys.size, cross_x + LANE_W / 2)])
        Y, D = np.concatenate([Y, ys, ys]), np.concatenate([D, np.full(ys.size, 2.0), np.full(ys.size, -2.0)])
    pc = cam.to_cam(np.stack([X, Y, np.full(X.size, 0.6)], -1))
    u, v = cam.f * pc[:, 0] / pc[:, 2] + size[0] / 2, cam.f * pc[:, 1] / pc[:, 2] + size[1] / 2
    ok = (pc[:, 2] > 4.0) & (u > 0.02 * size[0]) & (u < 0.98 * size[0]) & (v > 0.05 * size[1]) & (v < size[1])
    ok &= cam.f * 1.6 / np.maximum(pc[:, 2], 1e-3) >= MIN_SIDE + 2
    sins: list[float] = []
    lane_c, cross_c = np.nonzero(ok & (np.abs(D) == 1))[0], np.nonzero(ok & (np.abs(D) == 2))[0]
    for _ in range(40 * n if lane_c.size + cross_c.size else 0):
        if len(spec.cars) == n:
            break
        k = models[len(spec.cars)] if models is not None else int(rng.integers(len(cars)))
        car = cars[k]
        pool = cross_c if cross_c.size and (not lane_c.size or rng.random() < 0.25) else lane_c
        c = int(pool[int(rng.integers(pool.size))])
        x, y = float(X[c]) + float(rng.uniform(-0.25, 0.25)), float(Y[c]) + float(rng.uniform(-0.25, 0.25))
        if abs(D[c]) == 2:  # crossing traffic
            heading = 90.0 * float(np.sign(D[c])) + float(rng.normal(0, 4))
        else:
            heading = (0.0 if D[c] > 0 else 180.0) + float(rng.normal(0, 3))
            if rng.random() < 0.15:  # changing lanes / turning
                heading += float(rng.uniform(-25, 25))
        hx, hy = car.length / 2, car.width / 2
        cx, cy = rot(np.array([hx, hx, -hx, -hx] * 2), np.array([hy, -hy, hy, -hy] * 2), heading)
        pc = cam.to_cam(np.stack([cx + x, cy + y, np.repeat([0.0, car.height], 4)], -1))
        if pc[:, 2].min() < 3.0:
            continue
        u, v = cam.f * pc[:, 0] / pc[:, 2] + size[0] / 2, cam.f * pc[:, 1] / pc[:, 2] + size[1] / 2
        if not (0 < (u.min() + u.max()) / 2 < size[0] and 0 < (v.min() + v.max()) / 2 < size[1]):
            continue
        if min(u.max() - u.min(), v.max() - v.min()) < MIN_SIDE + 2:  # too far away to label
            continue
        sb = abs(xmath.sin(xmath.radians(heading)))
        if any(_overlap(cars[p.car], car, p.x - x, p.y - y, sa, sb) for p, sa in zip(spec.cars, sins)):
            continue
        sins.append(sb)
        col = car_colors[len(spec.cars)] if car_colors is not None else colors[int(rng.integers(len(colors)))]
        jit = np.clip(rng.normal(0, 0.03, 3), -0.05, 0.05)
        paint = tuple(float(np.clip(c * (1 + j), 0, 1)) for c, j in zip(PALETTE[col], jit))
        spec.cars.append(Placement(k, x, y, heading, col, paint))
    return spec


def _overlap(a: CarModel, b: CarModel, dx: float, dy: float, sa: float, sb: float) -> bool:
    """Conservative footprint test of cars `dx, dy` apart with |sin heading| `sa, sb`: aligned cars
    (both along or both across the road) by their boxes, anything else by circles around them."""
    dx, dy = abs(dx), abs(dy)
    if sa < 0.45 and sb < 0.45:
        return dx < (a.length + b.length) / 2 + 1.0 and dy < (a.width + b.width) / 2 + 0.4
    if sa > 0.9 and sb > 0.9:
        return dy < (a.length + b.length) / 2 + 1.0 and dx < (a.width + b.width) / 2 + 0.4
    r = (a.length + b.length) / 2 + 0.5
    return dx * dx + dy * dy < r * r


def _noise(x, y, scale: float):
    n = value_noise()
    s = n.shape[0]
    return n[np.floor(y / scale * s).astype(np.int64) % s, np.floor(x / scale * s).astype(np.int64) % s]


def lighting(spec: TrafficSpec) -> dict:
    sun, amb, zen, hor = (np.array(v) for v in LIGHT[spec.time])
    if spec.weather:
        grey = hor.mean()
        sun, amb = sun * (0.25 if spec.time != "night" else 0.8), amb * (1.1 if spec.time != "night" else 1.0)
        zen, hor = (
            zen * 0.3 + 0.7 * grey * np.array([0.85, 0.87, 0.9]),
            hor * 0.3 + 0.7 * grey * np.array([0.95, 0.96, 0.98]),
        )
    az, el = xmath.radians(spec.sun_az), xmath.radians(spec.sun_el)
    L = np.array([xmath.cos(el) * xmath.cos(az), xmath.cos(el) * xmath.sin(az), xmath.sin(el)])
    return dict(sun=sun, amb=amb, zenith=zen, horizon=hor, fog=hor * (0.9 if spec.time != "night" else 1.2), L=L)


def _ground(gx, gy, spec: TrafficSpec, lit: dict, cars: list[CarModel]):
    half = spec.n_lanes * LANE_W / 2
    col = np.repeat(
        (spec.asphalt * (1 + 0.1 * _noise(gx, gy, 6.0) + 0.12 * _noise(gx + 17.3, gy - 5.1, 60.0)))[..., None], 3, -1
    )
    cross = np.zeros_like(gx, dtype=bool) if spec.cross_x is None else np.abs(gx - spec.cross_x) < LANE_W
    mark = np.zeros_like(gx, dtype=bool)
    for k in range(1, spec.n_lanes):
        mark |= (np.abs(gy + half - k * LANE_W) < 0.07) & (((gx + 3.3 * k) % 12.0) < 3.5)
    mark |= np.abs(np.abs(gy) - (half - 0.3)) < 0.08
    wear = 0.75 + 0.25 * np.clip(_noise(gx * 3, gy * 3, 2.0) + 0.5, 0, 1)
    col = np.where((mark & ~cross)[..., None], 0.82 * wear[..., None], col)
    off = (np.abs(gy) > half) & ~cross
    g = 0.5 + 0.5 * _noise(gx * 1.7, gy * 1.7, 3.0)
    side = np.stack([0.16 + 0.08 * g, 0.30 + 0.12 * g, 0.09 + 0.05 * g], -1)
    if spec.urban:  # concrete sidewalk with slab joints, zebra crossings beside the crossing street
        slab = ((gx % 2.0) < 0.05) | ((np.abs(gy) % 2.0) < 0.05)
        side = np.repeat((np.where(slab, 0.4, 0.52) + 0.05 * g)[..., None], 3, -1)
        if spec.cross_x is not None:
            near = np.abs(np.abs(gx - spec.cross_x) - LANE_W - 2.0) < 1.5
            col = np.where((near & (np.abs(gy) < half) & ((gy % 1.2) < 0.6))[..., None], 0.8 * wear[..., None], col)
    side = np.where((np.abs(gy) - half < 0.25)[..., None], 0.62, side)  # kerb
    col = np.where(off[..., None], side, col)
    clear = spec.time != "night" and not spec.weather
    sh = min(2.5, 0.8 / xmath.tan(xmath.radians(max(spec.sun_el, 8)))) if clear else 0.0
    ox, oy = -xmath.cos(xmath.radians(spec.sun_az)) * sh, -xmath.sin(xmath.radians(spec.sun_az)) * sh
    shade = np.ones_like(gx)
    for p in spec.cars:  # soft contact shadow + cast shadow, in the car's own frame
        c = cars[p.car]
        lx, ly = rot(gx - p.x, gy - p.y, -p.heading)
        sx, sy = rot(ox, oy, -p.heading)
        occ = _softbox(lx, ly, c.length / 2 + 0.1, c.width / 2 + 0.05, 0.5)
        cast = _softbox(lx - sx / 2, ly - sy / 2, c.length / 2 + abs(sx) / 2, c.width / 2 + abs(sy) / 2, 0.25)
        shade = shade * (1 - np.clip(0.55 * occ + (0.52 * cast if sh > 0 else 0.0), 0, 0.85))
    light = lit["amb"] * 1.1 + lit["sun"] * (
        max(xmath.sin(xmath.radians(spec.sun_el)), 0.1) if spec.time != "night" else 0.0
    )
    if spec.time == "night":  # street lamps along the road
        dxl = (gx % 25.0) - 12.5
        dyl = np.abs(gy) - half
        light = light + (1.0 / (1 + (dxl * dxl + dyl * dyl) / 40.0))[..., None] * lit["sun"] * 1.3
    return col * light * shade[..., None] * (0.6 if spec.weather == "rain" else 1.0)


def _softbox(x, y, ex, ey, soft):
    return np.clip((ex - np.abs(x)) / soft + 0.5, 0, 1) * np.clip((ey - np.abs(y)) / soft + 0.5, 0, 1)


def _sky(d, spec: TrafficSpec, lit: dict):
    dn = d / xmath.norm3(d)[..., None]
    el = xmath.asin(np.clip(dn[..., 2], -1, 1))
    t = xmath.pow(np.clip(el / xmath.radians(35.0), 0, 1), 0.6)[..., None]
    sky = lit["horizon"] * (1 - t) + lit["zenith"] * t
    az = xmath.atan2(dn[..., 1], dn[..., 0])
    ridge = 0.02 + 0.05 * (
        0.5 + 0.5 * value_noise()[spec.seed % 256, ((az + xmath.PI) / (2 * xmath.PI) * 256).astype(np.int64) % 256]
    )
    tree = np.array([0.12, 0.2, 0.1]) * (lit["horizon"].mean() / 0.85)
    return np.where(
        ((el < ridge) & (el > -0.02))[..., None], tree * 0.6 + (0.4 * lit["horizon"] if spec.weather else 0), sky
    )


def background(cam: Camera, spec: TrafficSpec, lit: dict, cars: list[CarModel]) -> np.ndarray:
    d = cam.rays()
    img = np.zeros(d.shape, np.float64)
    gm = d[..., 2] < -1e-4
    dg = d[gm]
    t = -cam.pos[2] / dg[:, 2]
    dist = t * xmath.norm3(dg)
    gcol = _ground(cam.pos[0] + dg[:, 0] * t, cam.pos[1] + dg[:, 1] * t, spec, lit, cars)
    if spec.weather == "rain":  # wet road: sky reflection at grazing angles
        fres = (0.15 + 0.6 * xmath.ipow(1 - np.clip(-dg[:, 2] / xmath.norm3(dg), 0, 1), 4))[:, None]
        gcol = gcol * (1 - fres) + _sky(dg * np.array([1, 1, -1]), spec, lit) * fres * 0.8
    haze = (1 - xmath.exp(-dist / 400.0))[:, None]
    gcol = gcol * (1 - haze) + lit["horizon"] * haze
    if spec.fog > 0:
        f = (1 - xmath.exp(-spec.fog * dist))[:, None]
        gcol = gcol * (1 - f) + lit["fog"] * f
    img[gm] = gcol
    sky = _sky(d[~gm], spec, lit)
    img[~gm] = sky * 0.15 + lit["fog"] * 0.85 if spec.fog > 0 else sky
    return img
