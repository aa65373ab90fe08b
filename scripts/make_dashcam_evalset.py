"""A small real-photo eval set from the dashcam frames in ../shared/fixtures/dashcam: hand-drawn
boxes around each car (colour, view and body type labelled by eye), cropped with a margin into
`data/evalsets/dashcam/` with a labels.csv. Nine crops (4 black, 5 white sedans, all from behind):
a sanity check of transfer to real photos, far too small to rank close models.

    python scripts/make_dashcam_evalset.py [--src ../shared/fixtures/dashcam] [--out data/evalsets/dashcam]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from PIL import Image

# frame -> [(x0, y0, x1, y1) in the 1280x720 frame, colour]; view rear, body sedan for all
BOXES = {
    "test1.jpg": [((815, 410, 945, 495), "black"), ((1050, 405, 1270, 505), "white")],
    "test3.jpg": [((870, 412, 962, 468), "white")],
    "test4.jpg": [((812, 410, 942, 495), "black"), ((1040, 402, 1252, 502), "white")],
    "test5.jpg": [((812, 408, 938, 488), "black"), ((1083, 400, 1280, 512), "white")],
    "test6.jpg": [((810, 410, 945, 498), "black"), ((1010, 406, 1200, 500), "white")],
}


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=root.parent / "shared" / "fixtures" / "dashcam")
    ap.add_argument("--out", type=Path, default=root / "data" / "evalsets" / "dashcam")
    a = ap.parse_args()
    if not a.src.is_dir():
        print(f"make_dashcam_evalset: {a.src} not found (the dashcam fixtures live in ../shared)", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for frame, boxes in BOXES.items():
        with Image.open(a.src / frame) as im:
            im = im.convert("RGB")
            for i, ((x0, y0, x1, y1), color) in enumerate(boxes):
                mx, my = int((x1 - x0) * 0.12), int((y1 - y0) * 0.12)
                crop = im.crop((max(0, x0 - mx), max(0, y0 - my), min(im.width, x1 + mx), min(im.height, y1 + my)))
                name = f"{Path(frame).stem}_{i}.jpg"
                crop.save(a.out / name, quality=95)
                rows.append({"file": name, "color": color, "view": "rear", "body_type": "sedan"})
    with open(a.out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "color", "view", "body_type"])
        w.writeheader()
        w.writerows(rows)
    print(f"make_dashcam_evalset: {len(rows)} crops into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
