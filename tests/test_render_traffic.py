"""Tests of multi-vehicle traffic frames (src/carsearch_world/traffic.py, traffic_scene.py): exact
boxes from the id buffer, occlusion, determinism for any worker count, labels in the vocabulary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carsearch.core import vocab
from carsearch_world import default_torcs_dir, find_torcs_cars, load_car
from carsearch_world.traffic import (
    MIN_VISIBLE,
    TrafficFrame,
    render_traffic,
    render_traffic_frame,
    render_traffic_spec,
)
from carsearch_world.traffic_scene import MIN_SIDE, Placement, camera_of, sample_traffic

SIZE = (192, 144)
PICK = ("baja-bug", "acura-nsx-sz", "155-DTM")  # few triangles: quick to load and render
BOX_KEYS = ["frame", "x1", "y1", "x2", "y2", "class", "score", "source", "labels", "visible"]


def _real_cars() -> list[Path]:
    return [d for d in find_torcs_cars(default_torcs_dir()) if d.name in PICK]


pytestmark = pytest.mark.skipif(not _real_cars(), reason="torcs-data not fetched (run scripts/fetch_torcs.sh)")


@pytest.fixture(scope="module")
def cars():
    return [load_car(d) for d in _real_cars()]


@pytest.fixture(scope="module")
def cars_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("torcs") / "cars"  # find_torcs_cars accepts the cars folder itself
    d.mkdir()
    for src in _real_cars():
        (d / src.name).symlink_to(src, target_is_directory=True)
    return d


def _cover(mask: np.ndarray, ss: int = 2) -> np.ndarray:
    h, w = mask.shape[0] // ss, mask.shape[1] // ss
    return mask.reshape(h, ss, w, ss).any(axis=(1, 3))


def _bbox(cover: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(cover.any(1))[0], np.nonzero(cover.any(0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _alone(cars, fr: TrafficFrame, slot: int) -> TrafficFrame:
    return render_traffic_spec(cars, dataclasses.replace(fr.spec, cars=[fr.spec.cars[slot]]), SIZE)


def test_frame_is_deterministic(cars) -> None:
    a, b = (render_traffic_frame(cars, 7, SIZE, "pole") for _ in range(2))
    assert a.image.tobytes() == b.image.tobytes() and a.boxes == b.boxes and a.labels == b.labels
    assert np.array_equal(a.ids, b.ids) and a.image.size == SIZE
    c = render_traffic_frame(cars, 8, SIZE, "pole")
    assert c.image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("camera", ["pole", "dashcam"])
def test_boxes_are_the_visible_pixels(cars, camera) -> None:
    for seed in range(3):
        fr = render_traffic_frame(cars, seed, SIZE, camera, cars_per_frame=(3, 6))
        n = len(fr.spec.cars)
        assert 3 <= n <= 6 and len(fr.boxes) + len(fr.dropped) == n
        alone = [_alone(cars, fr, k).ids == 0 for k in range(n)]
        # compositing: the foreground is every car's own coverage together; a car is seen only where
        # it is drawn alone; where just one car covers a pixel, that car is seen
        assert np.array_equal(fr.ids >= 0, np.logical_or.reduce(alone))
        only = np.sum(alone, 0) == 1
        for k in range(n):
            assert not ((fr.ids == k) & ~alone[k]).any()
            assert (fr.ids[only & alone[k]] == k).all()
        for b in fr.boxes:
            k = b["car"]
            assert 0 <= b["x1"] < b["x2"] <= SIZE[0] and 0 <= b["y1"] < b["y2"] <= SIZE[1]
            assert (b["x1"], b["y1"], b["x2"], b["y2"]) == _bbox(_cover(fr.ids == k))
            assert min(b["x2"] - b["x1"], b["y2"] - b["y1"]) >= MIN_SIDE and MIN_VISIBLE <= b["visible"] <= 1
            ax1, ay1, ax2, ay2 = _bbox(_cover(alone[k]))  # the unoccluded car's box holds it
            assert ax1 <= b["x1"] and ay1 <= b["y1"] and b["x2"] <= ax2 and b["y2"] <= ay2
            if (fr.ids == k).sum() == alone[k].sum():
                assert (ax1, ay1, ax2, ay2) == (b["x1"], b["y1"], b["x2"], b["y2"])


def test_occluded_car_box_shrinks(cars) -> None:
    fr0 = render_traffic_frame(cars, 3, SIZE, "dashcam", cars_per_frame=(2, 2))
    s = fr0.spec
    y = s.pos[1]
    front = Placement(0, 9.0, y - 0.6, 0.0, "red", (0.7, 0.06, 0.07))  # blocks the right part of the car behind
    back = Placement(1, 15.0, y + 0.4, 0.0, "blue", (0.08, 0.2, 0.6))
    both = render_traffic_spec(cars, dataclasses.replace(s, cars=[front, back]), SIZE)
    alone = render_traffic_spec(cars, dataclasses.replace(s, cars=[back]), SIZE)
    bb = {b["car"]: b for b in both.boxes}
    assert 1 in bb and len(alone.boxes) == 1, (both.dropped, alone.dropped)
    occ, free = bb[1], alone.boxes[0]
    assert free["visible"] == 1.0 and occ["visible"] < 0.9
    area = [(b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) for b in (occ, free)]
    assert area[0] < area[1]
    assert free["x1"] <= occ["x1"] and free["y1"] <= occ["y1"] and occ["x2"] <= free["x2"] and occ["y2"] <= free["y2"]
    assert occ["labels"]["view"] == free["labels"]["view"] == "rear"


def test_truncated_car_counts_as_partly_visible(cars) -> None:
    s = render_traffic_frame(cars, 3, SIZE, "dashcam", cars_per_frame=(2, 2)).spec
    cam = camera_of(s, *SIZE)
    right, down, fwd = cam.R
    ray = fwd - (SIZE[0] / 2 / cam.f) * right + (0.3 * SIZE[1] / 2 / cam.f) * down  # left edge, below centre
    t = -cam.pos[2] / ray[2]
    edge = Placement(0, cam.pos[0] + t * ray[0], cam.pos[1] + t * ray[1], 0.0, "red", (0.7, 0.06, 0.07))
    fr = render_traffic_spec(cars, dataclasses.replace(s, cars=[edge]), SIZE)  # cut by the left edge
    b = fr.boxes[0]
    assert b["x1"] == 0 and 0.3 < b["visible"] < 0.7


def test_cars_per_frame_and_drop_rules(cars) -> None:
    for seed in range(12):
        for camera in ("pole", "dashcam"):
            spec = sample_traffic(np.random.default_rng(seed), cars, camera, SIZE, (2, 8))
            assert 2 <= len(spec.cars) <= 8
            assert len(sample_traffic(np.random.default_rng(seed), cars, camera, SIZE, (2, 3)).cars) <= 3
    with pytest.raises(ValueError):
        render_traffic_frame(cars, 0, SIZE, "drone")


def test_labels_use_vocabulary_and_views_vary(cars) -> None:
    views, cams = set(), set()
    model_labels = {c.model_id: c.labels() for c in cars}
    for seed in range(8):
        fr = render_traffic_frame(cars, seed, SIZE, ("pole", "dashcam")[seed % 2])
        cams.add(fr.labels["camera"])
        for b in fr.boxes:
            lab = b["labels"]
            assert {k: lab[k] for k in ("make", "model", "model_id", "body_type")} == model_labels[lab["model_id"]]
            assert lab["body_type"] in vocab.BODY_TYPES and lab["color"] in vocab.COLORS
            assert lab["view"] in vocab.VIEWS and lab["camera"] == fr.labels["camera"]
            views.add(lab["view"])
    assert len(views) >= 3 and cams == {"pole", "dashcam"}


def test_render_traffic_same_bytes_for_any_worker_count(cars_dir: Path, tmp_path: Path) -> None:
    kw = dict(size=SIZE, seed=11, colors=["red", "blue", "white"], progress=False, cars_per_frame=(2, 5))
    a, skips = render_traffic(cars_dir, tmp_path / "a", 4, workers=1, **kw)
    b, _ = render_traffic(cars_dir, tmp_path / "b", 4, workers=2, **kw)
    assert not skips and len(a) == len(b) == 4
    for (pa, la, ba), (pb, lb, bb) in zip(a, b):
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes() and la == lb and ba == bb
        with Image.open(pa) as im:
            assert im.format == "JPEG" and im.size == SIZE
        assert 2 <= la["n_cars"] <= 5 and la["n_boxes"] == len(ba)
        for box in ba:
            assert list(box) == BOX_KEYS and box["frame"] == pa.stem and box["class"] == "car"
            assert box["score"] is None and box["source"] == "render" and box["labels"]["color"] in kw["colors"]
            assert 0 <= box["x1"] < box["x2"] <= SIZE[0] and 0 <= box["y1"] < box["y2"] <= SIZE[1]
    cams = [la["camera"] for _, la, _ in a]
    assert sorted(cams) == ["dashcam", "dashcam", "pole", "pole"]
    c, _ = render_traffic(cars_dir, tmp_path / "c", 4, workers=1, **{**kw, "seed": 12})
    assert [p.read_bytes() for p, _, _ in c] != [p.read_bytes() for p, _, _ in a]


def test_render_traffic_rejects_bad_arguments(cars_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render_traffic(cars_dir, tmp_path, 2, colors=["teal"], progress=False)
    with pytest.raises(ValueError):
        render_traffic(cars_dir, tmp_path, 2, cameras={"drone": 1.0}, progress=False)
    with pytest.raises(ValueError):
        render_traffic(cars_dir, tmp_path, 2, cars_per_frame=(3, 9), progress=False)
    assert render_traffic(tmp_path / "nothing", tmp_path / "o", 2, progress=False) == ([], [])
