"""The procedural demo set: simple drawn cars with known labels (the toy set when no TORCS models are
there) and the contact sheet of what a source ingested."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from carsearch.core import imaging
from carsearch.core.io import atomic_path
from carsearch.core.vocab import VIEWS

COLOR_RGB = {
    "red": (200, 30, 35),
    "blue": (30, 70, 190),
    "green": (30, 140, 60),
    "yellow": (235, 200, 30),
    "white": (235, 235, 235),
    "black": (25, 25, 28),
    "silver": (175, 180, 188),
    "grey": (110, 112, 118),
    "orange": (235, 120, 25),
    "purple": (110, 40, 150),
    "brown": (110, 70, 40),
}


# ------------------------------------------------------------------ procedural demo set
DEMO_MODELS = {  # model_id: (body_type, make, model, proportions)
    "demo-sedan-a": ("sedan", "Demo", "Sedan A", dict(length=1.0, height=0.32, cabin=(0.25, 0.75), roof=0.2)),
    "demo-sedan-b": ("sedan", "Demo", "Sedan B", dict(length=0.95, height=0.30, cabin=(0.3, 0.72), roof=0.18)),
    "demo-suv": ("suv", "Demo", "SUV", dict(length=0.95, height=0.45, cabin=(0.2, 0.92), roof=0.22)),
    "demo-pickup": ("pickup", "Demo", "Pickup", dict(length=1.05, height=0.38, cabin=(0.15, 0.5), roof=0.22)),
    "demo-hatch": ("hatchback", "Demo", "Hatch", dict(length=0.8, height=0.33, cabin=(0.2, 0.95), roof=0.2)),
    "demo-van": ("van", "Demo", "Van", dict(length=1.0, height=0.6, cabin=(0.05, 0.98), roof=0.1)),
}


def _shade(rgb, f):
    return tuple(max(0, min(255, int(c * f))) for c in rgb)


@dataclass
class _Pen:
    """What the parts of one drawn car share: the canvas, its paint and its proportions."""

    d: ImageDraw.ImageDraw
    paint: tuple
    body_type: str
    pr: dict
    base: float  # the wheels' baseline
    H: float  # body height
    r: float  # wheel radius
    dark: tuple = (20, 20, 22)
    glass: tuple = (60, 80, 100)


def draw_demo_car(model_id: str, color: str, view: str, size: int, rng: random.Random) -> Image.Image:
    body_type, _, _, pr = DEMO_MODELS[model_id]
    S = size * 4  # supersample
    img, d = _road(S, rng)
    paint = _shade(COLOR_RGB[color], rng.uniform(0.85, 1.1))
    cx, base = S * rng.uniform(0.42, 0.58), S * rng.uniform(0.78, 0.88)
    scale = S * rng.uniform(0.6, 0.8)
    L, H = pr["length"] * scale, pr["height"] * scale
    pen = _Pen(d, paint, body_type, pr, base, H, H * 0.35)
    if view == "side":
        flip = rng.random() < 0.5
        _side(pen, cx - L / 2, cx + L / 2, flip)
    elif view in ("front", "rear"):
        w = L * 0.62
        _face(pen, cx - w / 2, cx + w / 2, rear=view == "rear")
    else:  # three-quarter: a foreshortened side plus the front face
        x0 = cx - L * 0.45
        _side(pen, x0, x0 + L * 0.6)
        _face(pen, x0 + L * 0.55, x0 + L * 0.95, rear=False)
    return _camera(img, size, rng)


def _road(S: int, rng: random.Random) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """An S x S sky over a road whose lane markings converge to a vanishing point."""
    sky = _shade((150, 185, 220), rng.uniform(0.6, 1.1))
    img = Image.new("RGB", (S, S), sky)
    d = ImageDraw.Draw(img)
    horizon = int(S * rng.uniform(0.35, 0.5))
    d.rectangle([0, horizon, S, S], fill=_shade((95, 95, 100), rng.uniform(0.7, 1.2)))
    for k in range(-2, 3):
        x0 = S / 2 + k * S * 0.45
        d.line([(S / 2 + k * S * 0.05, horizon), (x0, S)], fill=(230, 230, 220), width=max(2, S // 120))
    return img, d


def _side(pen: _Pen, x0: float, x1: float, flip: bool = False) -> None:
    """The car seen side on between x0 and x1 (cabin towards the back, or the front when `flip`)."""
    d, pr, base, H, r = pen.d, pen.pr, pen.base, pen.H, pen.r
    length = x1 - x0
    c0, c1 = pr["cabin"]
    if flip:
        c0, c1 = 1 - c1, 1 - c0
    d.rounded_rectangle([x0, base - H - r * 0.3, x1, base - r * 0.3], radius=int(H * 0.2), fill=pen.paint)
    rt = base - H - r * 0.3
    roof_h = H * (0.9 if pen.body_type in ("van", "suv") else 0.75)
    cab = [
        (x0 + c0 * length, rt),
        (x0 + (c0 + pr["roof"]) * length, rt - roof_h),
        (x0 + (c1 - pr["roof"] * 0.6) * length, rt - roof_h),
        (x0 + c1 * length, rt),
    ]
    d.polygon(cab, fill=pen.paint)
    inset = [
        (cab[0][0] + length * 0.04, rt),
        (cab[1][0] + length * 0.02, rt - roof_h * 0.8),
        (cab[2][0] - length * 0.02, rt - roof_h * 0.8),
        (cab[3][0] - length * 0.04, rt),
    ]
    d.polygon(inset, fill=pen.glass)
    for wx in (x0 + 0.2 * length, x0 + 0.8 * length):
        d.ellipse([wx - r, base - 2 * r, wx + r, base], fill=pen.dark)
        d.ellipse([wx - r * 0.5, base - 1.5 * r, wx + r * 0.5, base - 0.5 * r], fill=(150, 150, 155))


def _face(pen: _Pen, x0: float, x1: float, rear: bool) -> None:
    """The car's front (or rear) between x0 and x1: body, windscreen, lamps, grille or plate, wheels."""
    d, base, H, r = pen.d, pen.base, pen.H, pen.r
    w = x1 - x0
    top = base - H - r * 0.3
    d.rounded_rectangle([x0, top, x1, base - r * 0.2], radius=int(H * 0.15), fill=pen.paint)
    roof_h = H * (0.9 if pen.body_type in ("van", "suv") else 0.7)
    d.polygon(
        [(x0 + w * 0.12, top), (x0 + w * 0.22, top - roof_h), (x1 - w * 0.22, top - roof_h), (x1 - w * 0.12, top)],
        fill=pen.paint,
    )
    d.polygon(
        [
            (x0 + w * 0.17, top),
            (x0 + w * 0.25, top - roof_h * 0.85),
            (x1 - w * 0.25, top - roof_h * 0.85),
            (x1 - w * 0.17, top),
        ],
        fill=pen.glass,
    )
    lamp = (200, 20, 20) if rear else (250, 245, 200)
    ly = top + H * 0.25
    d.ellipse([x0 + w * 0.05, ly, x0 + w * 0.22, ly + H * 0.22], fill=lamp)
    d.ellipse([x1 - w * 0.22, ly, x1 - w * 0.05, ly + H * 0.22], fill=lamp)
    if not rear:
        d.rectangle([x0 + w * 0.3, ly, x1 - w * 0.3, ly + H * 0.25], fill=(30, 30, 35))
    else:
        d.rectangle([x0 + w * 0.35, ly + H * 0.35, x1 - w * 0.35, ly + H * 0.5], fill=(230, 230, 210))
    for wx in (x0 + w * 0.02, x1 - w * 0.2):
        d.rectangle([wx, base - r * 0.8, wx + w * 0.18, base], fill=pen.dark)


def _camera(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """The supersampled drawing as a camera sees it: `size` px, sometimes blurred, with sensor noise."""
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    import numpy as np

    arr = np.asarray(img, dtype=np.float32)
    arr += np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 8), arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def demo_items(n_images: int, size: int, seed: int, colors: list[str] | None = None, views: list[str] | None = None):
    """A balanced, deterministic set of (name, jpeg bytes, labels, None) cycling models x colours x views."""
    colors = list(colors or ("red", "blue", "green", "yellow", "white", "black", "silver", "orange"))
    views = list(views or VIEWS)
    for bad in [c for c in colors if c not in COLOR_RGB] + [v for v in views if v not in VIEWS]:
        raise ValueError(f"demo set: unknown colour/view {bad!r}")
    combos = [(m, c, v) for m in DEMO_MODELS for c in colors for v in views]
    for i in range(n_images):
        m, c, v = combos[i % len(combos)]
        rng = random.Random(f"{seed}-{i}")
        img = draw_demo_car(m, c, v, size, rng)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(80, 95))
        body_type, make, model, _ = DEMO_MODELS[m]
        labels = {
            "model_id": m,
            "make": make,
            "model": model,
            "body_type": body_type,
            "color": c,
            "view": v,
            "scene": "day",
        }
        yield f"demo/{i:05d}.jpg", buf.getvalue(), labels, None


def contact_sheet(items: list[tuple[Path, dict]], out_png: Path, n: int = 48, cols: int = 8, thumb: int = 128) -> None:
    """A PNG grid of sample images with a short label line under each."""
    items = items[:n]
    rows = max(1, math.ceil(len(items) / cols))
    cell_h = thumb + 14
    sheet = Image.new("RGB", (cols * thumb, rows * cell_h), "white")
    d = ImageDraw.Draw(sheet)
    for k, (path, labels) in enumerate(items):
        t = imaging.open_rgb(path, max_edge=thumb)
        x, y = (k % cols) * thumb, (k // cols) * cell_h
        sheet.paste(t, (x, y))
        lab = labels or {}
        text = " ".join(str(lab.get(key, "")) for key in ("color", "body_type", "view"))[:24]
        d.text((x + 2, y + thumb + 1), text, fill=(0, 0, 0))
    with atomic_path(out_png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
