"""Annotation files beside the frames are read entry by entry: one malformed COCO entry (COCO, or
a CVAT / Label Studio COCO export) is dropped and reported with its reason, every other box is
kept; a `.json` that does not parse is reported as such, with its line and column."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from carsearch.sources import files as sources
from test_index_corpus import _build, repo  # noqa: F401  (pytest fixture + helper)


def _frame(folder: Path, name: str) -> None:
    grey = 60 + sum(name.encode()) % 100
    im = Image.new("RGB", (320, 180), (grey, grey, grey))
    im.paste((220, 20, 20), (20, 60, 120, 120))
    im.paste((20, 40, 220), (180, 70, 300, 140))
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    im.save(folder / name, quality=92)


def _coco(bad_bbox=("wide", 70, 120, 70)) -> dict:
    """Two frames, five annotations: two good boxes in each frame and one malformed bbox; plus a
    box of an image that is not listed and one of an image entry without a file name."""
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 320, "height": 180},
            {"id": 2, "file_name": "b.jpg", "width": 320, "height": 180},
            {"id": 3, "width": 320, "height": 180},  # no file_name
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 8, "name": "truck"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [20, 60, 100, 60], "attributes": {"color": "red"}},
            {"id": 12, "image_id": 1, "category_id": 8, "bbox": [180, 70, 120, 70]},
            {"id": 13, "image_id": 1, "category_id": 3, "bbox": list(bad_bbox)},
            {"id": 21, "image_id": 2, "category_id": 3, "bbox": [20, 60, 100, 60]},
            {"id": 22, "image_id": 2, "category_id": 3, "bbox": [180, 70, 120, 70], "score": 0.5},
            {"id": 31, "image_id": 3, "category_id": 3, "bbox": [1, 1, 50, 50]},
            {"id": 41, "image_id": 99, "category_id": 3, "bbox": [1, 1, 50, 50]},
        ],
    }


def test_one_malformed_coco_entry_drops_that_entry_only(tmp_path):
    folder = tmp_path / "frames"
    for n in ("a.jpg", "b.jpg"):
        _frame(folder, n)
    (folder / "annotations.json").write_text(json.dumps(_coco()))
    ann = sources.folder_boxes(folder)
    assert ann.files == {"annotations.json"}
    assert {k: len(v) for k, v in ann.boxes.items()} == {"a.jpg": 2, "b.jpg": 2}
    a = ann.boxes["a.jpg"]
    assert [b["class"] for b in a] == ["car", "truck"] and a[0]["labels"] == {"color": "red"}
    assert (a[1]["x1"], a[1]["y1"], a[1]["x2"], a[1]["y2"]) == (180, 70, 300, 140)
    assert ann.boxes["b.jpg"][1]["score"] == 0.5 and ann.boxes["b.jpg"][0]["score"] is None
    reasons = [r for _, r in ann.problems]
    assert len(reasons) == 4 and all(p == "annotations.json" for p, _ in ann.problems)
    assert reasons[0] == "annotations.json images[2] (id 3): file_name: Field required; entry not used"
    bad = next(r for r in reasons if r.startswith("annotations.json annotation 13:"))
    assert "bbox.0: Input should be a valid number" in bad and "(got 'wide')" in bad and bad.endswith("box not used")
    assert "annotations.json annotation 31: image_id 3 is an unusable image entry; box not used" in reasons
    assert "annotations.json annotation 41: image_id 99 is not in the file's images; box not used" in reasons


def test_a_json_that_does_not_parse_is_reported_with_line_and_column(tmp_path):
    folder = tmp_path / "frames"
    _frame(folder, "a.jpg")
    (folder / "broken.json").write_text('{\n  "images": [\n    {"id": 1,, "file_name": "a.jpg"}\n  ]\n}\n')
    (folder / "tasks.json").write_text(json.dumps([{"data": {"image": "a.jpg"}, "annotations": []}]))
    (folder / "notes.json").write_text(json.dumps({"images": []}))
    ann = sources.folder_boxes(folder)
    assert ann.files == {"broken.json", "tasks.json", "notes.json"} and ann.boxes == {}
    assert sorted(ann.problems) == [
        (
            "broken.json",
            "broken.json: a JSON file that does not parse (line 3 column 14: Expecting property name enclosed in double quotes)",
        ),
        ("notes.json", "notes.json: a JSON file but not COCO (no 'annotations' list)"),
        ("tasks.json", "tasks.json: a JSON file but not COCO (a list; COCO is an object)"),
    ]
    # none of them is also read as an image
    assert [n for n, *_ in sources.iter_folder(folder, None, skip=ann.files)] == [str(folder / "a.jpg")]


def test_build_index_keeps_the_good_boxes_and_lists_the_bad_entries(repo, tmp_path):  # noqa: F811
    """Through build_index: the four good vehicles are rows, every dropped entry and the broken
    JSON are in the rejects report with their reasons, and the summary says how to fix them."""
    frames = tmp_path / "frames"
    for n in ("a.jpg", "b.jpg"):
        _frame(frames, n)
    (frames / "annotations.json").write_text(json.dumps(_coco()))
    (frames / "extra.json").write_text("{oops")
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    assert m["vehicles"] == 4 and m["rows"] == 4 and m["rejected"] == 5
    version = json.loads((repo / "data/index/carsearch_index.json").read_text())["version"]
    rejects = [json.loads(x) for x in (repo / "data/index" / version / "rejects.jsonl").read_text().splitlines()]
    by_reason = {r["reason"]: r["path"] for r in rejects}
    assert (
        by_reason[
            "extra.json: a JSON file that does not parse (line 1 column 2: Expecting property name enclosed in double quotes)"
        ]
        == "extra.json"
    )
    assert sum("box not used" in r for r in by_reason) == 3 and sum("entry not used" in r for r in by_reason) == 1
    assert not any("not an image" in r for r in by_reason)
    from carsearch.core.rejects import summarise  # what the stage prints of them (index.build_report)

    out = "\n".join(summarise(rejects, "file"))
    assert "the file's other boxes are used" in out and "fix the JSON at the line and column given" in out


def test_repeated_or_missing_annotation_ids_and_odd_entries_lose_no_box(tmp_path):
    """pycocotools keys annotations by id: two boxes sharing an id (or none) both stay; an entry that
    is no object, or an id that is a list, is one problem line, not a crash."""
    folder = tmp_path / "frames"
    _frame(folder, "a.jpg")
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": [2], "file_name": "b.jpg"}, "c.jpg"],
        "annotations": [
            {"id": 5, "image_id": 1, "bbox": [20, 60, 100, 60]},
            {"id": 5, "image_id": 1, "bbox": [180, 70, 120, 70]},
            {"image_id": 1, "bbox": [1, 1, 40, 40]},
            7,
        ],
    }
    (folder / "boxes.json").write_text(json.dumps(doc))
    ann = sources.folder_boxes(folder)
    assert [(b["x1"], b["y1"]) for b in ann.boxes["a.jpg"]] == [(20, 60), (180, 70), (1, 1)]
    reasons = [r for _, r in ann.problems]
    assert len(reasons) == 3
    assert reasons[0].startswith("boxes.json images[1] (id [2]): id.int: Input should be a valid integer")
    assert reasons[1].startswith("boxes.json images[2]: entry: Input should be a valid dictionary")
    assert reasons[2].startswith("boxes.json annotations[3]: entry: Input should be a valid dictionary")


def test_a_box_without_category_is_unknown_not_the_string_none(tmp_path):
    folder = tmp_path / "frames"
    _frame(folder, "a.jpg")
    doc = _coco()
    doc["annotations"] = [{"id": 1, "image_id": 1, "bbox": [20, 60, 100, 60]}]
    (folder / "annotations.json").write_text(json.dumps(doc))
    [box] = sources.folder_boxes(folder).boxes["a.jpg"]
    assert box["class"] == "unknown"
