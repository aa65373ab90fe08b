"""Traffic frames: every annotated vehicle is a hit (its crop, frame id and box), with its camera
and capture time, from the annotation files a user keeps beside the frames (COCO JSON, YOLO txt,
labels.csv box columns); bad boxes are reported with the reason, never lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from test_index_corpus import _build, repo  # noqa: F401  (pytest fixture + helper)

COCO = Path(__file__).parent / "fixtures" / "dashcam_coco.json"


def _frames(folder: Path) -> None:
    """Two synthetic 'traffic frames' from camera cam-a / cam-b, each with a red and a blue car."""
    for cam, stamp, grey in (("cam-a", "20260301_080000", 90), ("cam-b", "20260301_093000", 120)):
        (folder / cam).mkdir(parents=True)
        im = Image.new("RGB", (320, 180), (grey, grey, grey))
        im.paste((220, 20, 20), (20, 60, 120, 120))
        im.paste((20, 40, 220), (180, 70, 300, 140))
        im.save(folder / cam / f"{stamp}.jpg", quality=92)


def index_two_cameras(repo: Path, frames: Path) -> dict:
    """`_frames` with labels.csv boxes (a red and a blue car in each), camera and time from the file
    names, indexed by build_index as a folder corpus; its metrics (the page tests use it too)."""
    import yaml

    _frames(frames)
    (frames / "labels.csv").write_text(
        "file,x1,y1,x2,y2,color\n"
        + "".join(
            f"{cam}/{stamp}.jpg,20,60,120,120,red\n{cam}/{stamp}.jpg,180,70,300,140,blue\n"
            for cam, stamp in (("cam-a", "20260301_080000"), ("cam-b", "20260301_093000"))
        )
    )
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["capture"] = {
        "pattern": "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg",
        "timezone": "UTC",
        "track_gap_s": 60,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    return _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)


def test_yolo_and_labels_csv_boxes_become_vehicle_rows_with_camera_and_time(repo, tmp_path):  # noqa: F811
    from carsearch.index.search import CarSearch

    frames = tmp_path / "frames"
    _frames(frames)
    (frames / "classes.txt").write_text("car\ntruck\n")
    # cam-a: YOLO (normalised cx cy w h); the third box is a 2-px speck and must be reported
    (frames / "cam-a/20260301_080000.txt").write_text(
        "0 0.21875 0.5 0.3125 0.333\n0 0.75 0.5833 0.375 0.3889\n1 0.5 0.5 0.005 0.005\n"
    )
    # cam-b: labels.csv box columns, one row per vehicle, with the vehicle's colour
    (frames / "labels.csv").write_text(
        "file,x1,y1,x2,y2,class,color\n"
        "cam-b/20260301_093000.jpg,20,60,120,120,car,red\n"
        "cam-b/20260301_093000.jpg,180,70,300,140,car,blue\n"
        "cam-b/20260301_093000.jpg,400,10,420,40,car,red\n"
    )
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.setdefault("data", {})["capture"] = {
        "pattern": "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg",
        "timezone": "UTC",
        "track_gap_s": 60,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    assert m["rows"] == 4 and m["rejected"] == 2  # 2 frames x 2 vehicles; the speck and the box outside the frame
    rejects = [
        json.loads(x)
        for x in (
            repo
            / "data/index"
            / json.loads((repo / "data/index/carsearch_index.json").read_text())["version"]
            / "rejects.jsonl"
        )
        .read_text()
        .splitlines()
    ]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "smaller than curate.boxes.min_side" in reasons and "outside the 320x180 frame" in reasons

    s = CarSearch(repo / "data/index")
    rows = s.table.to_arrow().to_pylist()
    assert {r["camera"] for r in rows} == {"cam-a", "cam-b"} and len({r["frame_id"] for r in rows}) == 2
    for r in rows:
        crop = Image.open(repo / r["path"])
        x1, y1, x2, y2 = r["box"]
        assert abs(crop.width - (x2 - x1) * 1.2) <= 2 and abs(crop.height - (y2 - y1) * 1.2) <= 2  # margin 0.1 a side
        assert r["box_source"] in ("yolo", "labels.csv")
        assert r["frame_path"] == r["origin"] and Path(r["frame_path"]).is_file()  # the original frame, by reference
    red = [r for r in rows if r["camera"] == "cam-b" and r["color"] == "red"]
    assert len(red) == 1 and red[0]["box"] == [20.0, 60.0, 120.0, 120.0]

    # filters: camera and time range ([after, before)), in the Python API
    hits = s.image(repo / red[0]["path"], k=10)
    assert hits[0].id == red[0]["id"] and hits[0].frame_id == red[0]["frame_id"] and hits[0].box == red[0]["box"]
    assert {h.camera for h in s.image(repo / red[0]["path"], k=10, camera="cam-a")} == {"cam-a"}
    late = s.text("a car", k=10, after="2026-03-01T09:00")
    assert len(late) == 2 and {h.camera for h in late} == {"cam-b"}
    assert len(s.text("a car", k=10, before="2026-03-01T09:00", after="2026-03-01")) == 2
    with pytest.raises(ValueError, match="--after: cannot read 'soon'"):
        s.text("a car", after="soon")

    # the CLI: filters, the vehicle's frame and box on each line, time order, CSV export
    from typer.testing import CliRunner

    from carsearch.cli import app

    out = tmp_path / "hits.csv"
    r = CliRunner().invoke(
        app, ["search", "a car", "-k", "10", "--camera", "cam-b", "--sort", "time", "--csv", str(out)]
    )
    assert r.exit_code == 0, r.output
    lines = [x.split("\t") for x in r.output.splitlines() if x.split("\t")[0].isdigit()]
    assert len(lines) == 2 and all("camera=cam-b" in x and any(" box=" in f for f in x) for x in lines)
    assert (
        out.read_text()
        .splitlines()[0]
        .startswith("rank,score,confidence,confident,id,file,frame_id,x1,y1,x2,y2,camera,time")
    )
    bad = CliRunner().invoke(app, ["search", "a car", "--before", "later"])
    assert bad.exit_code == 1 and "--before: cannot read 'later'" in bad.output


def test_dashcam_frames_with_hand_drawn_coco_boxes(repo, tmp_path, dashcam_dir):  # noqa: F811
    """The six real dashcam frames with the COCO file drawn by hand: every annotated vehicle is a
    row (9), the car-less frame stays one whole-frame row, and each crop finds itself first."""
    from carsearch.index.search import CarSearch

    frames = tmp_path / "dashcam"
    shutil.copytree(dashcam_dir, frames)
    shutil.copy(COCO, frames / "annotations.json")
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    coco = json.loads(COCO.read_text())
    # + test2 (no car): one whole-frame row; the LICENSE file is the one reject
    assert m["rows"] == len(coco["annotations"]) + 1 and m["rejected"] == 1 and m["vehicles"] == 9
    s = CarSearch(repo / "data/index")
    rows = s.table.to_arrow().to_pylist()
    vehicles = [r for r in rows if r["box"] is not None]
    assert len(vehicles) == 9 and sum(r["color"] == "white" for r in vehicles) == 5
    by_frame = {}
    for r in vehicles:
        by_frame.setdefault(Path(r["origin"]).name, []).append(r)
    assert {k: len(v) for k, v in by_frame.items()} == {
        "test1.jpg": 2,
        "test3.jpg": 1,
        "test4.jpg": 2,
        "test5.jpg": 2,
        "test6.jpg": 2,
    }
    for r in vehicles:
        top = s.image(repo / r["path"], k=1)[0]
        assert top.id == r["id"] and top.box == r["box"]
    whites = s.text("a white car", k=20, where="color = 'white'")
    assert len(whites) == 5 and all(h.box is not None for h in whites)


def test_api_filters_vehicles_by_camera_and_time_and_serves_their_frames(repo, tmp_path):  # noqa: F811
    """Over real HTTP (uvicorn): camera / after / before filters, time sort, per-camera and per-hour
    counts, and each vehicle's crop, its box and its whole frame."""
    import httpx

    from _serve_helpers import SETTINGS, Server
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    assert index_two_cameras(repo, tmp_path / "frames")["vehicles"] == 4

    app = create_app(CarSearch(root=repo), SETTINGS, repo)
    server = Server(app)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            body = c.get("/api/v1/search", params={"q": "a car", "limit": 10}).json()
            assert len(body["hits"]) == 4
            assert {f["value"]: f["count"] for f in body["facets"]["camera"]} == {"cam-a": 2, "cam-b": 2}
            assert body["facets"]["hour"] == [
                {"value": "2026-03-01T08:00", "count": 2},
                {"value": "2026-03-01T09:00", "count": 2},
            ]
            late = c.get("/api/v1/search", params={"q": "a car", "after": "2026-03-01T09:00"}).json()["hits"]
            assert {h["camera"] for h in late} == {"cam-b"} and all(
                h["time"].startswith("2026-03-01T09:30") for h in late
            )
            one = c.get("/api/v1/search", params={"q": "a car", "camera": "cam-a", "color": "red"}).json()["hits"]
            assert len(one) == 1 and one[0]["box"] == [20.0, 60.0, 120.0, 120.0] and one[0]["origin"].endswith(".jpg")
            timed = c.post("/api/v1/search", json={"q": "a car", "sort": "time"}).json()["hits"]
            assert [h["time"] for h in timed] == sorted(h["time"] for h in timed)
            bad = c.get("/api/v1/search", params={"q": "a car", "before": "yesterday-ish"})
            assert bad.status_code == 400 and "--before: cannot read" in bad.json()["error"]["message"]
            r = c.get("/api/v1/search", params={"q": "a car", "camera": "cam-b", "format": "csv"})
            assert r.headers["content-type"].startswith("text/csv")
            table = list(__import__("csv").DictReader(__import__("io").StringIO(r.text)))
            assert len(table) == 2 and {t["camera"] for t in table} == {"cam-b"}
            assert all(
                t["file"].endswith("20260301_093000.jpg") and t["time"].startswith("2026-03-01T09:30") for t in table
            )
            assert sorted(float(t["x1"]) for t in table) == [20.0, 180.0]
            crop = Image.open(__import__("io").BytesIO(c.get(one[0]["image_url"]).content))
            frame = Image.open(__import__("io").BytesIO(c.get(one[0]["frame_url"]).content))
            assert crop.size == (120, 72) and frame.size == (320, 180)
    finally:
        server.stop()


def index_street_video(repo: Path, folder: Path, sample_fps: float = 4.0) -> tuple[dict, list[str]]:
    """tests/test_video.py's street clip (camera cam-7) with its boxes in labels.csv (a `t` column:
    seconds into the video), indexed by build_index as a folder corpus; (metrics, labels.csv lines)."""
    import yaml

    from test_video import CARS, FPS, N, truth, write_clip

    (folder / "cam-7").mkdir(parents=True)
    write_clip(folder / "cam-7" / "street.mp4")
    lines = ["file,t,x1,y1,x2,y2,class"]
    for i in range(int(N / FPS * sample_fps)):
        t = i / sample_fps
        for car in CARS:
            b = truth(car, round(t * FPS))
            if b:
                lines.append(f"cam-7/street.mp4,{t},{b[0]},{b[1]},{b[2]},{b[3]},car")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["video"] = {"fps": sample_fps, "max_frames": None}
    params["data"]["capture"] = {"pattern": "{camera}/{*}.mp4", "timezone": "UTC", "track_gap_s": 60}
    params["curate"]["boxes"]["min_side"] = 4  # the synthetic cars are small
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    return _build(repo, corpus="folder", corpus_path=str(folder), subfolder_key=None), lines


def test_video_in_a_folder_gives_one_row_per_track_with_first_and_last_seen(repo, tmp_path, monkeypatch):  # noqa: F811
    """A real mp4 (PyAV) of cars crossing a street, its boxes in labels.csv (a `t` column: seconds
    into the video): sampled at data.video.fps, linked into tracks, one row per car with first/last
    seen; a search returns each car once, and the camera / time filters apply to video too. The
    corpus is read in runs of 2 files: a video's frames stay in one run, so its tracks still link."""
    from carsearch.curation import corpus

    monkeypatch.setattr(corpus, "RUN", 2)

    from carsearch.index.search import CarSearch
    from test_video import CARS, FPS, START, N, truth

    sample_fps = 4.0
    m, lines = index_street_video(repo, tmp_path / "clips", sample_fps)
    assert m["tracks"] == 4 and m["rows"] == 4, m  # red leaves, blue, yellow, a second red enters later

    s = CarSearch(repo / "data/index")
    rows = sorted(s.table.to_arrow().to_pylist(), key=lambda r: r["first_seen"])
    assert {r["camera"] for r in rows} == {"cam-7"} and all(r["track_id"] for r in rows)
    seen = sorted((round(r["first_seen"] - START, 2), round(r["last_seen"] - START, 2)) for r in rows)
    in_view = [
        [i / sample_fps for i in range(int(N / FPS * sample_fps)) if truth(car, round(i / sample_fps * FPS))]
        for car in CARS
    ]
    assert seen == sorted((v[0], v[-1]) for v in in_view)  # first/last seen = the car's first/last sampled frame
    members = [json.loads(r["track_json"]) for r in rows]
    assert sum(len(x) for x in members) == len(lines) - 1  # every box of every sampled frame is in a track
    hits = s.text("a car", k=10)
    assert len(hits) == 4 and len({h.track_id for h in hits}) == 4  # each car once, not once per frame
    # a track matches a time range it was in view during: after 2.5 s, all but the red car that left
    late = s.text("a car", k=10, after=START + 2.5)
    assert len(late) == 3 and all(h.last_seen >= START + 2.5 for h in late)
    early = s.text("a car", k=10, before=START + 1.0)
    assert len(early) == 3 and all(h.first_seen < START + 1.0 for h in early)
    assert [h.time for h in s.text("a car", k=10)] == [h.first_seen for h in s.text("a car", k=10)]


def test_detector_boxes_frames_without_annotations_and_reports_frames_with_none(repo, tmp_path):  # noqa: F811
    """detect.tiny: the transformers detector path (a random-init RT-DETR built from a config) runs
    inside build_index on every frame without an annotation file; a frame where it finds nothing
    is reported and kept as one whole-frame row, never lost."""
    import yaml

    frames = tmp_path / "frames"
    _frames(frames)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["detect"].update(tiny=True, threshold=0.0, batch_size=2)  # every query box of the noise model
    params["curate"]["boxes"]["min_side"] = 1  # its noise boxes are small
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    assert m["detected_frames"] == 2 and m["vehicles"] >= 1
    from carsearch.index.search import CarSearch

    rows = CarSearch(repo / "data/index").table.to_arrow().to_pylist()
    assert {r["box_source"] for r in rows if r["box"] is not None} == {"detector:tiny-rtdetr"}
    assert {r["frame_id"] for r in rows} and all(0 <= r["box"][0] < r["box"][2] <= 320 for r in rows if r["box"])

    params["detect"]["threshold"] = 1.0  # nothing passes: both frames are reported, each stays one row
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    assert m["frames_without_vehicle"] == 2 and m["rows"] == 2 and m["vehicles"] == 0
    live = json.loads((repo / "data/index/carsearch_index.json").read_text())["version"]
    listed = (repo / "data/index" / live / "no_vehicle.jsonl").read_text().splitlines()
    assert len(listed) == 2 and all("cam-" in x for x in listed)


def test_index_add_of_traffic_frames_makes_the_rows_a_build_makes(repo, tmp_path):  # noqa: F811
    """`carsearch index add FOLDER` of traffic frames runs the build's row builder: each annotated
    vehicle is a row with its crop, frame, box, camera and capture time, exactly as build_index of
    that folder makes them (index add used to append whole frames without boxes, camera or time,
    so a `--camera` filter missed everything added between repros)."""
    from carsearch.core.columns import ROW
    from carsearch.core.params import load_config
    from carsearch.index.append import add_images
    from carsearch.index.search import CarSearch

    frames = tmp_path / "frames"
    assert index_two_cameras(repo, frames)["rows"] == 4
    cols = [c for c in ROW.metadata if c != "split"]
    built = sorted(CarSearch(repo / "data/index").table.search().select(cols).limit(None).to_list(), key=str)

    _build(repo, corpus="ingested")  # the demo corpus; then the frames come in by `index add`
    s = CarSearch(repo / "data/index")
    res = add_images([frames], load_config(repo / "params.yaml"), repo)
    assert res["added"] == 4 and res["rejected"] == 0, res
    s.refresh()
    rows = s.table.search().select(cols).limit(None).to_list()
    added = sorted((r for r in rows if r["origin"].startswith(str(frames))), key=str)
    assert added == built and {r["camera"] for r in added} == {"cam-a", "cam-b"}
    assert all(r["box"] is not None and r["time"] is not None for r in added)
    assert {h.camera for h in s.text("a car", k=50, camera="cam-b")} == {"cam-b"}


def test_labels_csv_track_ids_link_a_cameras_stills_into_tracks(repo, tmp_path):  # noqa: F811
    """Three stills of one camera 2 s apart, a labels.csv `track_id` per box: build_index keeps one
    row per track (first/last seen, the members) with its image direction; a box without an id is
    its own row."""
    import yaml

    from carsearch.index.search import CarSearch

    frames = tmp_path / "frames"
    (frames / "cam-a").mkdir(parents=True)
    lines = ["file,x1,y1,x2,y2,color,track_id"]
    for k in range(3):
        im = Image.new("RGB", (320, 180), (90, 90, 90))
        x = 20 + 100 * k  # the red car drives right, the blue one stands
        im.paste((220, 20, 20), (x, 20, x + 80, 70))
        im.paste((20, 40, 220), (230, 120, 300, 170))
        name = f"cam-a/20260301_0800{2 * k:02d}.jpg"
        im.save(frames / name, quality=92)
        lines += [f"{name},{x},20,{x + 80},70,red,7", f"{name},230,120,300,170,blue,9"]
    im.paste((40, 40, 40), (0, 0, 60, 40))
    im.save(frames / "cam-a/20260301_090000.jpg", quality=92)  # an hour later: no ids
    lines.append("cam-a/20260301_090000.jpg,230,120,300,170,blue,")
    (frames / "labels.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["capture"].update(pattern="{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg", track_gap_s=60)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    m = _build(repo, corpus="folder", corpus_path=str(frames), subfolder_key=None)
    assert m["rows"] == 3, m

    rows = CarSearch(repo / "data/index").table.to_arrow().to_pylist()
    red = [r for r in rows if r["color"] == "red"]
    blue = sorted((r for r in rows if r["color"] == "blue"), key=lambda r: r["time"])
    assert len(red) == 1 and len(blue) == 2
    assert red[0]["direction"] == "right" and red[0]["speed_unit"] == "px/s" and abs(red[0]["speed"] - 50) < 2
    assert len(json.loads(red[0]["track_json"])) == 3 and red[0]["last_seen"] - red[0]["first_seen"] == 4
    assert blue[0]["direction"] == "stopped" and not blue[1]["track_id"]
