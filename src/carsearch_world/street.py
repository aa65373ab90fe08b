"""The street world's fleet and its single-vehicle renders.

`build_fleet` draws vehicle identities (type, shape variant, colour from a configurable mix, livery,
plate) and `render_fleet` renders close-up traffic-camera views of them (each image one identity,
body types spread evenly, views and cameras balanced), labelled like the TORCS renders plus variant,
livery, plate and identity. Byte-identical for a seed whatever the worker count.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carsearch_world.designs import LIVERY_BODIES, LIVERY_COLOR, TYPES, design
from carsearch_world.fleet import make_vehicle, plate_corners
from carsearch_world.plates import FORMATS, LEGIBLE_PX, plate_seen, plate_text
from carsearch_world.scene import (
    COLORS,
    PALETTE,
    VIEWS,
    encode_jpeg,
    make_camera,
    render_scene,
    sample_scene,
    view_from_azimuth,
)
from carsearch_world.torcs import CarModel

CAMERAS = ("pole", "dashcam")
# detector-style class of a body type (the boxes contract's "class")
BOX_CLASS = {"bus": "bus", "box truck": "truck", "motorcycle": "motorcycle", "van": "van", "pickup": "pickup"}


@dataclass(frozen=True)
class Identity:
    identity: str  # "v00042"
    body_type: str
    variant: int
    color: str
    livery: str | None
    plate: str
    region: str


def _weights(table: dict[str, float], names, what: str) -> np.ndarray:
    bad = sorted(set(table) - set(names))
    if bad:
        raise ValueError(f"street fleet {what}: unknown {bad}; choose from {list(names)}")
    w = np.array([max(float(table.get(n, 0.0)), 0.0) for n in names])
    if w.sum() <= 0:
        raise ValueError(f"street fleet {what}: the weights sum to 0")
    return w / w.sum()


def build_fleet(
    seed: int,
    n: int,
    types: dict[str, float],
    colors: dict[str, float],
    liveries: dict[str, float] | None = None,
    variants: int = 4,
    region: str = "us",
) -> list[Identity]:
    """`n` identities: body types by the `types` weights (every type with weight > 0 at least once per
    variant, so each shape exists), colours by the `colors` weights, liveries by their share of the
    bodies they are painted on; unique plates."""
    if region not in FORMATS:
        raise ValueError(f"street fleet plate region {region!r}: choose from {sorted(FORMATS)}")
    if variants < 1:
        raise ValueError(f"street fleet variants {variants}: expected >= 1")
    rng = np.random.default_rng([seed, 31])
    tw, cw = _weights(types, TYPES, "types"), _weights(colors, COLORS, "colors")
    must = [t for t, w in zip(TYPES, tw) if w > 0 for _ in range(variants)]
    rest = [TYPES[int(k)] for k in rng.choice(len(TYPES), size=max(0, n - len(must)), p=tw)]
    kinds = must + rest
    liveries = dict(liveries or {})
    bad = sorted(set(liveries) - set(LIVERY_BODIES))
    if bad:
        raise ValueError(f"street fleet liveries: unknown {bad}; choose from {sorted(LIVERY_BODIES)}")
    plates: set[str] = set()
    out = []
    for i, t in enumerate(kinds):
        variant = i % variants if i < len(must) else int(rng.integers(variants))
        color = COLORS[int(rng.choice(len(COLORS), p=cw))]
        livery = None
        for name, share in liveries.items():
            if t in LIVERY_BODIES[name] and rng.random() < float(share):
                livery, color = name, LIVERY_COLOR[name]
                break
        plate = plate_text(rng, region)
        while plate in plates:
            plate = plate_text(rng, region)
        plates.add(plate)
        out.append(Identity(f"v{i:05d}", t, variant, color, livery, plate, region))
    return out


def vehicle_of(ident: Identity) -> CarModel:
    return make_vehicle(design(ident.body_type, ident.variant), ident.plate, ident.region, ident.livery, ident.identity)


def seen_labels(
    rendered: dict, ident: Identity, camera: str, kind: str, direction: str, speed: float, when, plate, **extra
) -> dict:
    """A corridor or highway box's labels: the renderer's, then who it is and how it moved (`speed` in m/s,
    `when` a datetime), `extra` (the highway's road), and how its plate is seen (`plate`: plate_seen's
    (side, px))."""
    side, px = plate
    lab = dict(rendered, source="street", color=ident.color, camera=camera, camera_kind=kind)
    lab.update(
        identity=ident.identity,
        track_id=str(int(ident.identity.lstrip("v"))),  # the MOT and COCO files' track id
        plate=ident.plate,
        direction=direction,
        speed_kmh=round(speed * 3.6, 1),
        time=when.isoformat(),
        **extra,
        plate_side=side or "none",
        plate_px=px,
        plate_legible=bool(side and px >= LEGIBLE_PX),
    )
    return lab


def box_rows(frame: str, boxes: list[dict]) -> list[dict]:
    """A rendered frame's boxes ({x1..y2, visible, labels}) as the boxes contract's rows."""
    return [
        {"frame": frame}
        | {k: b[k] for k in ("x1", "y1", "x2", "y2")}
        | {"class": BOX_CLASS.get(b["labels"]["body_type"], "car"), "score": None, "source": "render"}
        | {"labels": b["labels"], "visible": b["visible"]}
        for b in boxes
    ]


def paint_of(rng: np.random.Generator, color: str) -> tuple[float, float, float]:
    jit = np.clip(rng.normal(0, 0.03, 3), -0.05, 0.05)
    return tuple(float(np.clip(c * (1 + j), 0, 1)) for c, j in zip(PALETTE[color], jit))


_FLEET: list[CarModel] = []
_IDS: list[Identity] = []


def _init_worker(cars: list[CarModel], ids: list[Identity]) -> None:
    global _FLEET, _IDS
    _FLEET, _IDS = cars, ids


def _single_job(job: tuple) -> tuple[int, bytes, dict]:
    i, seed, k, view, camera, size, jq, framing = job
    car, ident = _FLEET[k], _IDS[k]
    rng = np.random.default_rng([seed, i])
    spec = sample_scene(rng, ident.color, view, camera, jq, framing)
    img = render_scene(car, spec, size)
    labels = car.labels()
    side, px = plate_seen(*plate_corners(car), make_camera(car, spec, size))
    assert view_from_azimuth(spec.azimuth) == view
    labels.update(
        color=ident.color,
        view=view,
        scene=spec.scene,
        camera=camera,
        source="street",
        azimuth_deg=round(spec.azimuth, 1),
        camera_height_m=round(spec.cam_height, 2),
        time_of_day=spec.time,
        weather=spec.weather or "clear",
        plate_side=side or "none",
        plate_px=px,
        plate_legible=bool(side and px >= LEGIBLE_PX),
    )
    return i, encode_jpeg(img, spec.jpeg_quality), labels


def pool_map(fn, jobs: list, workers: int, init, initargs):
    """Results of `fn` over `jobs` in order, in a fork pool (workers inherit the fleet) or inline."""
    nw = max(1, min(workers if workers > 0 else (os.cpu_count() or 1), len(jobs)))
    if nw == 1:
        init(*initargs)
        yield from map(fn, jobs)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(nw, initializer=init, initargs=initargs) as pool:
        yield from pool.imap(fn, jobs, chunksize=max(1, min(8, len(jobs) // (nw * 4) or 1)))


def render_fleet(
    fleet: list[Identity],
    out_dir: Path,
    n_images: int,
    size: int = 224,
    seed: int = 0,
    workers: int = 0,
    jpeg_quality: tuple[int, int] = (60, 95),
    framing: tuple[float, float] | None = (0.75, 0.95),
) -> list[tuple[Path, dict]]:
    """`n_images` JPEGs of single vehicles of `fleet`: body types spread evenly (an identity of the
    type drawn at random), views and cameras balanced; each keeps its identity's colour and plate."""
    t0 = time.time()
    if not fleet or n_images <= 0:
        return []
    rng = np.random.default_rng([seed, 1])
    by_type: dict[str, list[int]] = {}
    for k, ident in enumerate(fleet):
        by_type.setdefault(ident.body_type, []).append(k)
    kinds = sorted(by_type, key=TYPES.index)
    type_i = rng.permutation(np.resize(np.arange(len(kinds)), n_images))
    view_i = rng.permutation(np.resize(np.arange(len(VIEWS)), n_images))
    cam_i = rng.permutation(np.resize(np.arange(len(CAMERAS)), n_images))
    pick = [by_type[kinds[t]][int(rng.integers(len(by_type[kinds[t]])))] for t in type_i]
    jq = (int(jpeg_quality[0]), int(jpeg_quality[1]))
    fr = None if framing is None else (float(framing[0]), float(framing[1]))
    jobs = [(i, seed, pick[i], VIEWS[view_i[i]], CAMERAS[cam_i[i]], size, jq, fr) for i in range(n_images)]
    used = sorted(set(pick))
    cars = [vehicle_of(fleet[k]) if k in used else None for k in range(len(fleet))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i, data, labels in pool_map(_single_job, jobs, workers, _init_worker, (cars, fleet)):
        p = out_dir / f"street_s{seed}_{i:06d}_{labels['model_id']}.jpg"
        p.write_bytes(data)
        items.append((p, labels))
    dt = time.time() - t0
    print(
        f"render_fleet: {len(items)} images ({size}x{size}) of {len(used)} vehicles in {dt:.1f}s "
        f"({len(items) / max(dt, 1e-9):.1f} img/s) -> {out_dir}",
        file=sys.stderr,
    )
    return items
