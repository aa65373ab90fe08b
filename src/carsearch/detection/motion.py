"""Direction and speed of a video track from its member boxes (docs/search/motion.md).

Each box's ground contact point (the bottom centre) and its height are fitted linearly in time
(least squares over all members, so one jittery box does not decide). The direction in the image:
`towards` / `away` when the contact point moves down / up the image (a vehicle coming closer to a
camera above the road is seen lower) by at least `DEPTH_MIN` box heights over the track, and by at
least a `SLIDE_RATIO`-th of its sideways slide (in box widths), else `right` / `left`; `stopped`
when it moves less than `STILL` box sizes both ways. The box's height is not used for depth: a box
clipped by the frame's edge grows as the vehicle enters, whichever way it goes. Speed is the contact point's speed in px/s, or,
where conf/cameras.yaml gives the camera a ground homography (pixels -> metres east, north), in
km/h with a compass heading; a camera with only a `heading` (where it looks) gets the compass
heading of its image direction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from carsearch.core.schema import Cameras, CameraSettings, load_cameras

DIRECTIONS = ("left", "right", "towards", "away", "stopped")
STILL, DEPTH_MIN, SLIDE_RATIO = 0.3, 0.5, 4.0  # box sizes over the track's span (module docstring)
_TURN = {"away": 0.0, "right": 90.0, "towards": 180.0, "left": 270.0}
NONE = {"direction": None, "speed": None, "speed_unit": None, "heading": None}


def cameras(root: str | Path) -> Cameras:
    """The repo's conf/cameras.yaml (typed; none: no camera has ground geometry)."""
    return load_cameras(Path(root) / "conf" / "cameras.yaml")


def _slope(t: np.ndarray, v: np.ndarray) -> float:
    tc = t - t.mean()
    return float((tc * (v - v.mean())).sum() / (tc * tc).sum())


def track_motion(members: list[dict], camera: CameraSettings | None = None) -> dict:
    """{direction, speed, speed_unit ("km/h" or "px/s"), heading (compass deg or None)} of a track's
    members (each {"box": [x1, y1, x2, y2], "offset": seconds}); all None under two timed boxes."""
    ms = [m for m in members if m.get("box") is not None and m.get("offset") is not None]
    t = np.array([float(m["offset"]) for m in ms])
    if len(ms) < 2 or float(t.max() - t.min()) <= 0:
        return dict(NONE)
    b = np.array([[float(v) for v in m["box"]] for m in ms])
    cx, foot = (b[:, 0] + b[:, 2]) / 2, b[:, 3]
    w, h = np.maximum(b[:, 2] - b[:, 0], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)
    span = float(t.max() - t.min())
    vx, vy = _slope(t, cx), _slope(t, foot)
    slide, depth = vx * span / float(w.mean()), vy * span / float(h.mean())
    if abs(slide) < STILL and abs(depth) < STILL:
        direction = "stopped"
    elif abs(depth) >= max(DEPTH_MIN, abs(slide) / SLIDE_RATIO):
        direction = "towards" if depth > 0 else "away"
    else:
        direction = "right" if slide > 0 else "left"
    out = {"direction": direction, "speed": round(math.hypot(vx, vy), 1), "speed_unit": "px/s", "heading": None}
    if camera is not None and camera.homography is not None:
        H = np.array(camera.homography, float)
        g = np.c_[cx, foot, np.ones_like(cx)] @ H.T
        east, north = g[:, 0] / g[:, 2], g[:, 1] / g[:, 2]
        ve, vn = _slope(t, east), _slope(t, north)
        out.update(speed=round(math.hypot(ve, vn) * 3.6, 1), speed_unit="km/h")
        out["heading"] = None if direction == "stopped" else round(math.degrees(math.atan2(ve, vn)) % 360, 1)
    elif camera is not None and camera.heading is not None and direction != "stopped":
        out["heading"] = round((camera.heading + _TURN[direction]) % 360, 1)
    return out
