"""The street world (src/carsearch_world): the everyday fleet renders as what it claims, plates are
drawn, the colour mix holds, and the camera corridor sees one identity at several cameras."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime

import numpy as np
import pytest
import yaml

from carsearch_world.corridor import render_corridor, write_coco, write_mot
from carsearch_world.designs import TYPES, design
from carsearch_world.fleet import T_ATLAS, T_PLATE_F, T_PLATE_R, make_vehicle
from carsearch_world.plates import FORMATS, plate_text, plate_texture
from carsearch_world.raster import rasterize
from carsearch_world.scene import PALETTE, make_camera, render_scene, sample_scene
from carsearch_world.street import build_fleet, render_fleet
from carsearch_world.video import write_videos
from conftest import REPO, run

MIX = yaml.safe_load((REPO / "conf/data/_base.yaml").read_text())["street"]["fleet"]


def _fleet(n=60, seed=0):
    return build_fleet(seed, n, MIX["types"], MIX["colors"], MIX["liveries"], 2, "us")


def _visible_textures(car, view, seed=0):
    spec = sample_scene(np.random.default_rng(seed), "red", view, "pole", (90, 95), (0.8, 0.9))
    cam = make_camera(car, spec, 448)
    frag = rasterize(cam.to_cam(car.pos.reshape(-1, 3)).reshape(-1, 3, 3), 448, 448, cam.f)
    t = frag.tri[frag.tri >= 0]
    return Counter(car.tex[t].tolist())


@pytest.mark.parametrize("body", TYPES)
def test_every_body_type_renders_with_its_labels(body):
    for variant in range(3):
        d = design(body, variant)
        car = make_vehicle(d, "1ABC-234", "us", None, "v00001")
        lab = car.labels()
        assert (lab["body_type"], lab["variant"], lab["plate"], lab["identity"]) == (
            body,
            variant,
            "1ABC-234",
            "v00001",
        )
        assert 3.0 < car.length < 13.0 if body not in ("motorcycle",) else 1.5 < car.length < 2.6
        spec = sample_scene(np.random.default_rng(variant), "red", "three-quarter", "pole", (90, 95), (0.8, 0.9))
        spec.paint, spec.weather, spec.blur, spec.noise = PALETTE["red"], "", 0.0, 0.0
        img = np.asarray(render_scene(car, spec, 96), np.float32)
        red = (img[..., 0] > 90) & (img[..., 0] > 1.8 * img[..., 1]) & (img[..., 0] > 1.8 * img[..., 2])
        moto = body == "motorcycle"  # a motorcycle's paint is its tank and tail
        assert red.mean() > (0.02 if moto else 0.04), (
            f"{body} v{variant}: the red paint covers {red.mean():.1%} of the frame"
        )
        # the painted body seen, not only glass and tyres
        assert _visible_textures(car, "three-quarter", variant)[T_ATLAS] > (500 if moto else 2000)


def test_variants_of_a_type_differ_in_shape():
    for body in TYPES:
        shapes = {(round(design(body, v).length, 2), round(design(body, v).roof, 2)) for v in range(4)}
        assert len(shapes) == 4, body
    assert design("pickup", 0).bed != design("pickup", 1).bed  # the bed/cab split varies
    assert design("van", 1).side_glass < 1 and design("van", 0).side_glass == 1  # panel van vs minivan


def test_plates_front_and_rear_are_drawn_text_a_camera_sees():
    car = make_vehicle(design("sedan", 0), "7KXR-482", "us")
    front, rear = _visible_textures(car, "front"), _visible_textures(car, "rear")
    assert front[T_PLATE_F] > 150 and front[T_PLATE_R] == 0
    assert rear[T_PLATE_R] > 150 and rear[T_PLATE_F] == 0
    for region in FORMATS:
        tex = plate_texture(plate_text(np.random.default_rng(1), region), region).astype(np.float32)
        ink = tex.mean(-1) < 110  # dark text strokes on the light plate
        assert 0.04 < ink[4:-4, 4:-4].mean() < 0.5, region
        cols = np.nonzero(ink[4:-4, 4:-4].any(0))[0]
        assert cols.size > tex.shape[1] * 0.4  # text spans the plate
    moto = make_vehicle(design("motorcycle", 0), "1ABC-234", "us")
    assert T_PLATE_R in set(moto.tex.tolist()) and T_PLATE_F not in set(moto.tex.tolist())


def test_plate_formats_and_unknown_region():
    rng = np.random.default_rng(0)
    assert all(len(plate_text(rng, "us")) == 8 and plate_text(rng, "us")[4] == "-" for _ in range(5))
    assert plate_text(rng, "uk")[4] == " "
    with pytest.raises(ValueError, match=r"plate region 'fr': choose from \['eu', 'uk', 'us'\]"):
        plate_text(rng, "fr")


def test_colour_mix_is_respected_and_common_colours_lead():
    fleet = build_fleet(3, 3000, MIX["types"], MIX["colors"], {}, 4, "us")
    n = Counter(f.color for f in fleet)
    total = sum(MIX["colors"].values())
    for c, w in MIX["colors"].items():
        assert abs(n[c] / len(fleet) - w / total) < 0.03, (c, n[c])
    assert {c for c, _ in n.most_common(4)} == {"white", "black", "grey", "silver"}
    types = Counter(f.body_type for f in fleet)
    assert set(types) == set(TYPES) and types["sedan"] > types["bus"] * 3
    assert len({f.plate for f in fleet}) == len(fleet)  # plates are unique
    only_red = build_fleet(3, 50, MIX["types"], {"red": 1.0}, {}, 4, "us")
    assert {f.color for f in only_red} == {"red"}
    with pytest.raises(ValueError, match=r"street fleet colors: unknown \['teal'\]"):
        build_fleet(3, 10, MIX["types"], {"teal": 1.0}, {}, 4, "us")


def test_liveries_force_their_colour_and_show_on_the_roof():
    fleet = build_fleet(0, 400, MIX["types"], MIX["colors"], {"taxi": 0.5, "police": 0.5}, 4, "us")
    taxis = [f for f in fleet if f.livery == "taxi"]
    police = [f for f in fleet if f.livery == "police"]
    assert taxis and police and {f.color for f in taxis} == {"yellow"} and {f.color for f in police} == {"white"}
    assert {f.body_type for f in police} <= {"sedan", "suv", "wagon"}
    plain = make_vehicle(design("sedan", 0), "1ABC-234", "us")
    cop = make_vehicle(design("sedan", 0), "1ABC-234", "us", "police")
    assert cop.height > plain.height and cop.labels()["model"].endswith("police")


def test_single_renders_are_labelled_and_identical_for_any_worker_count(tmp_path):
    fleet = _fleet()
    a = render_fleet(fleet, tmp_path / "a", 10, 64, seed=5, workers=1)
    b = render_fleet(fleet, tmp_path / "b", 10, 64, seed=5, workers=2)
    assert [p.read_bytes() for p, _ in a] == [p.read_bytes() for p, _ in b]
    by_id = {f.identity: f for f in fleet}
    for _, lab in a:
        ident = by_id[lab["identity"]]
        assert (lab["color"], lab["plate"], lab["body_type"], lab["source"]) == (
            ident.color,
            ident.plate,
            ident.body_type,
            "street",
        )
    assert len({lab["body_type"] for _, lab in a}) == 10  # body types spread evenly


def test_plate_legibility_follows_view_and_distance(tmp_path):
    """Close-ups from the front or rear see a legible plate; side views none; far corridor vehicles
    have plates too small to read."""
    items = render_fleet(_fleet(), tmp_path / "a", 24, 224, seed=1, workers=2)
    by_view = defaultdict(list)
    for _, lab in items:
        by_view[lab["view"]].append(lab)
        assert (lab["plate_side"] == "none") == (lab["plate_px"] == 0)
    assert all(not lab["plate_legible"] for lab in by_view["side"])
    fr = [lab for v in ("front", "rear") for lab in by_view[v] if lab["body_type"] != "motorcycle"]
    assert fr and sum(lab["plate_legible"] for lab in fr) / len(fr) > 0.6
    assert all(lab["plate_side"] == "front" for lab in by_view["front"] if lab["plate_side"] != "none")
    frames = render_corridor(
        _fleet(80), tmp_path / "f", seed=2, sessions=1, cameras=2, frames_per_camera=4, size=(160, 120), workers=2
    )
    boxes = [b["labels"] for _, _, bs, _ in frames for b in bs]
    assert boxes and all(not L["plate_legible"] for L in boxes if L["plate_px"] < 10)
    assert sum(L["plate_legible"] for L in boxes) < len(boxes)


def test_corridor_sees_identities_at_several_cameras_with_motion_labels(tmp_path):
    fleet = _fleet(80)
    items = render_corridor(
        fleet, tmp_path / "f", seed=2, sessions=1, cameras=4, frames_per_camera=8, size=(160, 120), workers=2
    )
    assert len(items) == 32
    cams: dict[str, set] = defaultdict(set)
    seen: dict[str, list] = defaultdict(list)
    for p, lab, boxes, epoch in items:
        assert p.is_file() and lab["camera"] in {"cam-1", "cam-2", "cam-3", "cam-4"}
        assert datetime.fromisoformat(lab["time"]).timestamp() == epoch
        for b in boxes:
            L = b["labels"]
            assert b["frame"] == p.stem and 0 <= b["x1"] < b["x2"] <= 160 and 0 <= b["y1"] < b["y2"] <= 120
            assert L["camera"] == lab["camera"] and L["time"] == lab["time"] and L["plate"]
            assert L["direction"] in ("eastbound", "westbound", "parked")
            assert (L["speed_kmh"] == 0) == (L["direction"] == "parked") and L["speed_kmh"] <= 54
            cams[L["identity"]].add(L["camera"])
            seen[L["identity"]].append((int(L["camera"][-1]), epoch, L["direction"]))
    moving = [i for i, s in seen.items() if s[0][2] != "parked"]
    multi = [i for i in moving if len(cams[i]) >= 2]
    assert len(moving) >= 8 and len(multi) / len(moving) > 0.5, (len(multi), len(moving))
    for i in multi:  # eastbound vehicles reach the higher-numbered cameras later, westbound earlier
        first = {}
        for cam, t, d in seen[i]:
            first.setdefault(cam, t)
        order = [first[c] for c in sorted(first)]
        assert order == (sorted(order) if seen[i][0][2] == "eastbound" else sorted(order, reverse=True)), i
    mot = write_mot(items, tmp_path / "mot")
    assert len(mot) == 4
    line = mot[0].read_text().splitlines()[0].split(",")
    assert len(line) == 9 and int(line[0]) >= 1 and line[6] == "1"
    # COCO with attributes beside each MOT file: the same boxes, track ids and labels, read by the product
    from carsearch.sources.boxes import read_coco

    coco = write_coco(items, tmp_path / "coco")
    assert [c.stem for c in coco] == [m.stem for m in mot]
    doc = json.loads(coco[0].read_text())
    mot_rows = sorted(tuple(int(float(v)) for v in x.split(",")[:2]) for x in mot[0].read_text().splitlines())
    image_frame = {im["id"]: im["frame_index"] + 1 for im in doc["images"]}
    assert sorted((image_frame[a["image_id"]], a["track_id"]) for a in doc["annotations"]) == mot_rows
    got, problems = read_coco(coco[0], coco[0].name)
    assert problems == [] and len(got) == 8
    ann = [b for bs in got.values() for b in bs]
    assert len(ann) == len(doc["annotations"]) and all(b["labels"]["plate"] and b["labels"]["identity"] for b in ann)
    cam1 = {p.name: (boxes, lab) for p, lab, boxes, _ in items if lab["camera"] == "cam-1"}
    for name, bs in got.items():
        truth, lab = cam1[name]
        assert [b["class"] for b in bs] == [b["class"] for b in truth]
        assert [b["labels"]["direction"] for b in bs] == [b["labels"]["direction"] for b in truth]
    # each camera as a video the folder corpus' video path reads back: 8 frames, camera time from its stamp
    from carsearch.detection.video import iter_frames, probe

    videos = write_videos(items, tmp_path / "videos", 1.5)
    assert [v.name for v in videos] == [f"session0_cam-{k}.mp4" for k in range(1, 5)]
    meta = probe(videos[1])
    first = [e for _, lab, _, e in items if lab["camera"] == "cam-2" and lab["frame_index"] == 0][0]
    assert (meta["width"], meta["height"]) == (160, 120) and abs(meta["start_time"] - first) < 1
    got = list(iter_frames(videos[1], fps=1 / 1.5))
    assert len(got) == 8 and abs(got[-1][1] - 7 * 1.5) < 0.01


def test_street_source_through_the_ingest_stage(tmp_path):
    """The default source: single vehicles and corridor frames in the manifest; each frame's row has
    its camera and time and every vehicle's box with identity and plate; MOT files beside them."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["data"]["source"] == "street"
    st = params["data"]["street"]
    st.update(n_images=6, size=48, workers=1)
    st["fleet"]["n_identities"] = 40
    st["corridor"].update(sessions=1, cameras=2, frames_per_camera=2, size=[160, 120], moving=10, parked=2)
    st["highway"].update(frames=2, vehicles=8, size=[160, 120])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    run(["python", "-m", "carsearch.stages.ingest"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "data/raw/manifest.jsonl").read_text().splitlines()]
    frames = [r for r in rows if r["origin"].startswith("street/")]
    assert len(rows) == 12 and len(frames) == 6
    assert all(r["labels"]["plate"] and r["labels"]["source"] == "street" for r in rows if r not in frames)
    for f in frames:
        assert f["camera"] in ("cam-1", "cam-2", "hwy-1") and isinstance(f["time"], float)
        for b in f.get("boxes", []):
            assert b["frame"] == f["id"] and b["labels"]["identity"] and b["labels"]["plate"]
    assert sum(len(f.get("boxes", [])) for f in frames) > 0
    cams = ["session0_cam-1", "session0_cam-2", "session0_hwy-1"]  # the corridor's two cameras and the highway's
    assert sorted(p.name for p in (tmp_path / "data/raw/mot").iterdir()) == [f"{c}.txt" for c in cams]
    assert sorted(p.name for p in (tmp_path / "data/raw/coco").iterdir()) == [f"{c}.json" for c in cams]
    videos = sorted((tmp_path / "data/raw/video").iterdir())
    assert [p.name for p in videos] == [f"{c}.mp4" for c in cams]
    from carsearch.detection.video import iter_frames

    assert len(list(iter_frames(videos[0], fps=1 / st["corridor"]["interval_s"]))) == 2
    assert len(list(iter_frames(videos[2], fps=1 / st["highway"]["interval_s"]))) == 2


def test_video_frames_convert_to_yuv_in_integer_numpy():
    """The mp4s' colour conversion is ours (BT.601, integers), not libswscale's, whose SIMD path
    depends on buffer alignment and made the same frames encode to different bytes between runs."""
    from carsearch_world.video import yuv420p

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: Y 82, U 90, V 240 in limited-range BT.601
    out = yuv420p(rgb)
    assert out.shape == (6, 6) and out.dtype == np.uint8
    assert (out[:4] == 82).all() and (out[4:].reshape(-1)[:6] == 90).all() and (out[4:].reshape(-1)[6:] == 240).all()
    with pytest.raises(ValueError, match="even size, got 5x4"):
        yuv420p(np.zeros((4, 5, 3), np.uint8))
