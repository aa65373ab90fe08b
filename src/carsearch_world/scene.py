"""Traffic-camera scenes: camera placement, road/sky background, lighting, weather and sensor
post-processing around a rasterized TORCS car.

Every value that reaches a pixel is computed with elementwise IEEE arithmetic and `xmath` (no
BLAS, no einsum, no numpy/libm transcendentals), so a scene renders to the same bytes whatever
BLAS kernel, numpy SIMD path or worker count; see docs/REPRODUCIBILITY.md.

Over 350 lines on purpose: one scene (camera, lighting, background, car, JPEG) is composed here;
render/ is kept as it was written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from carsearch.core import xmath
from carsearch_world.raster import Camera, rasterize, sample_bilinear
from carsearch_world.torcs import CarModel

VIEWS = ("front", "rear", "side", "three-quarter")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "silver", "grey", "orange", "purple", "brown")
PALETTE = {  # sRGB 0..1 paint base colours (jittered per image)
    "red": (0.70, 0.06, 0.07),
    "blue": (0.08, 0.20, 0.60),
    "green": (0.10, 0.42, 0.18),
    "yellow": (0.92, 0.76, 0.10),
    "white": (0.93, 0.93, 0.92),
    "black": (0.045, 0.045, 0.05),
    "silver": (0.70, 0.71, 0.73),
    "grey": (0.38, 0.39, 0.41),
    "orange": (0.90, 0.38, 0.06),
    "purple": (0.36, 0.13, 0.48),
    "brown": (0.38, 0.22, 0.11),
}
# azimuth ranges (degrees, 0 = camera in front of the car, 90 = camera on its left side)
VIEW_AZ = {
    "front": [(-18.0, 18.0)],
    "three-quarter": [(28.0, 62.0), (-62.0, -28.0), (118.0, 152.0), (-152.0, -118.0)],
    "side": [(72.0, 108.0), (-108.0, -72.0)],
    "rear": [(162.0, 198.0)],
}
TIMES = (("day", 0.55), ("dusk", 0.22), ("night", 0.23))
WEATHERS = (("", 0.6), ("rain", 0.2), ("fog", 0.2))


def view_from_azimuth(az_deg: float) -> str:
    a = abs((az_deg + 180.0) % 360.0 - 180.0)
    if a < 22.5:
        return "front"
    if a > 157.5:
        return "rear"
    if 67.5 <= a <= 112.5:
        return "side"
    return "three-quarter"


@dataclass
class SceneSpec:
    color: str
    view: str
    camera: str  # "pole" | "dashcam"
    time: str
    weather: str
    azimuth: float
    cam_height: float
    pitch: float
    fov: float
    fill: float
    roll: float
    aim: tuple[float, float]
    paint: tuple[float, float, float]
    sun_az: float
    sun_el: float
    n_lanes: int
    lane_idx: int
    roadside: str  # "grass" | "sidewalk"
    yellow_centre: bool
    asphalt: float
    fog_density: float
    blur: float
    noise: float
    exposure: float
    jpeg_quality: int
    seed: int
    lights: bool = False  # car lamps on (glows + headlight beam on the road)
    framing: float = 0.0  # > 0: zoom so the car's image bounding box spans this fraction of the frame
    extra: dict = field(default_factory=dict)

    @property
    def scene(self) -> str:
        return f"{self.time} {self.weather}".strip()


def _pick(rng: np.random.Generator, table) -> str:
    names, p = zip(*table)
    return names[int(rng.choice(len(names), p=np.array(p) / sum(p)))]


def sample_scene(
    rng: np.random.Generator,
    color: str,
    view: str,
    camera: str,
    jpeg_quality: tuple[int, int] = (60, 95),
    framing: tuple[float, float] | None = None,
) -> SceneSpec:
    """`framing` (lo, hi): the car's bounding box spans a fraction in [lo, hi] of the frame (like a
    detector crop); None: the camera's own field of view (the car is smaller, varies more).
    Drawn after every other value, so the rest of the scene is the same either way."""
    lo, hi = VIEW_AZ[view][int(rng.integers(len(VIEW_AZ[view])))]
    az = float(rng.uniform(lo, hi))
    time = _pick(rng, TIMES)
    weather = _pick(rng, WEATHERS)
    if camera == "pole":
        h = float(rng.uniform(5.0, 10.0))
        pitch = float(rng.uniform(25.0, 55.0))
        fill = float(rng.uniform(0.6, 0.9))
    else:
        h = float(rng.uniform(1.2, 1.5))
        pitch = 0.0  # derived from the distance (near level)
        fill = float(rng.uniform(0.6, 0.9))
    jitter = np.clip(rng.normal(0, 0.03, 3), -0.05, 0.05)
    paint = tuple(float(np.clip(c * (1 + j), 0, 1)) for c, j in zip(PALETTE[color], jitter))
    if time == "day":
        sun_el = float(rng.uniform(25, 70))
    elif time == "dusk":
        sun_el = float(rng.uniform(2, 12))
    else:
        sun_el = float(rng.uniform(55, 80))  # street lamp overhead
    n_lanes = int(rng.integers(2, 5))
    spec = SceneSpec(
        color=color,
        view=view,
        camera=camera,
        time=time,
        weather=weather,
        azimuth=az,
        cam_height=h,
        pitch=pitch,
        fov=float(rng.uniform(40, 65)) if camera == "dashcam" else 0.0,
        fill=fill,
        roll=float(rng.normal(0, 1.5)),
        aim=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.06, 0.06))),
        paint=paint,
        sun_az=float(rng.uniform(0, 360)),
        sun_el=sun_el,
        n_lanes=n_lanes,
        lane_idx=int(rng.integers(n_lanes)),
        roadside="grass" if rng.random() < 0.5 else "sidewalk",
        yellow_centre=bool(rng.random() < 0.3),
        asphalt=float(rng.uniform(0.2, 0.34)),
        fog_density=float(rng.uniform(0.01, 0.035)) if weather == "fog" else 0.0,
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.0, 5.0)) * (2.0 if time == "night" else 1.0),
        exposure=float(rng.uniform(0.9, 1.1)) * (1.6 if time == "night" else 1.0),  # night: gain up
        jpeg_quality=int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)),
        seed=int(rng.integers(2**31)),
        lights=bool(time == "night" or (time == "dusk" and rng.random() < 0.6) or (weather and rng.random() < 0.3)),
    )
    if framing is not None:
        lo, hi = float(framing[0]), float(framing[1])
        if not 0 < lo <= hi <= 1.5:
            raise ValueError(f"framing {framing}: expected 0 < lo <= hi <= 1.5")
        spec.framing = float(rng.uniform(lo, hi))
    return spec


# ------------------------------------------------------------------ shared noise textures
_NOISE: dict[int, np.ndarray] = {}


def value_noise(size: int = 256, seed: int = 1234) -> np.ndarray:
    """Tileable fractal noise in [-1,1], (size,size) float32 (cached per process)."""
    if size in _NOISE:
        return _NOISE[size]
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), np.float32)
    amp, tot = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64, 128, 256):
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        # wrap-around: resize of a tiled 3x3 then crop keeps it seamless
        if cells < size:
            big = np.tile(g, (3, 3))
            im = Image.fromarray(big, mode="F").resize((size * 3, size * 3), Image.BICUBIC)
            arr = np.asarray(im)[size : 2 * size, size : 2 * size]
        else:
            arr = g
        out += amp * arr
        tot += amp
        amp *= 0.6
    out /= np.abs(out).max()
    _NOISE[size] = out.astype(np.float32)
    return _NOISE[size]


def _noise_at(x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    n = value_noise()
    s = n.shape[0]
    i = (np.floor(x / scale * s).astype(np.int64)) % s
    j = (np.floor(y / scale * s).astype(np.int64)) % s
    return n[j, i]


# ------------------------------------------------------------------ lighting
def _lighting(spec: SceneSpec):
    """Returns dict of light parameters (linear-ish 0..1 RGB)."""
    az, el = xmath.radians(spec.sun_az), xmath.radians(spec.sun_el)
    L = np.array([xmath.cos(el) * xmath.cos(az), xmath.cos(el) * xmath.sin(az), xmath.sin(el)])
    if spec.time == "day":
        d = dict(
            sun=np.array([1.0, 0.97, 0.9]) * 0.85,
            amb=np.array([0.52, 0.56, 0.64]),
            zenith=np.array([0.30, 0.50, 0.85]),
            horizon=np.array([0.78, 0.85, 0.93]),
            skyline=np.array([0.30, 0.36, 0.30]),
        )
    elif spec.time == "dusk":
        d = dict(
            sun=np.array([1.0, 0.55, 0.28]) * 0.75,
            amb=np.array([0.33, 0.28, 0.36]),
            zenith=np.array([0.16, 0.20, 0.42]),
            horizon=np.array([0.95, 0.55, 0.32]),
            skyline=np.array([0.10, 0.09, 0.12]),
        )
    else:
        d = dict(
            sun=np.array([1.0, 0.80, 0.52]) * 0.75,
            amb=np.array([0.12, 0.13, 0.18]),
            zenith=np.array([0.01, 0.015, 0.04]),
            horizon=np.array([0.08, 0.07, 0.09]),
            skyline=np.array([0.02, 0.02, 0.03]),
        )
    if spec.weather in ("rain", "fog"):
        grey = d["horizon"].mean()
        k = 0.7
        d["sun"] = d["sun"] * (0.25 if spec.time != "night" else 0.8)
        d["amb"] = d["amb"] * (1.1 if spec.time != "night" else 1.0)
        d["zenith"] = d["zenith"] * (1 - k) + k * grey * np.array([0.85, 0.87, 0.9])
        d["horizon"] = d["horizon"] * (1 - k) + k * grey * np.array([0.95, 0.96, 0.98])
    d["fog"] = d["horizon"] * (0.9 if spec.time != "night" else 1.2)
    d["L"] = L
    return d


# ------------------------------------------------------------------ main renderer
def make_camera(car: CarModel, spec: SceneSpec, S: int) -> Camera:
    target = np.array([0.0, 0.0, car.height * 0.45])
    r = 0.5 * float(np.sqrt(car.length * car.length + car.width * car.width + car.height * car.height)) * 0.9
    az = xmath.radians(spec.azimuth)
    hd = np.array([xmath.cos(az), xmath.sin(az), 0.0])
    if spec.camera == "pole":
        pitch = xmath.radians(spec.pitch)
        D = (spec.cam_height - target[2]) / xmath.sin(pitch)
        fov = xmath.degrees(2 * xmath.asin(min(0.99, r / D)) / spec.fill)
        fov = float(np.clip(fov, 12, 80))
        pos = target + hd * D * xmath.cos(pitch) + np.array([0, 0, spec.cam_height - target[2]])
    else:
        fov = spec.fov
        D = r / xmath.sin(xmath.radians(fov * spec.fill / 2))
        dz = spec.cam_height - target[2]
        pos = target + hd * np.sqrt(max(D * D - dz * dz, 1.0)) + np.array([0, 0, dz])
    cam = Camera.look_at(pos, target, fov, S, S, roll_deg=spec.roll)
    if spec.framing > 0:  # zoom onto the car: its projected bounding box spans `framing` of the frame
        pc = cam.to_cam(car.pos.reshape(-1, 3))
        pc = pc[pc[:, 2] > cam.near]
        if len(pc):
            tx, ty = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
            cx, cy = (tx.min() + tx.max()) / 2, (ty.min() + ty.max()) / 2
            half = max(tx.max() - tx.min(), ty.max() - ty.min()) / 2 / spec.framing
            right, down, fwd = cam.R
            tgt = pos + fwd + cx * right + cy * down  # re-aim at the box centre
            fov = float(np.clip(xmath.degrees(2 * xmath.atan(half)), 5, 100))
            cam = Camera.look_at(pos, tgt, fov, S, S, roll_deg=spec.roll)
            target = tgt
    # shift the aim point a little so the car is not always centred
    right, down, fwd = cam.R
    tgt2 = target + (spec.aim[0] * right + spec.aim[1] * down) * xmath.tan(xmath.radians(fov) / 2) * 2 * xmath.vnorm(
        pos - target
    )
    return Camera.look_at(pos, tgt2, fov, S, S, roll_deg=spec.roll)


def recolour(rgb: np.ndarray, mask: np.ndarray, ratio: np.ndarray, paint) -> np.ndarray:
    """Replace the body paint: the new paint colour scaled by each texel's luminance relative to
    the original paint (keeps baked shading and panel lines), blended in by `mask`."""
    new = np.clip(np.asarray(paint, np.float32) * ratio[..., None], 0, 1)
    m = mask[..., None]
    return (rgb * (1 - m) + new * m).astype(np.float32)


def recolour_texture(car: CarModel, paint) -> np.ndarray:
    """The whole body texture recoloured (float32 (h,w,3)); for inspection and tests."""
    t = car.textures[car.paint_tex].astype(np.float32)
    return recolour(t[..., :3] / 255, t[..., 3] / 255, t[..., 4] / 170, paint)


def _sky(dirs: np.ndarray, spec: SceneSpec, lit, rng) -> np.ndarray:
    dirs = np.asarray(dirs, np.float64)
    dn = dirs / xmath.norm3(dirs)[..., None]
    el = xmath.asin(np.clip(dn[..., 2], -1, 1))
    t = xmath.pow(np.clip(el / xmath.radians(35.0), 0, 1), 0.6)[..., None]
    sky = lit["horizon"] * (1 - t) + lit["zenith"] * t
    az = xmath.atan2(dn[..., 1], dn[..., 0])
    if spec.time == "dusk" and spec.weather == "":
        dz = (az - xmath.radians(spec.sun_az) + xmath.PI) % (2 * xmath.PI) - xmath.PI
        glow = xmath.exp(-(dz * dz) / 0.5) * xmath.exp(-np.abs(el) / 0.15)
        sky = sky + glow[..., None] * np.array([0.35, 0.18, 0.05])
    # skyline: buildings / tree line silhouettes along the horizon
    nb = 180
    prof_rng = np.random.default_rng(spec.seed + 7)
    k = ((az + xmath.PI) / (2 * xmath.PI) * nb).astype(np.int64) % nb
    bright = lit["horizon"].mean() / 0.85  # silhouettes follow the overall light level
    if prof_rng.random() < 0.5:  # buildings: blocks of varied height and facade colour
        blk = prof_rng.integers(2, 5)
        heights = np.repeat(prof_rng.uniform(0.01, 0.10, nb) * (prof_rng.random(nb) < 0.8), blk)[:nb]
        facade = np.repeat(
            prof_rng.uniform(0.35, 0.75, (nb, 1)) * np.array([[1.0, 0.96, 0.9]]) * prof_rng.uniform(0.85, 1.1, (nb, 3)),
            blk,
            axis=0,
        )[:nb]
        col = facade[k] * bright * 0.75
        if spec.time == "night":  # lit windows
            win = (_noise_at(az * 40, el * 40, 1.0) > 0.55).astype(np.float32)
            col = col * 0.15 + win[..., None] * np.array([0.55, 0.45, 0.25])
    else:  # tree line: bumpy, dark green
        heights = np.abs(prof_rng.normal(0.035, 0.02, nb))
        col = np.array([0.12, 0.2, 0.1]) * (0.8 + 0.4 * prof_rng.random(nb))[k][..., None] * bright
    sil = (el < heights[k]) & (el > -0.02)
    if spec.weather == "fog" or spec.weather == "rain":
        col = col * 0.4 + lit["horizon"] * 0.6
    return np.where(sil[..., None], col, sky)


def _ground(G: np.ndarray, dist: np.ndarray, spec: SceneSpec, lit, car: CarModel) -> np.ndarray:
    gx, gy = G[..., 0], G[..., 1]
    lane_w = 3.5
    # road spans lanes; the car sits in lane `lane_idx` (its centre at y=0)
    left_edge = (spec.lane_idx + 0.5) * lane_w  # y of left road edge
    right_edge = left_edge - spec.n_lanes * lane_w
    n1 = _noise_at(gx, gy, 6.0)
    n2 = _noise_at(gx + 17.3, gy - 5.1, 60.0)
    base = spec.asphalt * (1 + 0.10 * n1 + 0.12 * n2)
    col = np.repeat(base[..., None], 3, -1) * np.array([1.0, 1.0, 1.02])
    # markings
    mark = np.zeros_like(gx, dtype=np.float32)
    mcol = np.ones(3) * 0.82
    wear = 0.75 + 0.25 * np.clip(_noise_at(gx * 3, gy * 3, 2.0) + 0.5, 0, 1)
    for k in range(1, spec.n_lanes):
        ly = left_edge - k * lane_w
        inl = np.abs(gy - ly) < 0.07
        dash = ((gx + 3.3 * k) % 12.0) < 3.5
        mark = np.where(inl & dash, 1.0, mark)
    for ey in (left_edge - 0.3, right_edge + 0.3):
        mark = np.where(np.abs(gy - ey) < 0.08, 1.0, mark)
    col = np.where((mark > 0)[..., None], mcol * wear[..., None], col)
    if spec.yellow_centre and spec.n_lanes >= 2:
        cy = left_edge - lane_w * (spec.n_lanes // 2)
        yl = (np.abs(gy - cy - 0.12) < 0.06) | (np.abs(gy - cy + 0.12) < 0.06)
        col = np.where(yl[..., None], np.array([0.85, 0.68, 0.12]) * wear[..., None], col)
    # roadside
    off = (gy > left_edge) | (gy < right_edge)
    dy = np.where(gy > left_edge, gy - left_edge, right_edge - gy)
    if spec.roadside == "grass":
        g = 0.5 + 0.5 * _noise_at(gx * 1.7, gy * 1.7, 3.0)
        side = np.stack([0.16 + 0.08 * g, 0.30 + 0.12 * g, 0.09 + 0.05 * g], -1)
    else:
        tile = ((np.abs(gx) % 1.5 < 0.03) | (dy % 1.5 < 0.03)).astype(np.float32)
        s = 0.52 + 0.06 * n1 - 0.12 * tile
        side = np.stack([s, s, s * 0.98], -1)
    kerb = off & (dy < 0.25)
    side = np.where(kerb[..., None], np.array([0.62, 0.62, 0.6]), side)
    col = np.where(off[..., None], side, col)
    # car shadow (soft box, offset away from the sun) + contact darkening
    sun_az, sun_el = xmath.radians(spec.sun_az), xmath.radians(spec.sun_el)
    sh_len = (
        0.0
        if spec.time == "night" or spec.weather
        else min(2.5, car.height * 0.6 / xmath.tan(xmath.radians(max(spec.sun_el, 8))))
    )
    ox, oy = -xmath.cos(sun_az) * sh_len, -xmath.sin(sun_az) * sh_len
    hl, hw = car.length / 2, car.width / 2

    def box(x, y, ex, ey, soft):
        return np.clip((ex - np.abs(x)) / soft + 0.5, 0, 1) * np.clip((ey - np.abs(y)) / soft + 0.5, 0, 1)

    occ = box(gx, gy, hl + 0.1, hw + 0.05, 0.5)
    cast = box(gx - ox * 0.5, gy - oy * 0.5, hl + abs(ox) * 0.5, hw + abs(oy) * 0.5, 0.25) if sh_len > 0 else 0.0
    sun_frac = 0.75 if (spec.time != "night" and not spec.weather) else 0.2
    shade = 1 - np.clip(0.55 * occ + sun_frac * 0.7 * cast, 0, 0.85)
    light = lit["amb"] * 1.1 + lit["sun"] * max(xmath.sin(sun_el), 0.1) * (1.0 if spec.time != "night" else 0.0)
    if spec.time == "night":  # pool of street-lamp light around the car, plus lamp colour
        lx, ly = 2.0 * xmath.cos(sun_az), 2.0 * xmath.sin(sun_az)
        pool = 1.0 / (1 + ((gx - lx) * (gx - lx) + (gy - ly) * (gy - ly)) / 60.0)
        light = light + pool[..., None] * lit["sun"] * 1.3
    heads = [(x, y) for k, x, y, z, sz in car.lights if k == "head"]
    if spec.lights and heads:
        xf = max(x for x, _ in heads)
        hy = max(abs(y) for _, y in heads)
        dx = gx - xf
        cone = np.clip((hy + 0.3 + 0.22 * dx - np.abs(gy)) / 0.6, 0, 1) * (dx > 0)
        beam = cone * xmath.exp(-np.maximum(dx, 0) / 14.0) * np.clip(dx / 1.5, 0, 1)
        light = light + beam[..., None] * np.array([1.0, 0.95, 0.8]) * 0.9
    col = col * light * shade[..., None]
    if spec.weather == "rain":  # wet: darker, sky reflection with grazing-angle fresnel
        col = col * 0.6
    return col


def _background(cam: Camera, spec: SceneSpec, lit, car: CarModel, rng) -> np.ndarray:
    """Road / roadside / sky for every pixel of `cam` (fog and haze included) -> (H,W,3) float32."""
    dirs = cam.rays().astype(np.float32)
    img = np.zeros(dirs.shape, np.float32)
    dz = dirs[..., 2]
    ground = dz < -1e-4
    dg = dirs[ground]
    t = -cam.pos[2] / dg[:, 2]
    G = cam.pos + dg * t[:, None]
    dist = t * xmath.norm3(dg)
    if ground.any():
        gcol = _ground(G, dist, spec, lit, car)
        if spec.weather == "rain":
            rd = dg / xmath.norm3(dg)[:, None]
            refl = rd * np.array([1, 1, -1], np.float32)
            fres = 0.15 + 0.6 * xmath.ipow(1 - np.clip(-rd[:, 2], 0, 1), 4)
            gcol = gcol * (1 - fres[:, None]) + _sky(refl, spec, lit, rng) * fres[:, None] * 0.8
        haze = 1 - xmath.exp(-dist / 400.0)
        gcol = gcol * (1 - haze[:, None]) + lit["horizon"] * haze[:, None]
        if spec.fog_density > 0:
            f = 1 - xmath.exp(-spec.fog_density * dist)
            gcol = gcol * (1 - f[:, None]) + lit["fog"] * f[:, None]
        img[ground] = gcol
    sky_m = ~ground
    if sky_m.any():
        sc = _sky(dirs[sky_m], spec, lit, rng)
        if spec.fog_density > 0:
            sc = sc * 0.15 + lit["fog"] * 0.85
        img[sky_m] = sc
    return img


def _draw_lamps(img8: np.ndarray, car: CarModel, cam: Camera, frag, spec: SceneSpec) -> np.ndarray:
    """Additive glow sprites for the car's head (white) and rear (red) lamps facing the camera
    and not hidden behind the body."""
    S = img8.shape[0]
    img = None
    strength = 1.0 if spec.time == "night" else 0.6
    for kind, x, y, z, size in car.lights:
        p = np.array([x, y, z], float)
        to_cam = cam.pos - p
        dist = xmath.vnorm(to_cam)
        facing = (to_cam[0] if kind == "head" else -to_cam[0]) / dist
        if facing < 0.15:
            continue
        pc = cam.to_cam(p[None])[0]
        if pc[2] < cam.near:
            continue
        u, v = cam.project(pc)
        iu, iv = int(u), int(v)
        if not (0 <= iu < S and 0 <= iv < S):
            continue
        zb = float(frag.depth[iv, iu])
        if np.isfinite(zb) and zb < pc[2] - 0.25:  # something in front of the lamp
            continue
        sigma = max(1.5, cam.f * size * 0.55 / pc[2])
        r = int(4 * sigma) + 1
        x0, x1, y0, y1 = max(0, iu - r), min(S, iu + r + 1), max(0, iv - r), min(S, iv + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ddx, ddy = xx + 0.5 - u, yy + 0.5 - v
        g = xmath.exp(-(ddx * ddx + ddy * ddy) / (2 * sigma * sigma))
        col = np.array([255, 245, 215]) if kind == "head" else np.array([255, 40, 25])
        inten = strength * min(1.0, 1.5 * facing) * (1.0 if kind == "head" else 0.8)
        if img is None:
            img = img8.astype(np.float32)
        img[y0:y1, x0:x1] += (g * inten)[..., None] * col
    return img8 if img is None else np.clip(img, 0, 255).astype(np.uint8)


def render_scene(car: CarModel, spec: SceneSpec, size: int = 224, ss: int = 2) -> Image.Image:
    """Render one traffic-camera view of `car` as described by `spec` -> RGB PIL image (size x size).

    The car is rasterized at `ss`x supersampling; the (smooth) background is computed at output
    resolution and upsampled, which keeps the cost dominated by the car pixels."""
    S = size * ss
    rng = np.random.default_rng(spec.seed)
    lit = _lighting(spec)
    cam = make_camera(car, spec, S)
    cam_lo = Camera(cam.pos, cam.R, cam.f / ss, size, size)
    bg = _background(cam_lo, spec, lit, car, rng)
    bg8 = (np.clip(bg * spec.exposure, 0, 1) * 255 + 0.5).astype(np.uint8)
    bg_img = Image.fromarray(bg8)
    if ss > 1:
        bg_img = bg_img.resize((S, S), Image.BILINEAR)
    img8 = np.array(bg_img)

    # ---- car
    pc = cam.to_cam(car.pos.reshape(-1, 3)).reshape(-1, 3, 3)
    frag = rasterize(pc, S, S, cam.f)
    tri = frag.tri.ravel()
    m = tri >= 0
    if m.any():
        t_ = tri[m]
        b = frag.bary.reshape(-1, 3)[m]
        # per-pixel attributes: barycentric sums in a fixed order (no einsum/BLAS), float32
        uv = xmath.bary3(car.uv[t_], b)
        nrm = xmath.bary3(car.nrm[t_], b)
        nrm /= np.maximum(xmath.norm3(nrm)[:, None], 1e-6)
        view = cam.pos.astype(np.float32) - xmath.bary3(car.pos[t_], b)
        view /= xmath.norm3(view)[:, None]
        ndv = xmath.dot3(nrm, view)
        flip = ndv < 0
        nrm[flip] *= -1
        ndv = np.abs(ndv)
        texid = car.tex[t_]
        alb = np.zeros((t_.size, 3), np.float32)
        for k in np.unique(texid):
            sel = texid == k
            smp = sample_bilinear(car.textures[k], uv[sel])
            if k == car.paint_tex:  # RGB + paint mask channel
                smp = recolour(smp[:, :3], smp[:, 3], smp[:, 4] * (255 / 170), spec.paint)
            alb[sel] = smp
        L = lit["L"]
        ndl = np.clip(xmath.dot3(nrm, L), 0, 1)[:, None]
        sky_f = (0.55 + 0.45 * nrm[:, 2])[:, None]
        col = alb * (lit["amb"] * sky_f + lit["sun"] * ndl)
        # specular + environment reflection (glossy paint / glass)
        shiny = car.shiny[t_][:, None]
        H = L + view
        H /= xmath.norm3(H)[:, None]
        spec_t = xmath.ipow(np.clip(xmath.dot3(nrm, H), 0, 1), 60)[:, None]
        col += shiny * spec_t * lit["sun"] * 0.9
        rv_z = 2 * ndv * nrm[:, 2] - view[:, 2]
        fres = 0.04 + 0.5 * xmath.ipow(1 - np.clip(ndv, 0, 1), 5)[:, None]
        env = np.where(
            rv_z[:, None] > 0, lit["horizon"] * 0.5 + lit["zenith"] * 0.5, lit["amb"] * 0.25 * spec.asphalt * 3
        )
        col = col * (1 - shiny * fres) + shiny * fres * env * 1.1
        if spec.fog_density > 0:
            dcar = frag.depth.ravel()[m] * xmath.norm3(
                np.stack(
                    [
                        ((np.nonzero(m)[0] % S) + 0.5 - S / 2) / cam.f,
                        ((np.nonzero(m)[0] // S) + 0.5 - S / 2) / cam.f,
                        np.ones(t_.size),
                    ],
                    1,
                )
            )
            f = (1 - xmath.exp(-spec.fog_density * dcar))[:, None]
            col = col * (1 - f) + lit["fog"] * f
        img8.reshape(-1, 3)[m] = (np.clip(col * spec.exposure, 0, 1) * 255 + 0.5).astype(np.uint8)
    if spec.lights and car.lights:
        img8 = _draw_lamps(img8, car, cam, frag, spec)
    out = Image.fromarray(img8)
    if ss > 1:
        out = out.reduce(ss)
    # ---- weather overlays and sensor effects (at output size)
    if spec.weather == "rain":
        layer = Image.new("L", out.size, 0)
        dr = ImageDraw.Draw(layer)
        n = int(rng.integers(80, 200))
        ang = rng.normal(0.15, 0.1)
        for _ in range(n):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            ln = rng.uniform(6, 18)
            dr.line(
                [(x, y), (x + ln * xmath.sin(ang), y + ln * xmath.cos(ang))], fill=int(rng.integers(50, 120)), width=1
            )
        layer = layer.filter(ImageFilter.GaussianBlur(0.6))
        a = np.asarray(layer, np.float32)[..., None] / 255.0
        arr = np.asarray(out, np.float32)
        arr = arr * (1 - a * 0.6) + 210 * a * 0.6
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if spec.blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(spec.blur))
    arr = np.asarray(out, np.float32)
    arr = arr + rng.normal(0, spec.noise, arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    return out


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()
