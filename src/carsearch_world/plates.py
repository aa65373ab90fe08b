"""Number plates: plate strings in a regional format (US, EU, UK) and their textures, the text drawn
with DejaVu Sans (Debian fonts-dejavu-core) so it is legible close up and blurs away with distance
like a real plate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q: as on most real plates
DIGITS = "0123456789"
# region -> (pattern: L letter, D digit, other chars kept; plate size (m); background; text colour)
FORMATS: dict[str, tuple[str, tuple[float, float], tuple[int, int, int], tuple[int, int, int]]] = {
    "us": ("DLLL-DDD", (0.305, 0.152), (240, 240, 236), (20, 40, 110)),
    "eu": ("LL-DDD-LL", (0.52, 0.11), (246, 246, 246), (18, 18, 18)),
    "uk": ("LLDD LLL", (0.52, 0.11), (248, 248, 248), (12, 12, 12)),
}
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_NAME = "DejaVuSansCondensed-Bold.ttf"
TEX_W = 256  # plate texture width (px); height follows the plate's aspect ratio


def plate_text(rng: np.random.Generator, region: str) -> str:
    """A random plate string in `region`'s format."""
    if region not in FORMATS:
        raise ValueError(f"plate region {region!r}: choose from {sorted(FORMATS)}")
    out = []
    for ch in FORMATS[region][0]:
        if ch == "L":
            out.append(LETTERS[int(rng.integers(len(LETTERS)))])
        elif ch == "D":
            out.append(DIGITS[int(rng.integers(len(DIGITS)))])
        else:
            out.append(ch)
    return "".join(out)


def plate_size(region: str) -> tuple[float, float]:
    return FORMATS[region][1]


_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def _font(px: int) -> ImageFont.FreeTypeFont:
    if px in _FONTS:
        return _FONTS[px]
    for d in FONT_DIRS:
        if (d / FONT_NAME).is_file():
            return _FONTS.setdefault(px, ImageFont.truetype(str(d / FONT_NAME), px))
    raise FileNotFoundError(
        f"{FONT_NAME} not found in {[str(d) for d in FONT_DIRS]}: apt-get install fonts-dejavu-core"
    )


def plate_texture(text: str, region: str, rear: bool = False) -> np.ndarray:
    """RGB uint8 texture of a plate: background, border, the text centred (UK rear plates are yellow,
    EU plates carry the blue band on the left)."""
    _, (w_m, h_m), bg, fg = FORMATS[region]
    W = TEX_W
    H = max(16, int(round(W * h_m / w_m)))
    if region == "uk" and rear:
        bg = (250, 205, 20)
    img = Image.new("RGB", (W, H), bg)
    dr = ImageDraw.Draw(img)
    dr.rectangle([1, 1, W - 2, H - 2], outline=(40, 40, 40), width=2)
    x0 = 4
    if region == "eu":
        band = int(W * 0.08)
        dr.rectangle([2, 2, 2 + band, H - 3], fill=(20, 50, 160))
        x0 = band + 4
    font = _font(int(H * (0.62 if region == "us" else 0.8)))
    box = dr.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    scale = min(1.0, (W - x0 - 6) / max(tw, 1))
    if scale < 1.0:
        font = _font(max(8, int(font.size * scale)))
        box = dr.textbbox((0, 0), text, font=font)
        tw, th = box[2] - box[0], box[3] - box[1]
    tx = x0 + (W - x0 - tw) // 2 - box[0]
    ty = (H - th) // 2 - box[1] + (int(H * 0.08) if region == "us" else 0)
    dr.text((tx, ty), text, fill=fg, font=font)
    if region == "us":
        small = _font(max(8, int(H * 0.16)))
        dr.text((W // 2, 3), "STATE", fill=(150, 30, 30), font=small, anchor="mt")
    return np.asarray(img, np.uint8).copy()


LEGIBLE_PX = 10.0  # a plate this many pixels tall (its characters ~6 px) can be read; smaller cannot


def plate_seen(verts: dict[str, np.ndarray], normals: dict[str, np.ndarray], cam) -> tuple[str | None, float]:
    """Which plate ("front"/"rear") a camera sees best and how tall it looks (px, x the cosine of the
    viewing angle): `verts` world-space corners of each plate, `normals` their outward directions."""
    best, best_px = None, 0.0
    for side, v in verts.items():
        if not len(v):
            continue
        centre = v.mean(0)
        to_cam = cam.pos - centre
        dist = float(np.sqrt((to_cam * to_cam).sum()))
        facing = float((normals[side] * to_cam).sum()) / max(dist, 1e-9)
        pc = cam.to_cam(v)
        if facing <= 0.1 or (pc[:, 2] <= cam.near).any():
            continue
        uv = cam.project(pc)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        if not inside.all():
            continue
        px = float(uv[:, 1].max() - uv[:, 1].min()) * min(1.0, facing * 1.5)
        if px > best_px:
            best, best_px = side, px
    return best, round(best_px, 1)
