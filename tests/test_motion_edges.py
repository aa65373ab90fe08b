"""Issue 33's motion floors: what made direction and speed wrong on the street world's cameras, each
on a few hand-made boxes (the rendered measurement: tests/test_motion_counts.py and
benchmarks/bench_motion.py)."""

from __future__ import annotations

import pytest

from carsearch.core.schema import CameraSettings
from carsearch.detection.motion import frame_size, track_motion

SCALE = CameraSettings(homography=[[0.1, 0, 0], [0, -0.1, 0], [0, 0, 1]])  # 10 px = 1 m, image up = north


def _members(boxes, dt=0.1):
    return [{"box": b, "offset": i * dt} for i, b in enumerate(boxes)]


def test_a_short_track_of_a_moving_car_is_not_stopped():
    """Three frames (0.2 s) of a car coming closer: it moves under a third of its size over the track,
    but 1.3 box sizes a second; a parked car's boxes do not move at all."""
    moving = _members([[48, 47, 65, 59], [46, 48, 63, 60], [43, 49, 61, 61]])
    assert track_motion(moving)["direction"] == "towards"
    parked = _members([[48, 47, 65, 59]] * 3)
    assert track_motion(parked) == {
        "direction": "stopped", "speed": 0.0, "speed_unit": "px/s", "heading": None, "compass": None,
    }  # fmt: skip


def test_a_car_going_away_far_down_the_road_shrinks():
    """Far away, a car going away moves up and sideways by similar amounts in box sizes; its box
    shrinks, and a view along the road foreshortens depth: `away`, not `right`."""
    far = _members([[73, 47, 93, 60], [76, 46, 95, 59], [79, 45, 97, 57], [81, 44, 99, 56], [83, 43, 100, 55]])
    assert track_motion(far)["direction"] == "away"


def test_boxes_cut_by_the_frame_edge_do_not_decide():
    """A car entering from the bottom edge going away: its cut boxes keep their bottom at the frame's
    edge (the contact point seems to slide sideways only), so the top edge tells the way; with two
    or more whole boxes, the cut ones are set aside and the speed is the whole boxes'."""
    entering = [[10, 101, 60, 120], [19, 95, 67, 120], [29, 89, 72, 120], [39, 85, 77, 116]]
    assert track_motion(_members(entering), frame=(160, 120))["direction"] == "away"
    # the whole boxes move 10 px (1 m) up each 0.1 s: 36 km/h north; the cut one would add its edge's jump
    cut_then_whole = [[0, 60, 30, 120], [40, 50, 60, 70], [40, 40, 60, 60], [40, 30, 60, 50]]
    got = track_motion(_members(cut_then_whole), SCALE, frame=(160, 120))
    assert got == {
        "direction": "away", "speed": 36.0, "speed_unit": "km/h", "heading": 0.0, "compass": "north",
    }  # fmt: skip


def test_ground_direction_is_against_the_cameras_axis():
    """With a homography, the direction is the ground velocity against the camera's axis (image up =
    north here): east is `right`, south `towards`; slower than walking pace is `stopped`."""
    east = _members([[10 + 25 * i, 40, 30 + 25 * i, 60] for i in range(3)], dt=0.5)
    assert track_motion(east, SCALE, frame=(160, 120))["direction"] == "right"
    south = _members([[40, 10 + 10 * i, 60, 30 + 10 * i] for i in range(3)])
    assert track_motion(south, SCALE, frame=(160, 120)) == {
        "direction": "towards", "speed": 36.0, "speed_unit": "km/h", "heading": 180.0, "compass": "south",
    }  # fmt: skip
    creeping = _members([[40, 40, 60, 60], [40.1, 40, 60.1, 60]])
    assert track_motion(creeping, SCALE, frame=(160, 120))["direction"] == "stopped"


@pytest.mark.parametrize(
    "rows, want",
    [
        ([{"box": [0, 0, 160, 120]}, {"box": [5, 5, 160, 100]}, {"box": [1, 1, 50, 120]}], (160.0, 120.0)),
        ([{"box": [0, 0, 150, 100]}, {"box": [5, 5, 140, 90]}], (float("inf"), float("inf"))),
        ([{"box": [0, 0, 10, 10], "frame_width": 320, "frame_height": 240}], (320.0, 240.0)),
        ([{"box": None}], None),
    ],
)
def test_frame_size_from_the_boxes_that_reach_the_edge(rows, want):
    assert frame_size(rows) == want
