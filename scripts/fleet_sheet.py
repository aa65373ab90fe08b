"""Contact sheets of the street world for docs/img/: every body type x its first 4 shape variants (plus
taxi and police liveries), and a strip of corridor frames (the same vehicles at several cameras).
Usage: python scripts/fleet_sheet.py [out_dir]   (default docs/img)"""

import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from carsearch_world.corridor import render_corridor
from carsearch_world.designs import TYPES, design
from carsearch_world.fleet import make_vehicle
from carsearch_world.plates import plate_text
from carsearch_world.scene import PALETTE, render_scene, sample_scene
from carsearch_world.street import build_fleet

root = Path(__file__).resolve().parents[1]
out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs/img"
out.mkdir(parents=True, exist_ok=True)
font = ImageFont.load_default(size=12)
COLS = ("white", "black", "silver", "grey", "red", "blue", "white", "green")
VIEWS = ("three-quarter", "front", "side", "rear")
rng = np.random.default_rng(0)
rows = [(t, v, None) for t in TYPES for v in range(4)] + [("sedan", 1, "police"), ("suv", 2, "police")]
rows += [("sedan", 2, "taxi"), ("wagon", 0, "taxi")]
T, cols = 192, 8
sheet = Image.new("RGB", (cols * T, ((len(rows) + cols - 1) // cols) * (T + 16)), "white")
dr = ImageDraw.Draw(sheet)
for i, (t, v, liv) in enumerate(rows):
    car = make_vehicle(design(t, v), plate_text(rng, "us"), "us", liv)
    col = {"police": "white", "taxi": "yellow"}.get(liv, COLS[(i * 5) % len(COLS)])
    spec = sample_scene(np.random.default_rng(i), col, VIEWS[i % 4], "pole", (92, 95), (0.8, 0.9))
    spec.time, spec.weather, spec.fog_density, spec.lights, spec.exposure = "day", "", 0.0, False, 1.0
    spec.paint = PALETTE[col]
    im = render_scene(car, spec, T)
    x, y = (i % cols) * T, (i // cols) * (T + 16)
    sheet.paste(im, (x, y))
    lab = car.labels()
    dr.text((x + 3, y + T + 1), f"{t} v{v}{' ' + liv if liv else ''} | {col} | {lab['plate']}", fill="black", font=font)
sheet.save(out / "street_fleet.png", optimize=True)
fleet = build_fleet(
    0,
    120,
    {t: 1.0 for t in TYPES},
    {"white": 0.3, "black": 0.2, "grey": 0.2, "silver": 0.15, "red": 0.1, "blue": 0.05},
    {"taxi": 0.1, "police": 0.05},
)
with TemporaryDirectory() as d:
    items = render_corridor(
        fleet, Path(d), seed=3, sessions=1, cameras=4, frames_per_camera=4, interval_s=2.0, size=(320, 240), workers=2
    )
    pick = [it for it in items if it[1]["frame_index"] in (1, 3)]
    strip = Image.new("RGB", (4 * 320, 2 * 256), "white")
    ds = ImageDraw.Draw(strip)
    for k, (p, lab, boxes, _) in enumerate(pick[:8]):
        im = Image.open(p).convert("RGB")
        di = ImageDraw.Draw(im)
        for b in boxes:
            di.rectangle((b["x1"], b["y1"], b["x2"] - 1, b["y2"] - 1), outline=(255, 220, 0))
            di.text((b["x1"], max(0, b["y1"] - 11)), b["labels"]["identity"][-3:], fill=(255, 220, 0), font=font)
        x, y = (k // 2) * 320, (k % 2) * 256
        strip.paste(im, (x, y))
        ds.text((x + 3, y + 241), f"{lab['camera']} {lab['time'][11:19]} {lab['scene']}", fill="black", font=font)
    strip.save(out / "street_corridor.png", optimize=True)
print(f"wrote {out / 'street_fleet.png'} and {out / 'street_corridor.png'}")
