"""CLEAR-MOT counts (carsearch.detection.mot) on hand-made cases whose answers are worked out by hand,
and MOTChallenge files read back."""

from __future__ import annotations

import pytest

from carsearch.detection.mot import clear_mot, read_mot

A, B, FAR = (0, 0, 10, 10), (20, 0, 30, 10), (100, 100, 110, 110)


def test_switches_misses_and_false_positives_counted_by_hand():
    gt = {1: [(1, A), (2, B)], 2: [(1, A), (2, B)], 3: [(1, A), (2, B)], 4: [(1, A)], 5: [(2, B)]}
    hyp = {
        1: [(7, A), (8, B)],
        2: [(8, A), (7, B)],  # the tracker swaps the two: 2 switches
        3: [(8, A), (9, FAR)],  # A keeps 8; B missed; 9 is a false positive
        4: [(8, (1, 0, 11, 10))],  # IoU 0.82: still 8, no switch
        5: [(10, B)],  # B comes back under a new id: a switch (its last match was 7)
    }
    m = clear_mot(gt, hyp)
    assert (m["gt"], m["matches"], m["fn"], m["fp"], m["idsw"]) == (8, 7, 1, 1, 3)
    assert m["mota"] == pytest.approx(1 - (1 + 1 + 3) / 8)
    assert (m["objects"], m["hypotheses"]) == (2, 4)


def test_a_kept_correspondence_wins_over_a_better_overlap_and_perfect_tracks_score_one():
    near = (0, 0, 10, 16)  # IoU 0.625 with A
    gt = {1: [(1, A)], 2: [(1, A)]}
    m = clear_mot(gt, {1: [(3, near)], 2: [(3, near), (4, A)]})
    assert (m["matches"], m["idsw"], m["fp"]) == (2, 0, 1)  # 3 stays A's; 4 is a false positive
    assert clear_mot(gt, {1: [(5, A)], 2: [(5, A)]})["mota"] == 1.0
    assert clear_mot(gt, {1: [(5, A)], 2: [(5, FAR)]})["fn"] == 1  # under min_iou: a miss and an FP


def test_read_mot_rows_and_a_bad_row(tmp_path):
    p = tmp_path / "cam.txt"
    p.write_text("1,42,10,20,30,40,1,car,0.900\n2,42,12,20,30,40,1,car,0.800\n")
    assert read_mot(p) == {1: [(42, (10.0, 20.0, 40.0, 60.0))], 2: [(42, (12.0, 20.0, 42.0, 60.0))]}
    p.write_text("1,42,10,20,30,40\nframe,id\n")
    with pytest.raises(ValueError, match=r"cam.txt:2: not a MOT row 'frame,id,x,y,w,h,...': 'frame,id'"):
        read_mot(p)
