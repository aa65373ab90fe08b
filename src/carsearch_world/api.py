"""Public API: render a labelled traffic-camera data set from TORCS car models."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from carsearch_world.scene import (
    COLORS,
    VIEWS,
    encode_jpeg,
    render_scene,
    sample_scene,
    value_noise,
    view_from_azimuth,
)
from carsearch_world.torcs import CarModel, find_torcs_cars, load_car

CAMERAS = ("pole", "dashcam")
_CARS: list[CarModel] = []  # per worker process


def default_torcs_dir() -> Path:
    """`$CARSEARCH_TORCS_DIR` or ~/.cache/carsearch/torcs (where scripts/fetch_torcs.sh extracts)."""
    return Path(os.environ.get("CARSEARCH_TORCS_DIR", "~/.cache/carsearch/torcs")).expanduser()


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n indices in [0,k), each used floor(n/k) or ceil(n/k) times, in random order."""
    return rng.permutation(np.resize(np.arange(k), n)) if n else np.zeros(0, np.int64)


def _init_worker(cars: list[CarModel]) -> None:
    global _CARS
    _CARS = cars
    _value_noise_warm()


def _value_noise_warm() -> None:
    value_noise()


def _render_job(job: tuple) -> tuple[int, bytes, dict]:
    i, seed, car_i, color, view, camera, size, jq, framing = job
    car = _CARS[car_i]
    rng = np.random.default_rng([seed, i])
    spec = sample_scene(rng, color, view, camera, jq, framing)
    img = render_scene(car, spec, size)
    data = encode_jpeg(img, spec.jpeg_quality)
    labels = car.labels()
    assert view_from_azimuth(spec.azimuth) == view
    labels.update(
        color=color,
        view=view,
        scene=spec.scene,
        camera=camera,
        source="torcs",
        azimuth_deg=round(spec.azimuth, 1),
        camera_height_m=round(spec.cam_height, 2),
        time_of_day=spec.time,
        weather=spec.weather or "clear",
    )
    return i, data, labels


def load_cars(car_dirs: list[Path]) -> tuple[list[CarModel], list[tuple[str, str]]]:
    """Load every car folder; broken ones are reported on stderr and returned as skips."""
    cars: list[CarModel] = []
    skips: list[tuple[str, str]] = []
    for d in car_dirs:
        try:
            cars.append(load_car(d))
        except Exception as e:  # noqa: BLE001 - one broken car must not stop the others
            reason = str(e) or type(e).__name__
            print(f"render_torcs: skipping car {Path(d).name} ({d}): {reason}", file=sys.stderr)
            skips.append((str(d), reason))
    return cars, skips


def render_torcs(
    torcs_dir: Path,
    out_dir: Path,
    n_images: int,
    size: int = 224,
    seed: int = 0,
    workers: int = 0,
    colors: list[str] | None = None,
    jpeg_quality: tuple[int, int] = (60, 95),
    progress: bool = True,
    framing: tuple[float, float] | None = None,
) -> tuple[list[tuple[Path, dict]], list[tuple[str, str]]]:
    """Render `n_images` JPEGs (size x size) of the TORCS cars under `torcs_dir` into `out_dir`.

    Images are spread evenly over cars, colours, views and cameras (pole / dashcam); the result
    is byte-identical for a given seed whatever `workers` is (0 = all cores). `framing` (lo, hi):
    zoom so the car's bounding box spans that fraction of the frame, like a detector's vehicle
    crop (None: the traffic camera's own field of view, the car smaller). Returns
    ([(jpeg_path, labels)], [(car_folder, reason)] for skipped cars).
    """
    t0 = time.time()
    colors = list(colors) if colors else list(COLORS)
    bad = [c for c in colors if c not in COLORS]
    if bad:
        raise ValueError(f"unknown colours {bad}; choose from {COLORS}")
    lo, hi = int(jpeg_quality[0]), int(jpeg_quality[1])
    if not (1 <= lo <= hi <= 100):
        raise ValueError(f"bad jpeg_quality {jpeg_quality}")
    out_dir = Path(out_dir)
    cars, skips = load_cars(find_torcs_cars(Path(torcs_dir)))
    if not cars or n_images <= 0:
        if not cars:
            print(f"render_torcs: no usable TORCS cars under {torcs_dir}", file=sys.stderr)
        return [], skips
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    car_i = _balanced(rng, n_images, len(cars))
    col_i = _balanced(rng, n_images, len(colors))
    view_i = _balanced(rng, n_images, len(VIEWS))
    cam_i = _balanced(rng, n_images, len(CAMERAS))
    if framing is not None:
        framing = (float(framing[0]), float(framing[1]))
        if not 0 < framing[0] <= framing[1] <= 1.5:
            raise ValueError(f"bad framing {framing}: expected 0 < lo <= hi <= 1.5")
    jobs = [
        (i, seed, int(car_i[i]), colors[col_i[i]], VIEWS[view_i[i]], CAMERAS[cam_i[i]], size, (lo, hi), framing)
        for i in range(n_images)
    ]
    nw = workers if workers > 0 else (os.cpu_count() or 1)
    nw = max(1, min(nw, n_images))
    items: list[tuple[Path, dict]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_images, desc="render_torcs", unit="img", file=sys.stderr)

    def consume(res):
        i, data, labels = res
        p = out_dir / f"torcs_s{seed}_{i:06d}_{labels['model_id']}.jpg"
        p.write_bytes(data)
        items.append((p, labels))
        if bar is not None:
            bar.update(1)

    try:
        if nw == 1:
            _init_worker(cars)
            for job in jobs:
                consume(_render_job(job))
        else:
            # fork: workers inherit the loaded cars for free and callers need no __main__ guard;
            # they only run numpy/PIL code (no torch), so forking a torch-importing parent is safe
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            with ctx.Pool(nw, initializer=_init_worker, initargs=(cars,)) as pool:
                for res in pool.imap(_render_job, jobs, chunksize=max(1, min(8, n_images // (nw * 4) or 1))):
                    consume(res)
    finally:
        if bar is not None:
            bar.close()
    dt = time.time() - t0
    print(
        f"render_torcs: {len(items)} images ({size}x{size}) of {len(cars)} cars"
        f"{f', {len(skips)} cars skipped' if skips else ''} in {dt:.1f}s "
        f"({len(items) / max(dt, 1e-9):.1f} img/s, {nw} workers) -> {out_dir}",
        file=sys.stderr,
    )
    return items, skips


def contact_sheet(items: list[tuple[Path, dict]], out_png: Path, n: int = 48, cols: int = 8) -> Path:
    """PNG grid of up to `n` evenly picked samples, with a small label line under each."""
    out_png = Path(out_png)
    if not items:
        raise ValueError("contact_sheet: no items")
    n = min(n, len(items))
    pick = [items[int(k)] for k in np.linspace(0, len(items) - 1, n).round().astype(int)]
    tile = 224
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    lab_h = 28
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * (tile + lab_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (p, lab) in enumerate(pick):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((tile, tile))
            x, y = (k % cols) * tile, (k // cols) * (tile + lab_h)
            sheet.paste(im, (x + (tile - im.width) // 2, y))
        l1 = f"{lab.get('make', '')} {lab.get('model', '')} | {lab.get('body_type', '')}"
        l2 = f"{lab.get('color', '')} {lab.get('view', '')} | {lab.get('scene', '')} | {lab.get('camera', '')}"
        draw.text((x + 3, y + tile + 1), l1[:40], fill="black", font=font)
        draw.text((x + 3, y + tile + 14), l2[:40], fill=(60, 60, 60), font=font)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, optimize=True)
    return out_png
