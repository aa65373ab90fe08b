"""Simple buildings along the street world's kerbs: boxes with a facade of windows and a shop floor,
drawn like vehicles (a `CarModel` with no paint) but never labelled."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from carsearch_world.torcs import CarModel
from carsearch_world.traffic_scene import LANE_W, Placement

WALLS = ((150, 90, 70), (185, 170, 150), (120, 120, 125), (200, 195, 185), (160, 130, 95), (95, 100, 110))
SIDEWALK = 4.0  # m between the kerb and the building line


def _facade(rng: np.random.Generator, w: float, h: float) -> np.ndarray:
    W, H = 128, 128
    wall = WALLS[int(rng.integers(len(WALLS)))]
    im = Image.new("RGB", (W, H), wall)
    dr = ImageDraw.Draw(im)
    floors, bays = max(1, int(h / 3.2)), max(1, int(w / 3.0))
    fh, bw = H / floors, W / bays
    lit = rng.random(floors * bays) < 0.25
    for f in range(floors - 1):  # windows above the ground floor
        for b in range(bays):
            glass = (230, 210, 150) if lit[f * bays + b] else (40, 48, 58)
            dr.rectangle((b * bw + bw * 0.2, f * fh + fh * 0.25, b * bw + bw * 0.8, f * fh + fh * 0.75), fill=glass)
    dr.rectangle((0, H - fh, W, H), fill=(60, 62, 66))  # shop floor
    for b in range(bays):
        dr.rectangle((b * bw + bw * 0.1, H - fh * 0.9, b * bw + bw * 0.9, H - fh * 0.1), fill=(35, 45, 55))
    return np.asarray(im, np.uint8).copy()


def building(rng: np.random.Generator, w: float, d: float, h: float) -> CarModel:
    """A w (along the street) x d x h box; the four walls carry the facade texture, the roof is flat grey."""
    x0, x1, y0, y1 = -w / 2, w / 2, -d / 2, d / 2
    P, UV, TX = [], [], []
    walls = (
        ((x0, y0), (x1, y0), w),
        ((x1, y1), (x0, y1), w),
        ((x0, y1), (x0, y0), d),
        ((x1, y0), (x1, y1), d),
    )
    for (ax, ay), (bx, by), _ in walls:
        q = [(ax, ay, 0.0), (bx, by, 0.0), (bx, by, h), (ax, ay, h)]
        uv = [(0, 0), (1, 0), (1, 1), (0, 1)]
        for i, j, k in ((0, 1, 2), (0, 2, 3)):
            P.append([q[i], q[j], q[k]])
            UV.append([uv[i], uv[j], uv[k]])
            TX.append(0)
    roof = [(x0, y0, h), (x1, y0, h), (x1, y1, h), (x0, y1, h)]
    for i, j, k in ((0, 1, 2), (0, 2, 3)):
        P.append([roof[i], roof[j], roof[k]])
        UV.append([(0.5, 0.5)] * 3)
        TX.append(1)
    P = np.array(P, np.float32)
    n = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    n /= np.maximum(np.sqrt((n * n).sum(1)), 1e-9)[:, None]
    return CarModel(
        model_id="building",
        folder="",
        make="",
        model="",
        body_type="building",
        pos=P,
        nrm=np.repeat(n[:, None], 3, 1).astype(np.float32),
        uv=np.array(UV, np.float32),
        tex=np.array(TX, np.int32),
        textures=[_facade(rng, w, h), np.array([[[70, 70, 74]]], np.uint8)],
        paint_tex=-1,
        shiny=np.full(len(TX), 0.15, np.float32),
        length=w,
        width=d,
        height=h,
        n_body_tris=len(TX),
    )


def street_buildings(
    rng: np.random.Generator, n_lanes: int, cross_x: float | None, first: int
) -> tuple[list[CarModel], list[Placement]]:
    """Buildings along both sides of a street seen from a camera at x = 0 (from x = 8 m on the camera's
    side, which it stands beside; from -10 m across the street), leaving the crossing street open;
    placements index the models from `first` on."""
    half = n_lanes * LANE_W / 2
    models, places = [], []
    for side, start in ((-1, 8.0), (1, -10.0)):
        x = start
        while x < 140.0:
            w, d, h = float(rng.uniform(8, 20)), float(rng.uniform(8, 14)), float(rng.uniform(6, 24))
            if cross_x is not None and x < cross_x + LANE_W + 4 and x + w > cross_x - LANE_W - 4:
                x = cross_x + LANE_W + 4
                continue
            models.append(building(rng, w, d, h))
            y = side * (half + SIDEWALK + d / 2)
            places.append(Placement(first + len(models) - 1, x + w / 2, y, 0.0, "none", (0.0, 0.0, 0.0)))
            x += w + float(rng.uniform(0.0, 3.0))
    return models, places
