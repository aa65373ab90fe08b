"""The round trip with annotation tools (issue 34): judged hits out as COCO and Label Studio import
JSON, corrected boxes and labels back into labels.csv / COCO beside the frames, where carsearch's
folder readers (sources.files.folder_boxes, sources.labels) read them. The import fixtures are
written by hand after the tools' documented formats (Label Studio's JSON export of annotated tasks,
COCO's object detection format)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from carsearch.cli import app
from carsearch.curation import annotations, corrections
from carsearch.feedback import store
from carsearch.feedback.record import Hit, Judgment, Query
from carsearch.sources import files
from carsearch.sources.boxes import read_coco
from carsearch.sources.labels import read_labels_csv

FIXTURES = Path(__file__).parent / "fixtures" / "annotations"


def _img(path: Path, size=(200, 100)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


def _judge(path: Path, text: str, hit_id: str, rank: int, verdict: bool, hit_path: str, box=None) -> None:
    store.append(
        path, Judgment.make(Query(kind="text", text=text), Hit(id=hit_id, rank=rank, path=hit_path, box=box), verdict)
    )


@pytest.fixture
def judged(tmp_path):
    """A root with photos (one original twice the size of its stored frame), judgments on a
    vehicle (twice), a whole image, a hit the index lost and a hit whose picture is gone."""
    root = tmp_path
    _img(root / "photos/cam1/a.jpg", (400, 200))  # the user's original
    _img(root / "data/raw/a.jpg", (200, 100))  # its stored frame
    _img(root / "photos/cam2/b.jpg")
    _img(root / "data/pairs/crops/v1.jpg", (40, 40))
    _img(root / "data/pairs/crops/lost.jpg", (40, 40))
    rows = {
        "v1": {"id": "v1", "path": "data/pairs/crops/v1.jpg", "frame_path": "data/raw/a.jpg", "origin": "photos/cam1/a.jpg",
               "box": [10.0, 20.0, 60.0, 70.0], "box_class": "truck", "color": "red", "body_type": "pickup",
               "view": "side", "make": "unknown", "plate": "AB12 CDE"},
        "b": {"id": "b", "path": "photos/cam2/b.jpg", "frame_path": "", "origin": "photos/cam2/b.jpg", "box": None,
              "box_class": "", "color": "blue", "view": "rear"},
        "gone": {"id": "gone", "path": "photos/cam3/gone.jpg", "origin": "photos/cam3/gone.jpg", "box": None},
    }  # fmt: skip
    jl = root / "data/feedback/judgments.jsonl"
    _judge(jl, "a red pickup", "v1", 1, True, "data/pairs/crops/v1.jpg", [10, 20, 60, 70])
    _judge(jl, "a blue van", "v1", 2, False, "data/pairs/crops/v1.jpg", [10, 20, 60, 70])
    _judge(jl, "a blue van", "b", 1, True, "photos/cam2/b.jpg")
    _judge(jl, "a blue van", "lost", 3, False, "data/pairs/crops/lost.jpg", [1, 1, 5, 5])
    _judge(jl, "a blue van", "gone", 4, True, "photos/cam3/gone.jpg")
    with open(jl, "ab") as f:
        f.write(b'{"query_id": "torn\n')
    return root, jl, rows.get


def test_export_as_coco_and_label_studio_with_boxes_labels_and_judgments(judged, tmp_path):
    root, jl, lookup = judged
    j = annotations.judged_frames(jl, lookup, root)
    assert len(j.problems) == 2, j.problems  # the torn line and the gone picture: one line each
    assert any("judgments.jsonl:6: skipped" in p for p in j.problems)
    assert any("hit gone" in p and "not a local file" in p for p in j.problems)
    assert len(j.notes) == 1 and "hit lost" in j.notes[0] and "not in the index" in j.notes[0]
    assert j.folder == root  # photos/ and data/ hold the exported frames

    doc = annotations.to_coco(j, root)
    out = tmp_path / "judged.coco.json"
    out.write_text(json.dumps(doc))
    c = COCO(str(out))  # pycocotools reads it as COCO
    (img,) = c.loadImgs([i["id"] for i in doc["images"] if i["file_name"] == "photos/cam1/a.jpg"])
    assert (img["width"], img["height"]) == (400, 200)
    (ann,) = c.loadAnns(c.getAnnIds(imgIds=[img["id"]]))
    assert ann["bbox"] == [20.0, 40.0, 100.0, 100.0]  # the stored frame's box, in the original's pixels
    assert c.loadCats([ann["category_id"]])[0]["name"] == "truck"
    assert ann["attributes"] == {"color": "red", "body_type": "pickup", "view": "side", "plate": "AB12 CDE"}
    verdicts = {(x["query"], x["verdict"]) for x in ann["carsearch"]["judgments"]}
    assert verdicts == {("a red pickup", True), ("a blue van", False)}  # one box, both judgments
    (whole,) = [i for i in doc["images"] if i["file_name"] == "photos/cam2/b.jpg"]
    assert whole["attributes"] == {"color": "blue", "view": "rear"} and not c.getAnnIds(imgIds=[whole["id"]])
    assert doc["info"]["carsearch"]["folder"] == "."  # relative to the repo: where the import writes back
    boxes, problems = read_coco(out, "judged.coco.json")  # and carsearch's own COCO reader
    assert problems == [] and boxes["photos/cam1/a.jpg"][0]["labels"]["color"] == "red"

    tasks = annotations.to_labelstudio(j, root, "/data/local-files/?d=")
    (t,) = [t for t in tasks if t["data"]["carsearch_file"] == "photos/cam1/a.jpg"]
    assert t["data"]["image"] == "/data/local-files/?d=photos/cam1/a.jpg"
    assert "✓ 'a red pickup'" in t["data"]["judged"] and "✗ 'a blue van'" in t["data"]["judged"]
    res = t["predictions"][0]["result"]
    (rect,) = [r for r in res if r["type"] == "rectanglelabels"]
    assert (rect["original_width"], rect["original_height"]) == (400, 200)
    assert {k: rect["value"][k] for k in ("x", "y", "width", "height")} == {
        "x": 5.0,
        "y": 20.0,
        "width": 25.0,
        "height": 50.0,
    }
    assert rect["value"]["rectanglelabels"] == ["truck"]
    parts = {r["from_name"]: r["value"] for r in res if r["id"] == rect["id"] and r["type"] != "rectanglelabels"}
    assert parts["color"]["choices"] == ["red"] and parts["plate"]["text"] == ["AB12 CDE"]
    (tb,) = [t for t in tasks if t["data"]["carsearch_file"] == "photos/cam2/b.jpg"]
    assert {r["from_name"] for r in tb["predictions"][0]["result"]} == {"image_color", "image_view"}

    cfg = ET.fromstring(annotations.label_config(tasks))  # every result names a control of the config
    names = {e.get("name"): e for e in cfg}
    for r in (r for t in tasks for r in t["predictions"][0]["result"]):
        assert r["from_name"] in names and names[r["from_name"]].get("toName") == r["to_name"] == "image"
    assert names["color"].get("perRegion") == "true" and names["image_color"].get("perRegion") == "false"
    assert {e.get("value") for e in names["vehicle"]} >= {"car", "truck"}


def _frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    _img(folder / "cam1/frame 001.jpg")
    _img(folder / "cam1/frame_002.jpg")
    (folder / "labels.csv").write_text("file,color\ncam1/frame 001.jpg,white\nother.jpg,red\n")
    _img(folder / "other.jpg")
    return folder


def test_import_label_studio_export_into_labels_csv(tmp_path, monkeypatch):
    folder = _frames(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        app, ["judgments", "import", str(FIXTURES / "labelstudio_export.json"), "--into", str(folder)]
    )
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("judgments import: ")]
    problems = lines[:-1]
    assert len(problems) == 4, problems  # one line per record not used, naming it
    assert any(
        "task 11 (cam1/frame 001.jpg) region r2: color 'pinkish' is not one of" in p and "box kept" in p
        for p in problems
    )
    assert any("region r3: box has no area; not imported" in p for p in problems)
    assert any("task 12: no annotation that was not cancelled" in p for p in problems)
    assert any("task 13: its image 'cam9/gone.jpg' is not a file under" in p for p in problems)
    assert "1 file(s), 2 box(es)" in lines[-1] and "1 earlier row(s)" in lines[-1]

    table = read_labels_csv((folder / "labels.csv").read_bytes(), "labels.csv")
    assert table.problems == []
    assert table.rows["other.jpg"] == {"color": "red"}  # another file's row kept
    assert table.rows["cam1/frame 001.jpg"] == {"view": "side"}  # the whole image's label replaces 'white'
    van, car = sorted(table.boxes["cam1/frame 001.jpg"], key=lambda b: b["x1"])
    assert (van["x1"], van["y1"], van["x2"], van["y2"], van["class"]) == (20, 20, 70, 70, "van")
    assert van["labels"] == {"color": "black", "plate": "AB12 CDE"}  # normalised as labels.csv does
    assert (car["x1"], car["y1"], car["x2"], car["y2"], car["labels"]) == (
        60,
        10,
        100,
        50,
        {},
    )  # rotated 90°: its envelope
    boxes = files.folder_boxes(folder)  # the folder reader carsearch ingests with
    assert len(boxes.boxes["cam1/frame 001.jpg"]) == 2 and boxes.problems == []


def test_import_coco_into_the_folders_coco_file(tmp_path, monkeypatch):
    folder = _frames(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["judgments", "import", str(FIXTURES / "coco_corrected.json"), "--into", str(folder), "--to", "coco"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    problems = [x for x in res.output.splitlines() if x.startswith("judgments import: ")][:-1]
    assert len(problems) == 3, problems
    assert any("annotation 2: bbox" in p and "box not used" in p for p in problems)
    assert any("'mauve-ish'" in p and "box kept" in p for p in problems)
    assert any("'cam7/missing.jpg': not a file under" in p for p in problems)
    out = folder / corrections.COCO_OUT
    c = COCO(str(out))
    assert len(c.getImgIds()) == 2 and len(c.getAnnIds()) == 2
    got = files.folder_boxes(folder)  # read beside labels.csv as every COCO file of the folder
    (b,) = got.boxes["cam1/frame 001.jpg"]
    assert (b["x1"], b["y1"], b["x2"], b["y2"], b["class"]) == (20, 10, 60, 30, "truck")  # 100x50 in the file: x2
    assert b["labels"] == {"color": "grey", "body_type": "pickup"}
    (b2,) = got.boxes["cam1/frame_002.jpg"]  # found by its unique file name
    assert (b2["x1"], b2["y1"], b2["x2"], b2["y2"], b2["labels"]) == (30, 40, 80, 60, {})
    again = CliRunner().invoke(app, args)  # importing again replaces, never doubles
    assert again.exit_code == 0 and len(COCO(str(out)).getAnnIds()) == 2


def test_import_errors_are_one_line(tmp_path, monkeypatch):
    folder = _frames(tmp_path)
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": ')
    res = CliRunner().invoke(app, ["judgments", "import", str(bad), "--into", str(folder)])
    assert res.exit_code == 1 and "bad.json: a JSON file that does not parse" in res.output
    bad.write_text('{"something": 1}')
    res = CliRunner().invoke(app, ["judgments", "import", str(bad), "--into", str(folder)])
    assert res.exit_code == 1 and "neither a Label Studio export" in res.output
    (tmp_path / "dvc.yaml").touch()
    monkeypatch.setenv("CARSEARCH_ROOT", str(tmp_path))
    res = CliRunner().invoke(app, ["judgments", "export", "--format", "voc", "out.json"])
    assert res.exit_code == 2 and "--format 'voc' is not coco or labelstudio" in res.output
    res = CliRunner().invoke(app, ["judgments", "export", "--format", "coco", "--judgments", "none.jsonl", "o.json"])
    assert res.exit_code == 1 and "no judgments file at" in res.output and "none.jsonl" in res.output
    shutil.copy(FIXTURES / "labelstudio_export.json", tmp_path / "ls.json")
    res = CliRunner().invoke(app, ["judgments", "import", str(tmp_path / "ls.json")])
    assert res.exit_code == 1 and "records no frames' folder" in res.output and "--into" in res.output


def test_round_trip_through_the_cli_with_a_real_index(tmp_path_factory, monkeypatch):
    """Judge a hit of a built index, export for Label Studio, correct it as an annotator would
    (the prediction accepted as the annotation, the colour changed), import: labels.csv beside
    the frames says the new colour."""
    from _serve_helpers import shared_repo
    from carsearch.index.search import CarSearch

    repo = shared_repo(tmp_path_factory)
    monkeypatch.setenv("CARSEARCH_ROOT", str(repo))
    monkeypatch.chdir(repo)
    row = CarSearch(root=repo).table.search().select(["id", "path", "color"]).limit(1).to_list()[0]
    jl = store.judgments_file(repo)
    saved = jl.read_bytes() if jl.is_file() else None
    try:
        jl.unlink(missing_ok=True)
        _judge(jl, "a car", row["id"], 1, True, row["path"])
        out = repo / "ls_tasks.json"
        res = CliRunner().invoke(app, ["judgments", "export", "--format", "labelstudio", str(out)])
        assert res.exit_code == 0, res.output
        assert "1 frame(s)" in res.output and (repo / "ls_tasks.xml").is_file()
        (task,) = json.loads(out.read_text())
        assert task["data"]["carsearch_file"] == Path(row["path"]).name
        new = "green" if row["color"] != "green" else "red"
        task["id"], result = 1, [r for r in task["predictions"][0]["result"] if r["from_name"] != "image_color"]
        result.append(
            {"id": "c", "type": "choices", "from_name": "image_color", "to_name": "image", "value": {"choices": [new]}}
        )
        task["annotations"] = [{"id": 1, "result": result, "was_cancelled": False}]
        out.write_text(json.dumps([task]))
        res = CliRunner().invoke(app, ["judgments", "import", str(out)])
        assert res.exit_code == 0, res.output
        folder = repo / Path(row["path"]).parent
        table = read_labels_csv((folder / "labels.csv").read_bytes(), "labels.csv")
        assert table.rows[Path(row["path"]).name]["color"] == new
    finally:
        (repo / Path(row["path"]).parent / "labels.csv").unlink(missing_ok=True)
        if saved is not None:
            jl.write_bytes(saved)
        else:
            jl.unlink(missing_ok=True)
