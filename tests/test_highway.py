"""The street world's highway (carsearch_world.highway): a gantry camera over two carriageways, the
fleet's vehicles at highway speeds, each box labelled with identity, plate, direction and speed;
the same bytes whatever the worker count, and ground truth beside the frames as the corridor's."""

from __future__ import annotations

from collections import defaultdict

import pytest
import yaml

from carsearch_world.corridor import write_coco, write_mot
from carsearch_world.highway import CAMERA, render_highway
from carsearch_world.street import build_fleet
from conftest import REPO

MIX = yaml.safe_load((REPO / "conf/data/_base.yaml").read_text())["street"]["fleet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    fleet = build_fleet(0, 60, MIX["types"], MIX["colors"], MIX["liveries"], 2, "us")
    out = tmp_path_factory.mktemp("hw")
    one = render_highway(fleet, out / "w1", seed=5, frames=4, vehicles=14, size=(160, 120), workers=1)
    two = render_highway(fleet, out / "w2", seed=5, frames=4, vehicles=14, size=(160, 120), workers=2)
    return one, two


def test_highway_frames_are_identical_for_any_worker_count(clip):
    one, two = clip
    assert len(one) == len(two) == 4
    assert [p.read_bytes() for p, *_ in one] == [p.read_bytes() for p, *_ in two]
    assert [b for *_, b, _ in one] == [b for *_, b, _ in two]


def test_highway_boxes_carry_identity_direction_and_highway_speed(clip):
    items, _ = clip
    heights: dict[tuple[str, str], list[int]] = defaultdict(list)
    for p, lab, boxes, epoch in items:
        assert lab["camera"] == CAMERA and lab["camera_kind"] == "gantry" and lab["road"] == "highway"
        for b in boxes:
            L = b["labels"]
            assert b["frame"] == p.stem and 0 <= b["x1"] < b["x2"] <= 160 and 0 <= b["y1"] < b["y2"] <= 120
            assert L["camera"] == CAMERA and L["time"] == lab["time"] and L["plate"] and L["identity"]
            assert 70 <= L["speed_kmh"] <= 130, L
            heights[(L["identity"], L["direction"])].append(b["y2"] - b["y1"])
    assert {d for _, d in heights} == {"eastbound", "westbound"}  # both carriageways
    tracked = {k: h for k, h in heights.items() if len(h) >= 2}
    assert len(tracked) >= 4
    # eastbound traffic drives away from the camera (its boxes shrink), westbound comes towards it
    for (ident, d), h in tracked.items():
        assert (h[-1] < h[0]) if d == "eastbound" else (h[-1] > h[0]), (ident, d, h)


def test_highway_ground_truth_files_and_bad_lanes(clip, tmp_path):
    items, _ = clip
    mot = write_mot(items, tmp_path / "mot")
    coco = write_coco(items, tmp_path / "coco")
    assert [m.name for m in mot] == [f"session0_{CAMERA}.txt"] and [c.name for c in coco] == [f"session0_{CAMERA}.json"]
    n = sum(len(b) for *_, b, _ in items)
    assert len(mot[0].read_text().splitlines()) == n
    with pytest.raises(ValueError, match="street highway lanes 0: expected >= 1 per direction"):
        render_highway([None], tmp_path / "x", lanes=0)
