"""The everyday fleet as render-ready `CarModel`s: a procedural mesh per design (lofted lower body,
greenhouse with glass and pillars, mirrors, wheels, pickup bed, truck cargo box, bus, motorcycle with
rider), one texture atlas per vehicle (paint with seams and wheel arches, glass, grille and lamps,
bumpers; liveries: taxi roof sign, police stripe and light bar) and front/rear number plates.

`make_vehicle(design, plate, region, livery)` -> a CarModel the existing scene and street renderers
draw like a TORCS car; its labels carry type, variant, make/model, livery and plate.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from carsearch.core import xmath
from carsearch_world.designs import Design
from carsearch_world.plates import plate_size, plate_texture
from carsearch_world.torcs import CarModel, Wheel, wheel_mesh

A = 256  # atlas size (px)
# atlas regions (x0, y0, x1, y1) in pixels, y down
SIDE, GSIDE = (0, 0, 256, 96), (0, 96, 256, 160)
FRONT, REAR = (0, 160, 128, 224), (128, 160, 256, 224)
PAINT, GLASS, TRIM, LINER = (0, 224, 64, 256), (64, 224, 128, 256), (128, 224, 192, 256), (192, 224, 256, 256)
GLASS_RGB, TRIM_RGB, LINER_RGB = (28, 34, 42), (24, 24, 26), (45, 45, 48)
T_ATLAS, T_RIM, T_RUB, T_PLATE_F, T_PLATE_R, T_WHITE, T_BLUE, T_RED, T_RIDER = range(9)


def _uv(region, fu, fv):
    """Atlas UV of the point (fu, fv) of a region (fv up), 2 px inside its edges."""
    x0, y0, x1, y1 = region
    u = (x0 + 2 + np.clip(fu, 0, 1) * (x1 - x0 - 4)) / A
    row = y1 - 2 - np.clip(fv, 0, 1) * (y1 - y0 - 4)
    return np.stack([u, 1 - row / A], -1)


class _Mesh:
    def __init__(self):
        self.P, self.UV, self.TX, self.SH = [], [], [], []

    def quad(self, pts, uvs, tex=T_ATLAS, shiny=1.0):
        pts, uvs = np.asarray(pts, float), np.asarray(uvs, float)
        for a, b, c in ((0, 1, 2), (0, 2, 3)):
            self.P.append(pts[[a, b, c]])
            self.UV.append(uvs[[a, b, c]])
            self.TX.append(tex)
            self.SH.append(shiny)

    def box(self, x0, x1, y0, y1, z0, z1, region=PAINT, tex=T_ATLAS, shiny=1.0):
        c = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
        uv = _uv(region, np.array([0.1, 0.9, 0.9, 0.1]), np.array([0.1, 0.1, 0.9, 0.9]))
        for f in ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4), (1, 3, 7, 5)):
            self.quad(c[list(f)], uv, tex, shiny)

    def arrays(self):
        P = np.array(self.P, np.float32)
        n = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
        n /= np.maximum(np.sqrt((n * n).sum(1)), 1e-9)[:, None]
        N = np.repeat(n[:, None], 3, 1).astype(np.float32)
        return P, N, np.array(self.UV, np.float32), np.array(self.TX, np.int32), np.array(self.SH, np.float32)


def _profile(d: Design):
    """Lower body sections along x (rear to front): (x frac, bottom z, top z, half width, region of the top)."""
    hw, c = d.width / 2, d.clear
    pts = [(0.0, c + 0.06, d.deck - 0.07, hw * 0.94), (0.03, c, d.deck, hw)]
    g0, g3 = d.glass[0], d.glass[3]
    if d.bed:
        floor = d.belt - 0.42
        pts += [(d.bed[0] + 0.005, c, floor, hw), (d.bed[1], c, floor, hw), (d.bed[1] + 0.004, c, d.belt, hw)]
    elif d.cargo:
        pts += [(d.cargo[1], c, d.deck, hw), (d.cargo[1] + 0.004, c, d.belt, hw)]
    pts += [(g0, c, d.belt, hw), (g3, c, d.belt, hw), (0.97, c, d.hood, hw), (1.0, c + 0.06, d.hood - 0.08, hw * 0.92)]
    pts = sorted({round(p[0], 4): p for p in pts}.values())
    out = []
    for i, p in enumerate(pts):
        liner = bool(d.bed) and d.bed[0] < p[0] <= d.bed[1] + 1e-3 and i > 0 and pts[i - 1][0] >= d.bed[0]
        out.append((*p, LINER if liner else PAINT))
    return out


def _lower_body(m: _Mesh, d: Design) -> None:
    L, secs = d.length, _profile(d)
    zmax = max(s[2] for s in secs)
    X = lambda f: (f - 0.5) * L  # noqa: E731
    for (f0, b0, t0, w0, _), (f1, b1, t1, w1, top) in zip(secs[:-1], secs[1:]):
        x0, x1 = X(f0), X(f1)
        for s in (1, -1):  # sides
            m.quad(
                [[x0, s * w0, b0], [x1, s * w1, b1], [x1, s * w1, t1], [x0, s * w0, t0]],
                _uv(SIDE, np.array([f0, f1, f1, f0]), np.array([b0, b1, t1, t0]) / zmax),
            )
        m.quad([[x0, w0, t0], [x1, w1, t1], [x1, -w1, t1], [x0, -w0, t0]], _uv(top, *np.array([[0, 1, 1, 0]] * 2)))
        m.quad([[x0, w0, b0], [x1, w1, b1], [x1, -w1, b1], [x0, -w0, b0]], _uv(TRIM, *np.array([[0, 1, 1, 0]] * 2)))
    for (f, b, t, w, _), reg in ((secs[0], REAR), (secs[-1], FRONT)):
        m.quad(
            [[X(f), w, b], [X(f), -w, b], [X(f), -w, t], [X(f), w, t]],
            _uv(reg, np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])),
        )


def _greenhouse(m: _Mesh, d: Design) -> None:
    L, hw = d.length, d.width / 2 * 0.97
    r0, r1, f1, f0 = ((g - 0.5) * L for g in d.glass)
    zb, zt, tw = d.belt, d.roof, hw * d.tumble
    for s in (1, -1):
        pts = [[r0, s * hw, zb], [f0, s * hw, zb], [f1, s * tw, zt], [r1, s * tw, zt]]
        fu = (np.array([r0, f0, f1, r1]) - r0) / (f0 - r0)
        m.quad(pts, _uv(GSIDE, fu, np.array([0, 0, 1, 1])))
    m.quad([[r1, tw, zt], [f1, tw, zt], [f1, -tw, zt], [r1, -tw, zt]], _uv(PAINT, *np.array([[0, 1, 1, 0]] * 2)))
    for xb, xt in ((f0, f1), (r0, r1)):  # windscreen, rear window
        m.quad([[xb, hw, zb], [xb, -hw, zb], [xt, -tw, zt], [xt, tw, zt]], _uv(GLASS, *np.array([[0, 1, 1, 0]] * 2)))
    for s in (1, -1):  # mirrors at the base of the windscreen
        x = f0 - 0.18 * (f0 - f1) - 0.12
        m.box(x - 0.06, x + 0.06, s * (hw + 0.02), s * (hw + 0.2), zb + 0.06, zb + 0.18)


def _extras(m: _Mesh, d: Design, livery: str | None) -> None:
    L, hw = d.length, d.width / 2
    if d.bed:  # bed walls and tailgate
        x0, x1, zf = (d.bed[0] - 0.5) * L, (d.bed[1] - 0.5) * L, d.belt - 0.42
        for s in (1, -1):
            m.box(x0, x1, s * (hw - 0.07), s * hw, zf, d.belt)
        m.box(x0, x0 + 0.07, -hw, hw, zf, d.belt)
    if d.cargo:
        x0, x1, top = (d.cargo[0] - 0.5) * L, (d.cargo[1] - 0.5) * L, d.cargo[2]
        m.box(x0, x1, -hw * 1.03, hw * 1.03, d.deck, top)
        m.box(x0 - 0.02, x0, -hw * 1.03, hw * 1.03, d.deck, d.deck + 0.55, region=REAR)  # tail lamps, bumper
        m.box(x0 - 0.015, x0, -0.02, 0.02, d.deck + 0.55, top - 0.1, region=TRIM, shiny=0.3)  # door seam
    r1, f1 = ((g - 0.5) * L for g in d.glass[1:3])
    xm, tw = 0.5 * (r1 + f1), hw * d.tumble * 0.97
    if livery == "taxi":
        m.box(xm - 0.18, xm + 0.18, -0.3, 0.3, d.roof, d.roof + 0.2, tex=T_WHITE, shiny=0.4)
    elif livery == "police":
        m.box(xm - 0.12, xm + 0.12, 0.0, tw * 0.8, d.roof, d.roof + 0.12, tex=T_BLUE, shiny=0.6)
        m.box(xm - 0.12, xm + 0.12, -tw * 0.8, 0.0, d.roof, d.roof + 0.12, tex=T_RED, shiny=0.6)


def _plates(m: _Mesh, d: Design, region: str, rear_only: bool = False) -> None:
    pw, ph = plate_size(region)
    z = d.clear + 0.18 if d.body_type != "motorcycle" else 0.75
    for sign, tex in ((1, T_PLATE_F), (-1, T_PLATE_R)):
        if rear_only and sign > 0:
            continue
        x = sign * (d.length / 2 + 0.012) if d.body_type != "motorcycle" else -d.length * 0.42
        ys = [pw / 2, -pw / 2] if sign > 0 else [-pw / 2, pw / 2]  # read left to right from outside
        m.quad(
            [[x, ys[0], z], [x, ys[1], z], [x, ys[1], z + ph], [x, ys[0], z + ph]],
            np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float) * [0.98, 0.96] + [0.01, 0.02],
            tex=tex,
            shiny=0.3,
        )


def _motorcycle(m: _Mesh, d: Design) -> None:
    L, r = d.length, d.wheel_r
    xr, xf = (d.axles[0] - 0.5) * L, (d.axles[1] - 0.5) * L
    m.box(xr + 0.1, xf - 0.35, -0.14, 0.14, r + 0.05, r + 0.3, region=TRIM, shiny=0.3)  # engine and frame
    m.box(xr + 0.2, xf - 0.4, -0.2, 0.2, r + 0.28, r + 0.5)  # side covers (paint)
    m.box(xr + 0.02, xf - 0.55, -0.16, 0.16, r + 0.45, r + 0.64)  # seat and tail (paint)
    m.box(xf - 0.75, xf - 0.3, -0.22, 0.22, r + 0.45, r + 0.8)  # tank (paint)
    m.box(xf - 0.3, xf - 0.2, -0.05, 0.05, r, r + 0.85, region=TRIM, shiny=0.5)  # fork
    m.box(xf - 0.42, xf - 0.12, -0.24, 0.24, r + 0.45, r + 0.95)  # front fairing (paint)
    m.box(xf - 0.44, xf - 0.34, -0.4, 0.4, r + 0.9, r + 0.95, region=TRIM, shiny=0.5)  # handlebar
    m.box(xf - 0.13, xf - 0.08, -0.09, 0.09, r + 0.62, r + 0.78, region=FRONT)  # headlamp
    x = xf - 1.0  # rider: legs, torso, helmet
    m.box(x - 0.22, x + 0.25, -0.2, 0.2, r + 0.55, r + 0.8, tex=T_RIDER, shiny=0.1)
    m.box(x - 0.18, x + 0.12, -0.18, 0.18, r + 0.8, r + 1.28, tex=T_RIDER, shiny=0.1)
    m.box(x - 0.05, x + 0.2, -0.12, 0.12, r + 1.28, r + 1.54, tex=T_RIDER, shiny=0.9)


def _atlas(d: Design, livery: str | None, seed: int) -> np.ndarray:
    """The body texture: RGB, paint mask (255 = body paint), paint luminance ratio (x 170)."""
    rgb = Image.new("RGB", (A, A), (200, 200, 200))
    mask = Image.new("L", (A, A), 255)
    ratio = Image.new("L", (A, A), 170)
    dr, dm, dq = ImageDraw.Draw(rgb), ImageDraw.Draw(mask), ImageDraw.Draw(ratio)

    def fill(box, col, paint=False, r=170):
        dr.rectangle(box, fill=col)
        dm.rectangle(box, fill=255 if paint else 0)
        dq.rectangle(box, fill=r)

    for reg, col in ((GLASS, GLASS_RGB), (TRIM, TRIM_RGB), (LINER, LINER_RGB)):
        fill((reg[0], reg[1], reg[2] - 1, reg[3] - 1), col)
    x0, y0, x1, y1 = SIDE  # lower body side: u = x/L, v = z/zmax
    zmax = max(d.belt, d.deck, d.hood)
    row = lambda z: int(y1 - 2 - z / zmax * (y1 - y0 - 4))  # noqa: E731
    col_ = lambda f: int(x0 + 2 + f * (x1 - x0 - 4))  # noqa: E731
    fill((x0, row(d.clear + 0.13), x1, y1), TRIM_RGB)  # sill and bumpers
    for a in d.axles:  # wheel arches
        cx, cz, rr = col_(a), row(d.wheel_r), d.wheel_r * 1.12 / d.length * (x1 - x0)
        rz = d.wheel_r * 1.12 / zmax * (y1 - y0)
        dr.ellipse((cx - rr, cz - rz, cx + rr, cz + rz), fill=(12, 12, 13))
        dm.ellipse((cx - rr, cz - rz, cx + rr, cz + rz), fill=0)
    if d.body_type not in ("motorcycle", "bus"):
        for f in (d.glass[3] - 0.01, *[d.glass[0] + p * (d.glass[3] - d.glass[0]) for p in d.pillars[:1]]):
            dq.line((col_(f), row(d.belt), col_(f), row(d.clear + 0.13)), fill=80, width=1)  # door seams
        dq.line((x0, row(d.belt * 0.8), x1, row(d.belt * 0.8)), fill=205, width=1)  # shoulder crease
    if livery == "police":
        fill((x0, row(d.belt * 0.72), x1, row(d.belt * 0.56)), (20, 45, 140))
    _glass_side(dr, dm, d)
    _ends(fill, d)
    return np.dstack([np.asarray(rgb), np.asarray(mask), np.asarray(ratio)]).astype(np.uint8)


def _glass_side(dr, dm, d: Design) -> None:
    x0, y0, x1, y1 = GSIDE
    r0, r1, f1, f0 = d.glass
    span = f0 - r0
    fu = lambda f: x0 + 2 + (f - r0) / span * (x1 - x0 - 4)  # noqa: E731
    fv = lambda v: y1 - 2 - v * (y1 - y0 - 4)  # noqa: E731
    vb, vt = 0.1, 0.86
    left = lambda v: r0 + (r1 - r0) * v + 0.012  # noqa: E731
    right = lambda v: f0 + (f1 - f0) * v - 0.012  # noqa: E731
    cuts = [r0 + p * span for p in d.pillars]
    if d.side_glass < 1:
        cuts = [f0 - d.side_glass * span]
        bounds = [(cuts[0] + 0.01, 9.0)]
    else:
        edges = [-9.0, *cuts, 9.0]
        bounds = [(a + 0.008, b - 0.008) for a, b in zip(edges[:-1], edges[1:])]
    for a, b in bounds:
        poly = []
        for v in (vb, vt):
            poly.append((fu(max(left(v), a)), fv(v)))
        for v in (vt, vb):
            poly.append((fu(min(right(v), b)), fv(v)))
        if poly[3][0] - poly[0][0] > 2:
            dr.polygon(poly, fill=GLASS_RGB)
            dm.polygon(poly, fill=0)


def _ends(fill, d: Design) -> None:
    for reg, lamp in ((FRONT, (235, 235, 225)), (REAR, (200, 20, 20))):
        x0, y0, x1, y1 = reg
        w, h = x1 - x0, y1 - y0
        fill((x0, y1 - int(h * 0.28), x1, y1), TRIM_RGB)  # bumper
        lw = 0.22 if d.body_type != "bus" else 0.12
        for a in (0.04, 0.96 - lw):
            fill((x0 + int(w * a), y0 + int(h * 0.2), x0 + int(w * (a + lw)), y0 + int(h * 0.42)), lamp)
        if reg is FRONT:
            fill((x0 + int(w * 0.3), y0 + int(h * 0.22), x0 + int(w * 0.7), y0 + int(h * 0.55)), (30, 30, 32))
        if reg is FRONT and d.body_type == "bus":  # the bus' front is mostly windscreen
            fill((x0 + 2, y0 + 2, x1 - 2, y0 + int(h * 0.16)), GLASS_RGB)


def _solid(rgb) -> np.ndarray:
    return np.array(rgb, np.uint8).reshape(1, 1, 3)


def _rim_texture() -> np.ndarray:
    im = Image.new("RGB", (64, 64), (20, 20, 22))
    dr = ImageDraw.Draw(im)
    dr.ellipse((1, 1, 31, 31), fill=(170, 172, 176))
    for k in range(5):
        cx, cy = 16 + 9 * xmath.cos(2 * xmath.PI * k / 5), 16 + 9 * xmath.sin(2 * xmath.PI * k / 5)
        dr.ellipse(
            (cx - 3.5, cy - 3.5, cx + 3.5, cy + 3.5),
            fill=(40, 40, 44),
        )
    dr.ellipse((13, 13, 19, 19), fill=(120, 120, 125))
    return np.asarray(im, np.uint8).copy()


def plate_corners(car: CarModel, heading: float = 0.0, x: float = 0.0, y: float = 0.0):
    """World-space corners and outward normals of the front/rear plates of `car` placed at (x, y) with
    `heading` degrees (0: along +x)."""
    c, s = xmath.cos(xmath.radians(heading)), xmath.sin(xmath.radians(heading))
    verts, normals = {}, {}
    for side, t, nx in (("front", T_PLATE_F, 1.0), ("rear", T_PLATE_R, -1.0)):
        P = car.pos[car.tex == t].reshape(-1, 3).astype(np.float64)
        verts[side] = np.stack([c * P[:, 0] - s * P[:, 1] + x, s * P[:, 0] + c * P[:, 1] + y, P[:, 2]], -1)
        normals[side] = np.array([c * nx, s * nx, 0.0])
    return verts, normals


def make_vehicle(d: Design, plate: str, region: str = "us", livery: str | None = None, identity: str = "") -> CarModel:
    """One vehicle instance: the design's mesh, its atlas, its plates (front and rear; a motorcycle
    only at the rear); labels: type, variant, make/model, livery, plate, identity."""
    m = _Mesh()
    moto = d.body_type == "motorcycle"
    if moto:
        _motorcycle(m, d)
    else:
        _lower_body(m, d)
        _greenhouse(m, d)
        _extras(m, d, livery)
    _plates(m, d, region, rear_only=moto)
    n_body = len(m.P)
    P, N, UV, TX, SH = m.arrays()
    parts = [(P, N, UV, TX)]
    tw = 0.12 if moto else min(0.35, 0.12 + d.wheel_r * 0.3)
    for a in d.axles:
        for right in (False,) if moto else (False, True):
            y = 0.0 if moto else (-1 if right else 1) * (d.width / 2 - tw / 2 + 0.015)
            w = Wheel(x=(a - 0.5) * d.length, y=y, radius=d.wheel_r, rim_radius=d.wheel_r * 0.62, width=tw)
            parts.append(wheel_mesh(w, right=right, tex_rim=T_RIM, tex_rubber=T_RUB, seg=16))
    P = np.concatenate([p[0] for p in parts]).astype(np.float32)
    N = np.concatenate([p[1] for p in parts]).astype(np.float32)
    UV = np.concatenate([p[2] for p in parts]).astype(np.float32)
    TX = np.concatenate([p[3] for p in parts]).astype(np.int32)
    SH = np.concatenate([SH, np.full(P.shape[0] - n_body, 0.05, np.float32)])
    SH[TX == T_RIM] = 0.6
    textures = [
        _atlas(d, livery, 0),
        _rim_texture(),
        _solid((15, 15, 17)),
        plate_texture(plate, region, rear=False),
        plate_texture(plate, region, rear=True),
        _solid((240, 236, 200)),
        _solid((20, 60, 230)),
        _solid((230, 25, 25)),
        _solid((35, 38, 45)),
    ]
    ext = P.reshape(-1, 3)
    hw, L = d.width / 2, d.length
    zl = d.clear + 0.55 * (max(d.hood, d.deck) - d.clear)
    lights = [("head", L / 2 - 0.02, s * 0.72 * hw, zl, 0.2) for s in (1, -1)]
    lights += [("rear", -L / 2 + 0.02, s * 0.74 * hw, zl, 0.18) for s in (1, -1)]
    if moto:
        lights = [
            ("head", (d.axles[1] - 0.5) * L - 0.1, 0.0, d.wheel_r + 0.7, 0.15),
            ("rear", -L / 2 + 0.1, 0.0, 0.85, 0.1),
        ]
    model = f"{d.model} {livery}" if livery else d.model
    car = CarModel(
        model_id=f"{d.body_type.replace(' ', '-')}-v{d.variant}{'-' + livery if livery else ''}",
        folder="",
        make=d.make,
        model=model,
        body_type=d.body_type,
        pos=P,
        nrm=N,
        uv=UV,
        tex=TX,
        textures=textures,
        paint_tex=T_ATLAS,
        shiny=SH,
        length=float(ext[:, 0].max() - ext[:, 0].min()),
        width=float(ext[:, 1].max() - ext[:, 1].min()),
        height=float(ext[:, 2].max()),
        n_body_tris=n_body,
        lights=lights,
        extra={"variant": d.variant, "livery": livery or "none", "plate": plate, "plate_region": region}
        | ({"identity": identity} if identity else {}),
    )
    return car
