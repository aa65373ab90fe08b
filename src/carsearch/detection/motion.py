"""Direction and speed of a video track from its member boxes (docs/search/motion.md).

Boxes cut by the frame's edge are set aside (a box touching an edge of the frame, `frame` = its
width and height where known; the vehicle's contact point and size are then the edge's, not the
vehicle's), unless fewer than two whole boxes remain. Each box's ground contact point (the bottom
centre) and its size are fitted linearly in time (least squares over all members, so one jittery box
does not decide).

Image direction (no camera geometry): `stopped` when the contact point moves less than `STILL` box
sizes a second both ways (a rate, so a short track of a moving car is not taken for a parked one).
Else `towards` / `away` when the contact point moves down / up the image (a vehicle coming closer to
a camera above the road is seen lower) or the box grows / shrinks (it comes closer / goes away), by
at least a `SLIDE_RATIO`-th of its sideways slide (in box sizes), else `right` / `left`.

With a ground homography (conf/cameras.yaml: pixels -> metres east, north) the contact points are
taken to the ground and fitted there: speed in km/h, a compass heading, and the direction is the
ground velocity against the camera's own axis on the ground (where the image's centre column runs
away from the camera): within 45° of it `away`, of its reverse `towards`, else `right` / `left`.
A camera with only a `heading` (where it looks) gets the compass heading of its image direction;
others speed in px/s.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from carsearch.core.schema import Cameras, CameraSettings, load_cameras

DIRECTIONS = ("left", "right", "towards", "away", "stopped")
STILL, SLIDE_RATIO = 0.5, 3.0  # box sizes a second; sideways against depth (module docstring)
STILL_KMH = 3.0  # on a camera with a homography: slower is `stopped`
EDGE = 1.0  # px: a box this close to the frame's edge is cut by it
_TURN = {"away": 0.0, "right": 90.0, "towards": 180.0, "left": 270.0}
NONE = {"direction": None, "speed": None, "speed_unit": None, "heading": None, "compass": None}
COMPASS = ("north", "east", "south", "west")  # a heading's quarter: north is [315, 45)


def compass(heading: float | None) -> str | None:
    """The quarter of a compass heading (degrees, 0 = north): north, east, south or west."""
    return None if heading is None else COMPASS[int(((float(heading) + 45.0) % 360.0) // 90.0) % 4]


def cameras(root: str | Path) -> Cameras:
    """The repo's conf/cameras.yaml (typed; none: no camera has ground geometry)."""
    return load_cameras(Path(root) / "conf" / "cameras.yaml")


def _slope(t: np.ndarray, v: np.ndarray) -> float:
    tc = t - t.mean()
    return float((tc * (v - v.mean())).sum() / (tc * tc).sum())


def _whole(b: np.ndarray, frame: tuple[float, float] | None) -> np.ndarray:
    """Which boxes do not touch the frame's edge (left / top always known; right / bottom with `frame`)."""
    ok = (b[:, 0] > EDGE) & (b[:, 1] > EDGE)
    if frame is not None:
        ok &= (b[:, 2] < frame[0] - EDGE) & (b[:, 3] < frame[1] - EDGE)
    return ok


def _edge_slopes(t, b: np.ndarray, frame) -> tuple[float, float]:
    """(vx, vy) of boxes cut by the frame's edge: of the sides no box has cut (the right side when the
    left is cut, the top when the bottom is), else of the contact point."""
    W, H = frame if frame is not None else (float("inf"), float("inf"))
    cut_l, cut_r = (b[:, 0] <= EDGE).any(), (b[:, 2] >= W - EDGE).any()
    cut_t, cut_b = (b[:, 1] <= EDGE).any(), (b[:, 3] >= H - EDGE).any()
    x = b[:, 2] if cut_l and not cut_r else b[:, 0] if cut_r and not cut_l else (b[:, 0] + b[:, 2]) / 2
    y = b[:, 1] if cut_b and not cut_t else b[:, 3]
    return _slope(t, x), _slope(t, y)


def _image_direction(t, b, whole: bool, frame) -> tuple[str, float, float]:
    """(direction, vx, vy) from the contact points' and (`whole`: no box is cut by the frame's edge)
    the box sizes' fits (module docstring)."""
    w, h = np.maximum(b[:, 2] - b[:, 0], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)
    vx, vy = (_slope(t, (b[:, 0] + b[:, 2]) / 2), _slope(t, b[:, 3])) if whole else _edge_slopes(t, b, frame)
    size = float(np.sqrt(w * h).mean())
    slide, down = vx / float(w.mean()), vy / float(h.mean())
    grow = _slope(t, np.log(np.sqrt(w * h))) if whole else 0.0  # relative growth a second
    if math.hypot(vx, vy) / size < STILL and abs(grow) < STILL / 4:
        return "stopped", vx, vy
    # the two depth cues agree in sign for a vehicle on the road; the larger decides
    depth = down if abs(down) >= abs(grow) else grow
    if abs(depth) * SLIDE_RATIO >= abs(slide):
        return ("towards" if depth > 0 else "away"), vx, vy
    return ("right" if slide > 0 else "left"), vx, vy


def _ground(H: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.c_[x, y, np.ones_like(x)] @ H.T
    return g[:, 0] / g[:, 2], g[:, 1] / g[:, 2]


def _ground_motion(H, t, cx, foot, axis_at) -> dict:
    """Speed (km/h), heading and direction from the contact points on the ground (module docstring)."""
    east, north = _ground(H, cx, foot)
    ve, vn = _slope(t, east), _slope(t, north)
    kmh = math.hypot(ve, vn) * 3.6
    if kmh < STILL_KMH:
        return {"direction": "stopped", "speed": round(kmh, 1), "speed_unit": "km/h", "heading": None}
    heading = math.degrees(math.atan2(ve, vn)) % 360
    # the camera's axis on the ground: down the image's centre column, from its foot up the frame
    ax, ay = _ground(H, np.array([axis_at[0]] * 2), np.array([axis_at[1], axis_at[1] * 0.9]))
    axis = math.degrees(math.atan2(ax[1] - ax[0], ay[1] - ay[0])) % 360
    turn = (heading - axis) % 360
    way = (
        "away" if turn <= 45 or turn >= 315 else "towards" if 135 <= turn <= 225 else "right" if turn < 180 else "left"
    )
    return {"direction": way, "speed": round(kmh, 1), "speed_unit": "km/h", "heading": round(heading, 1)}


def track_motion(
    members: list[dict], camera: CameraSettings | None = None, frame: tuple[float, float] | None = None
) -> dict:
    """{direction, speed, speed_unit ("km/h" or "px/s"), heading (compass deg or None), compass (its
    quarter: north, east, south, west)} of a track's members (each {"box": [x1, y1, x2, y2], "offset":
    seconds}); all None under two timed boxes. `frame`: the frame's (width, height) where known (boxes
    cut by its edge are set aside)."""
    out = _motion(members, camera, frame)
    return out | {"compass": compass(out["heading"])}


def _motion(members: list[dict], camera: CameraSettings | None, frame: tuple[float, float] | None) -> dict:
    ms = [m for m in members if m.get("box") is not None and m.get("offset") is not None]
    if len(ms) < 2:
        return dict(NONE)
    t = np.array([float(m["offset"]) for m in ms])
    b = np.array([[float(v) for v in m["box"]] for m in ms])
    ok = _whole(b, frame)
    whole = bool(ok.sum() >= 2 and np.ptp(t[ok]) > 0)
    if whole:
        t, b = t[ok], b[ok]
    if float(np.ptp(t)) <= 0:
        return dict(NONE)
    direction, vx, vy = _image_direction(t, b, whole, frame)
    if camera is not None and camera.homography is not None:
        cx, foot = (b[:, 0] + b[:, 2]) / 2, b[:, 3]
        known = frame is not None and math.isfinite(frame[0]) and math.isfinite(frame[1])
        axis_at = (frame[0] / 2, frame[1]) if known else (float(cx.mean()), float(foot.max()))
        out = _ground_motion(np.array(camera.homography, float), t, cx, foot, axis_at)
        if not whole and out["direction"] != "stopped":  # the ground point is the frame's edge's
            out["direction"] = direction
        return out
    out = {"direction": direction, "speed": round(math.hypot(vx, vy), 1), "speed_unit": "px/s", "heading": None}
    if camera is not None and camera.heading is not None and direction != "stopped":
        out["heading"] = round((camera.heading + _TURN[direction]) % 360, 1)
    return out


def frame_size(rows: list[dict]) -> tuple[float, float] | None:
    """A video's frame (width, height): the rows' own `frame_width` / `frame_height` where they have
    them, else the furthest right and bottom box edges when two or more boxes reach each (boxes cut
    by the frame's edge end there); None when neither is known."""
    ws = [r.get("frame_width") for r in rows if r.get("frame_width")]
    hs = [r.get("frame_height") for r in rows if r.get("frame_height")]
    if ws and hs:
        return float(max(ws)), float(max(hs))
    boxes = [r["box"] for r in rows if r.get("box") is not None]
    if not boxes:
        return None
    x2, y2 = np.array([bx[2] for bx in boxes], float), np.array([bx[3] for bx in boxes], float)
    W = float(x2.max()) if (x2 >= x2.max() - 0.5).sum() >= 2 else float("inf")
    H = float(y2.max()) if (y2 >= y2.max() - 0.5).sum() >= 2 else float("inf")
    return W, H
