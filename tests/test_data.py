import csv
import io as _io

import pytest
from PIL import Image

from carsearch.curation import split
from carsearch.sources import demo
from carsearch.sources import files as data


def _jpeg(color=(200, 0, 0), size=(64, 48)) -> bytes:
    buf = _io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_demo_set_is_deterministic_balanced_and_labelled():
    a = list(demo.demo_items(48, 64, seed=3))
    b = list(demo.demo_items(48, 64, seed=3))
    c = list(demo.demo_items(48, 64, seed=4))
    assert [x[1] for x in a] == [x[1] for x in b]
    assert [x[1] for x in a] != [x[1] for x in c]
    views = {x[2]["view"] for x in a}
    assert views == {"front", "rear", "side", "three-quarter"}
    for _, img, labels, err in a:
        assert err is None and {"model_id", "body_type", "color", "view"} <= labels.keys()
        assert Image.open(_io.BytesIO(img)).size == (64, 64)


def test_demo_colours_are_what_the_label_says():
    # the body paint must dominate the saturated pixels of each drawing
    for _, img, labels, _ in demo.demo_items(24, 96, seed=0, colors=["red", "blue", "green"]):
        im = Image.open(_io.BytesIO(img)).convert("RGB")
        px = [p for p in im.get_flattened_data() if max(p) - min(p) > 80]
        channel = max(range(3), key=lambda c: sum(p[c] for p in px))
        assert channel == {"red": 0, "green": 1, "blue": 2}[labels["color"]]


def test_folder_source_rejects_bad_files_and_reads_labels(tmp_path):
    src = tmp_path / "in"
    (src / "red").mkdir(parents=True)
    (src / "red" / "a.jpg").write_bytes(_jpeg((200, 0, 0)))
    (src / "b.png").write_bytes(_jpeg((0, 0, 200)))  # JPEG bytes with a .png name: still an image
    (src / "zdup.jpg").write_bytes(_jpeg((200, 0, 0)))  # same bytes as red/a.jpg
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("hello")
    full = _jpeg((0, 200, 0), (200, 200))
    (src / "trunc.jpg").write_bytes(full[: len(full) // 2])
    (src / "tiny.jpg").write_bytes(_jpeg(size=(8, 8)))
    with open(src / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "body_type", "view"])
        w.writerow(["b.png", "suv", "front"])
        w.writerow(["red/a.jpg", "sedan", ""])
    rows, rejects = data.ingest_items(data.iter_folder(src), tmp_path / "out" / "images", tmp_path / "out", "folder")
    by_origin = {r["origin"].split("/in/")[-1]: r for r in rows}
    assert set(by_origin) == {"red/a.jpg", "b.png"}
    assert by_origin["red/a.jpg"]["labels"] == {"color": "red", "body_type": "sedan"}
    assert by_origin["b.png"]["labels"] == {"body_type": "suv", "view": "front"}
    assert by_origin["b.png"]["path"].endswith(".jpg")  # stored by its real format
    reasons = {r.path.split("/in/")[-1]: r.reason for r in rejects}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["trunc.jpg"].startswith("corrupt or truncated")
    assert reasons["tiny.jpg"].startswith("image too small")
    assert reasons["zdup.jpg"].startswith("exact duplicate of")
    # nothing lost: every input file is in the output or in the rejects
    assert len(rows) + len(rejects) == 7


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(data.iter_folder(tmp_path / "nope"))


def test_dashcam_frames_ingest(dashcam_dir, tmp_path):
    rows, rejects = data.ingest_items(data.iter_folder(dashcam_dir), tmp_path / "img", tmp_path, "folder")
    assert len(rows) == 6
    assert [(r.path.rsplit("/", 1)[-1], r.reason.split(" (")[0]) for r in rejects] == [("LICENSE", "not an image")]
    assert all(r["width"] == 1280 and r["height"] == 720 and r["labels"] is None for r in rows)


def test_splits_are_deterministic_and_disjoint():
    fr = {"train": 0.7, "val": 0.1, "test": 0.2}
    ids = [f"id{i}" for i in range(2000)]
    a = [split.split_of(i, 1, fr) for i in ids]
    assert a == [split.split_of(i, 1, fr) for i in ids]
    assert a != [split.split_of(i, 2, fr) for i in ids]
    counts = {s: a.count(s) for s in fr}
    assert abs(counts["train"] / 2000 - 0.7) < 0.05 and abs(counts["test"] / 2000 - 0.2) < 0.05


def test_near_duplicates_group(tmp_path):
    base = Image.new("RGB", (64, 64), (10, 10, 10))
    for x in range(0, 64, 8):
        for y in range(0, 64, 16):
            base.paste((240, 240, 240), (x, y, x + 4, y + 8))
    base.save(tmp_path / "a.png")
    base.save(tmp_path / "b.jpg", quality=70)  # same picture, recompressed
    Image.new("RGB", (64, 64), (10, 10, 10)).save(tmp_path / "c.png")
    g = split.perceptual_groups({k: tmp_path / f for k, f in [("a", "a.png"), ("b", "b.jpg"), ("c", "c.png")]}, 4)
    assert g == {"a": "a", "b": "a", "c": "c"}
    assert split.perceptual_groups({"a": tmp_path / "a.png", "b": tmp_path / "b.jpg"}, -1) == {"a": "a", "b": "b"}
