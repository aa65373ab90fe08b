"""TORCS car folders -> render-ready car models (mesh in a common frame, textures, wheels,
body-paint mask) plus the make/model/body_type table for the 17 cars of Debian `torcs-data`.

Over 350 lines on purpose: the TORCS car model loader (parameter files, textures, wheels, the
model table) is one format, kept as it was when the renderer was written (render/ is unchanged).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from carsearch.core import xmath
from carsearch.core.errors import CarsearchError
from carsearch_world.ac3d import AC3DError, parse_ac3d
from carsearch_world.raster import Camera, rasterize, sample_bilinear

CARS_SUBDIR = Path("usr/share/games/torcs/cars")
MAX_TEX = 512  # textures are downsampled to this size (plenty for 224-448 px renders)

# model_id -> (make, model, body_type). TORCS' own designs (the "carN-*" bodies) have no real
# make; they are labelled "TORCS" with a descriptive model name.
MODEL_TABLE: dict[str, tuple[str, str, str]] = {
    "155-DTM": ("Alfa Romeo", "155 DTM", "sedan"),
    "acura-nsx-sz": ("Acura", "NSX", "sports car"),
    "baja-bug": ("Volkswagen", "Beetle Baja Bug", "buggy"),
    "buggy": ("TORCS", "Buggy", "buggy"),
    "car1-ow1": ("TORCS", "Open Wheeler", "formula car"),
    "car1-stock1": ("TORCS", "Stock Car 1", "race car"),
    "car1-stock2": ("TORCS", "Stock Car 2", "race car"),
    "car1-trb1": ("TORCS", "TRB1 GT 1", "race car"),
    "car1-trb3": ("TORCS", "TRB3 GT", "race car"),
    "car2-trb1": ("TORCS", "TRB1 GT 2", "race car"),
    "car3-trb1": ("TORCS", "TRB1 GT 3", "race car"),
    "car4-trb1": ("TORCS", "TRB1 GT 4", "race car"),
    "car5-trb1": ("TORCS", "TRB1 GT 5", "race car"),
    "car6-trb1": ("TORCS", "TRB1 GT 6", "race car"),
    "car7-trb1": ("TORCS", "TRB1 GT 7", "race car"),
    "car8-trb1": ("TORCS", "TRB1 GT 8", "race car"),
    "p406": ("Peugeot", "406", "sedan"),
}


class CarLoadError(CarsearchError, ValueError):
    pass


@dataclass
class Wheel:
    x: float  # TORCS frame: x forward, y left, z up (ground z=0)
    y: float
    radius: float
    rim_radius: float
    width: float


@dataclass
class CarModel:
    model_id: str
    folder: str
    make: str
    model: str
    body_type: str
    pos: np.ndarray  # (T,3,3) float32 world frame
    nrm: np.ndarray  # (T,3,3) float32
    uv: np.ndarray  # (T,3,2) float32
    tex: np.ndarray  # (T,) int32 index into textures
    textures: list[np.ndarray]  # uint8 (h,w,3); textures[paint_tex] is (h,w,5): RGB, paint mask, lum ratio
    paint_tex: int  # index of the body texture to recolour
    shiny: np.ndarray  # (T,) float32 specular strength per triangle
    length: float
    width: float
    height: float
    n_body_tris: int
    lights: list = field(default_factory=list)  # [(kind "head"|"rear", x, y, z, size)] TORCS frame
    extra: dict = field(default_factory=dict)  # more labels (the procedural fleet: variant, livery, plate, identity)

    def labels(self) -> dict:
        out = {"model_id": self.model_id, "make": self.make, "model": self.model, "body_type": self.body_type}
        return out | self.extra


def find_torcs_cars(torcs_dir: Path) -> list[Path]:
    """Car folders under <torcs_dir>/usr/share/games/torcs/cars (also accepts the cars dir itself)."""
    torcs_dir = Path(torcs_dir).expanduser()
    for root in (torcs_dir / CARS_SUBDIR, torcs_dir):
        if root.is_dir():
            cars = sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}.xml").exists())
            if cars:
                return cars
    return []


def _xml_params(path: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """TORCS params XML -> (params name, {section path: {attr name: val}})."""
    text = path.read_text(encoding="latin-1")
    text = re.sub(r"<!DOCTYPE[^>]*>", "", text)
    text = re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip())
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise CarLoadError(f"{path.name}: bad XML: {e}") from None
    out: dict[str, dict[str, str]] = {}

    def walk(el, prefix):
        for child in el:
            if child.tag == "section":
                name = f"{prefix}/{child.get('name', '')}" if prefix else child.get("name", "")
                walk(child, name)
            elif child.tag in ("attnum", "attstr"):
                out.setdefault(prefix, {})[child.get("name", "")] = child.get("val", "")

    walk(root, "")
    return root.get("name", ""), out


def _num(sec: dict[str, str], key: str, default: float) -> float:
    try:
        return float(sec.get(key, default))
    except ValueError:
        return default


def _main_mesh(folder: Path, params: dict[str, dict[str, str]]) -> Path:
    cand = params.get("Graphic Objects/Ranges/1", {}).get("car")
    names = [cand] if cand else []
    names += [f"{folder.name}.acc", f"{folder.name}.ac"]
    for nm in names:
        if nm and (folder / nm).is_file():
            return folder / nm
    others = sorted(p for p in folder.iterdir() if p.suffix in (".acc", ".ac") and "lod" not in p.stem)
    if others:
        return others[0]
    raise CarLoadError("no .acc/.ac mesh")


def load_texture(path: Path, max_size: int = MAX_TEX) -> tuple[np.ndarray, np.ndarray]:
    """SGI (or any Pillow-readable) texture -> (rgb float32 (h,w,3), alpha float32 (h,w))."""
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGBA")
    except Exception as e:  # noqa: BLE001 - any decoder failure means a broken texture
        raise CarLoadError(f"texture {path.name} unreadable: {type(e).__name__}: {e}") from None
    if max(im.size) > max_size:
        s = max_size / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    a = np.asarray(im, np.float32) / 255.0
    return np.ascontiguousarray(a[..., :3]), np.ascontiguousarray(a[..., 3])


def _find_file(folder: Path, name: str) -> Path | None:
    p = folder / name
    if p.is_file():
        return p
    low = name.lower()
    for q in folder.iterdir():
        if q.name.lower() == low:
            return q
    return None


def wheel_mesh(w: Wheel, right: bool, tex_rim: int, tex_rubber: int, seg: int = 20):
    """Cylinder tyre + textured rim disc on the outer face, dark disc on the inner face."""
    ang = np.linspace(0, 2 * xmath.PI, seg + 1)
    ca, sa = xmath.cos(ang), xmath.sin(ang)
    yo = w.y + (-w.width / 2 if right else w.width / 2)  # outer face
    yi = w.y - (-w.width / 2 if right else w.width / 2)
    out = -1.0 if right else 1.0
    P, N, UV, TX = [], [], [], []

    def pt(r, a_c, a_s, y):
        return [w.x + r * a_c, y, w.radius + r * a_s]

    for k in range(seg):
        c0, s0, c1, s1 = ca[k], sa[k], ca[k + 1], sa[k + 1]
        # tread (two triangles)
        a, b = pt(w.radius, c0, s0, yo), pt(w.radius, c1, s1, yo)
        c, d = pt(w.radius, c1, s1, yi), pt(w.radius, c0, s0, yi)
        n0, n1 = [c0, 0, s0], [c1, 0, s1]
        P += [[a, b, c], [a, c, d]]
        N += [[n0, n1, n1], [n0, n1, n0]]
        UV += [[[0, 0]] * 3] * 2
        TX += [tex_rubber] * 2
        # outer sidewall ring (rubber) and rim disc (textured), slightly inset
        ro, rr = w.radius, w.rim_radius
        yin = yo - out * 0.02
        a, b = pt(ro, c0, s0, yo), pt(ro, c1, s1, yo)
        c, d = pt(rr, c1, s1, yin), pt(rr, c0, s0, yin)
        ns = [0, out, 0]
        P += [[a, b, c], [a, c, d]]
        N += [[ns] * 3] * 2
        UV += [[[0, 0]] * 3] * 2
        TX += [tex_rubber] * 2
        # rim: UV in the top-left quadrant of tex-wheel.rgb (centre 0.25, 0.75)
        cen = [w.x, yin, w.radius]
        sc = 0.245 * (1 if right else -1)
        P += [[cen, d, c]]
        N += [[ns] * 3]
        UV += [[[0.25, 0.75], [0.25 + sc * c0, 0.75 + 0.245 * s0], [0.25 + sc * c1, 0.75 + 0.245 * s1]]]
        TX += [tex_rim]
        # inner face
        cen_i = [w.x, yi, w.radius]
        a, b = pt(ro, c0, s0, yi), pt(ro, c1, s1, yi)
        P += [[cen_i, a, b]]
        N += [[[0, -out, 0]] * 3]
        UV += [[[0, 0]] * 3]
        TX += [tex_rubber]
    return (np.array(P, np.float32), np.array(N, np.float32), np.array(UV, np.float32), np.array(TX, np.int32))


_LUMW = np.array([0.299, 0.587, 0.114], np.float32)


def _lum(rgb: np.ndarray) -> np.ndarray:
    """Luma of (..., 3) colours, summed in a fixed order (`rgb @ _LUMW` would go through BLAS)."""
    return xmath.dot3(rgb, _LUMW)


def _cluster_mask(rgb: np.ndarray, alpha: np.ndarray, dom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask of texels of the paint colour `dom` (chroma close, luminance within a band of the
    baked-in shading) and their luminance relative to it."""
    lum = _lum(rgb)
    ld = max(float(_lum(dom)), 1e-3)
    eps = 0.02  # chroma = direction of the RGB vector (shading changes length, not direction)
    dchroma = rgb / (xmath.norm3(rgb)[..., None] + eps) - dom / (xmath.norm3(dom) + eps)
    dc = xmath.norm3(dchroma)
    ratio = lum / ld
    sat_dom = float(dom.max() - dom.min())
    tol = 0.15 if sat_dom > 0.15 else 0.06
    m_c = np.clip((2 * tol - dc) / tol, 0, 1)
    lo, hi = (0.35, 1.6) if sat_dom > 0.15 else (0.7, 1.3)
    m_l = np.clip((ratio - lo) / 0.1, 0, 1) * np.clip((hi - ratio) / 0.1 + 1, 0, 1)
    if ld < 0.12:  # black/dark paint: chroma is meaningless, use plain RGB distance
        d = xmath.norm3(rgb - dom)
        m_c = np.clip((0.12 - d) / 0.06, 0, 1)
        m_l = np.ones_like(m_c)
        ratio = np.clip(0.6 + 0.4 * ratio, 0, 1.5)  # keep some of the shading of black paint
    m_a = np.clip((alpha - 0.2) / 0.2, 0, 1)  # only (nearly) transparent texels are excluded
    return (m_c * m_l * m_a).astype(np.float32), ratio.astype(np.float32)


def _paint_mask(rgb: np.ndarray, alpha: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Which texels are body paint, from the colours seen on the outside of the car (`samples`).

    The dominant colour (and a second livery colour when it covers at least 40% as much) is the
    paint; dark trim, grey glass, lights, transparent texels and small decals keep their colours.
    Returns (mask in [0,1], luminance relative to the paint colour, paint colours)."""
    q = np.clip((samples * 7.99).astype(np.int32), 0, 7)
    key = q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]
    lum_s = _lum(samples)
    sat_s = samples.max(1) - samples.min(1)
    valid = lum_s > 0.06  # unused black texture areas and trim are not the paint
    # mid greys are mostly glass, trim and interior: count them at half weight
    w = np.where((sat_s < 0.08) & (lum_s > 0.1) & (lum_s < 0.5), 0.5, 1.0) * valid
    counts = (
        np.bincount(key, weights=w, minlength=512) if valid.any() else np.bincount(key, minlength=512).astype(float)
    )
    k1 = int(np.argmax(counts))
    doms = [samples[key == k1].mean(0)]
    qb = np.stack(np.unravel_index(np.arange(512), (8, 8, 8)), 1)
    near1 = np.abs(qb - np.array(np.unravel_index(k1, (8, 8, 8)))).max(1) <= 1
    c1 = counts[near1].sum()
    rest = np.where(near1, 0, counts)
    k2 = int(np.argmax(rest))
    near2 = np.abs(qb - np.array(np.unravel_index(k2, (8, 8, 8)))).max(1) <= 1
    c2 = rest[near2].sum()
    d2 = samples[key == k2].mean(0) if (key == k2).any() else None
    if d2 is not None and c2 >= 0.4 * c1:
        l2, s2 = float(_lum(d2)), float(d2.max() - d2.min())
        if l2 > 0.12 and not (s2 < 0.08 and l2 < 0.5):
            doms.append(d2)
    mask = np.zeros(rgb.shape[:2], np.float32)
    ratio = np.ones(rgb.shape[:2], np.float32)
    for d in doms:
        m, r = _cluster_mask(rgb, alpha, d)
        better = m > mask
        ratio = np.where(better, r, ratio)
        mask = np.maximum(mask, m)
    return mask, ratio, doms


def _visible_uvs(pos: np.ndarray, uv: np.ndarray, tex: np.ndarray, paint: int, size: int = 96) -> np.ndarray:
    """UVs of the paint texture as seen from outside (12 views around and above the car), so the
    dominant colour estimate ignores cockpit/interior faces that are never seen."""
    ext = pos.reshape(-1, 3)
    c = 0.5 * (ext.max(0) + ext.min(0))
    r = 0.5 * xmath.vnorm(ext.max(0) - ext.min(0))
    out = []
    for el in (10.0, 40.0):
        for az in range(0, 360, 60):
            a, e = xmath.radians(az + el), xmath.radians(el)
            eye = c + 4 * r * np.array([xmath.cos(e) * xmath.cos(a), xmath.cos(e) * xmath.sin(a), xmath.sin(e)])
            cam = Camera.look_at(eye, c, 32.0, size, size)
            fr = rasterize(cam.to_cam(pos.reshape(-1, 3)).reshape(-1, 3, 3), size, size, cam.f)
            t = fr.tri.ravel()
            m = t >= 0
            t, b = t[m], fr.bary.reshape(-1, 3)[m]
            keep = tex[t] == paint
            out.append(xmath.bary3(uv[t[keep]], b[keep]))
    uvs = np.concatenate(out) if out else np.zeros((0, 2), np.float32)
    if uvs.shape[0] < 50:
        raise CarLoadError("body texture is not visible from outside")
    return uvs.astype(np.float32)


def _lights(params: dict[str, dict[str, str]], body_pos: np.ndarray, body_type: str) -> list:
    """Head/rear lamp positions: from the XML 'Graphic Objects/Light' sections where given, else
    a guess at the front/rear corners of the body (no headlamps on formula cars)."""
    out = []
    for sec, att in params.items():
        if sec.startswith("Graphic Objects/Light/") and "type" in att:
            kind = "head" if att["type"].startswith("head") else "rear"
            out.append(
                (kind, _num(att, "xpos", 0), _num(att, "ypos", 0), _num(att, "zpos", 0.6), _num(att, "size", 0.2))
            )
    ext = body_pos.reshape(-1, 3)
    xmax, xmin = float(ext[:, 0].max()), float(ext[:, 0].min())
    hw = 0.5 * float(ext[:, 1].max() - ext[:, 1].min())
    hz = float(ext[:, 2].max())
    kinds = {k for k, *_ in out}
    if "head" not in kinds and body_type != "formula car":
        out += [("head", xmax - 0.08, s * 0.68 * hw, 0.42 * hz, 0.22) for s in (1, -1)]
    if "rear" not in kinds:
        zr = max((z for k, _, _, z, _ in out if k == "rear"), default=0.55 * hz)
        out += [("rear", xmin + 0.08, s * 0.72 * hw, zr, 0.2) for s in (1, -1)]
    return out


def load_car(folder: Path) -> CarModel:
    """Load one TORCS car folder; raises CarLoadError/AC3DError with a short reason."""
    folder = Path(folder)
    mid = folder.name
    xml = folder / f"{mid}.xml"
    if not xml.is_file():
        raise CarLoadError(f"missing {mid}.xml")
    pname, params = _xml_params(xml)
    mesh_path = _main_mesh(folder, params)
    try:
        mesh = parse_ac3d(mesh_path)
    except AC3DError as e:
        raise CarLoadError(f"mesh {mesh_path.name}: {e}") from None

    # AC3D (x fwd, y up, z right) -> TORCS frame (x fwd, y left, z up)
    def conv(a):
        return np.stack([a[..., 0], -a[..., 2], a[..., 1]], -1)

    pos, nrm = conv(mesh.pos), conv(mesh.nrm)
    if not np.isfinite(pos).all():
        raise CarLoadError(f"mesh {mesh_path.name}: non-finite vertices")
    textures: list[np.ndarray] = []
    alphas: list[np.ndarray] = []
    for name in mesh.textures:
        p = _find_file(folder, name)
        if p is None:
            raise CarLoadError(f"texture {name} missing")
        rgb, a = load_texture(p)
        textures.append(rgb)
        alphas.append(a)
    tex = mesh.tex.copy()
    white = len(textures)
    textures.append(np.ones((1, 1, 3), np.float32))
    alphas.append(np.ones((1, 1), np.float32))
    tex[tex < 0] = white
    # material colours of untextured faces are folded into a per-face tint: TORCS cars are
    # fully textured, so untextured faces simply use their material rgb via a 1x1 texture
    if (mesh.tex < 0).any():
        for mi, mat in enumerate(mesh.materials):
            sel = (mesh.tex < 0) & (mesh.mat == mi)
            if sel.any() and mat.rgb != (1.0, 1.0, 1.0):
                textures.append(np.array(mat.rgb, np.float32).reshape(1, 1, 3))
                alphas.append(np.ones((1, 1), np.float32))
                tex[sel] = len(textures) - 1
    # paint texture: <id>.rgb if used, else the texture covering the most surface
    area = 0.5 * xmath.norm3(np.cross(pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]))
    per_tex = np.bincount(tex, weights=area, minlength=len(textures))
    names_low = [n.lower() for n in mesh.textures]
    paint = names_low.index(f"{mid}.rgb".lower()) if f"{mid}.rgb".lower() in names_low else int(np.argmax(per_tex))
    if not (tex == paint).any():
        raise CarLoadError("no textured body faces")
    uvs = _visible_uvs(pos, mesh.uv, tex, paint)

    samples = sample_bilinear(textures[paint], uvs.astype(np.float32))
    pmask, pratio, _ = _paint_mask(textures[paint], alphas[paint], samples)

    textures = [np.round(t * 255).astype(np.uint8) for t in textures]
    # the body texture carries the paint mask and relative paint luminance (x 1/170) as channels 4, 5
    textures[paint] = np.concatenate(
        [
            textures[paint],
            np.round(pmask * 255).astype(np.uint8)[..., None],
            np.round(np.clip(pratio, 0, 1.5) * 170).astype(np.uint8)[..., None],
        ],
        -1,
    )
    # wheels from the XML (TORCS draws them itself; they are not in the body mesh)
    n_body = pos.shape[0]
    wheel_tex = _find_file(folder, params.get("Graphic Objects", {}).get("wheel texture", "tex-wheel.rgb"))
    if wheel_tex is not None:
        rim_rgb, _ = load_texture(wheel_tex, 256)
    else:
        rim_rgb = np.full((4, 4, 3), 0.6, np.float32)
    textures.append(np.round(rim_rgb * 255).astype(np.uint8))
    t_rim = len(textures) - 1
    textures.append(np.array([15, 15, 17], np.uint8).reshape(1, 1, 3))
    t_rub = len(textures) - 1
    parts = [(pos, nrm, mesh.uv, tex)]
    for axle, side_sections in (
        ("Front Axle", ("Front Right Wheel", "Front Left Wheel")),
        ("Rear Axle", ("Rear Right Wheel", "Rear Left Wheel")),
    ):
        ax = params.get(axle)
        if not ax:
            continue
        xw = _num(ax, "xpos", 0.0)
        for sec_name in side_sections:
            sec = params.get(sec_name)
            if not sec:
                continue
            rim_d = _num(sec, "rim diameter", 15.0) * 0.0254
            tw = _num(sec, "tire width", 200.0) / 1000.0
            ratio = _num(sec, "tire height-width ratio", 0.5)
            w = Wheel(x=xw, y=_num(sec, "ypos", 0.8), radius=rim_d / 2 + tw * ratio, rim_radius=rim_d / 2, width=tw)
            parts.append(wheel_mesh(w, right=w.y < 0, tex_rim=t_rim, tex_rubber=t_rub))
    P = np.concatenate([p[0] for p in parts]).astype(np.float32)
    N = np.concatenate([p[1] for p in parts]).astype(np.float32)
    UV = np.concatenate([p[2] for p in parts]).astype(np.float32)
    TX = np.concatenate([p[3] for p in parts]).astype(np.int32)
    shiny = np.where(TX == paint, 1.0, np.where(TX == t_rub, 0.05, 0.4)).astype(np.float32)
    ext = P.reshape(-1, 3)
    make, model, body = MODEL_TABLE.get(mid, (None, None, None))
    if make is None:
        cat = params.get("Car", {}).get("category", "").lower()
        make, model = "TORCS", pname or mid
        body = "buggy" if "offroad" in cat else "formula car" if "ow" in cat else "race car"
    lights = _lights(params, P[:n_body], body)
    return CarModel(
        lights=lights,
        model_id=mid,
        folder=str(folder),
        make=make,
        model=model,
        body_type=body,
        pos=P,
        nrm=N,
        uv=UV,
        tex=TX,
        textures=textures,
        paint_tex=paint,
        shiny=shiny,
        length=float(ext[:, 0].max() - ext[:, 0].min()),
        width=float(ext[:, 1].max() - ext[:, 1].min()),
        height=float(ext[:, 2].max()),
        n_body_tris=n_body,
    )
