"""Tests of the TORCS software renderer (src/carsearch_world)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carsearch_world import (
    COLORS,
    VIEWS,
    AC3DError,
    Camera,
    contact_sheet,
    default_torcs_dir,
    find_torcs_cars,
    load_car,
    parse_ac3d,
    rasterize,
    render_torcs,
    sample_bilinear,
    view_from_azimuth,
)
from carsearch_world.raster import interpolate
from carsearch_world.scene import recolour_texture

# ----------------------------------------------------------------------------- fixtures

BOX_V = [
    (-2, 0.2, -0.9),
    (2, 0.2, -0.9),
    (2, 0.2, 0.9),
    (-2, 0.2, 0.9),
    (-2, 1.2, -0.9),
    (2, 1.2, -0.9),
    (2, 1.2, 0.9),
    (-2, 1.2, 0.9),
]  # AC3D: x fwd, y up, z right
# faces: (vertex indices, uv region) -- region "paint" = left half of texture, "trim" = right half
BOX_F = [
    ((4, 5, 6, 7), "paint"),
    ((0, 1, 5, 4), "paint"),
    ((3, 2, 6, 7), "paint"),
    ((1, 2, 6, 5), "trim"),
    ((0, 3, 7, 4), "paint"),
    ((0, 1, 2, 3), "trim"),
]
UV = {
    "paint": [(0.05, 0.05), (0.45, 0.05), (0.45, 0.95), (0.05, 0.95)],
    "trim": [(0.55, 0.05), (0.95, 0.05), (0.95, 0.95), (0.55, 0.95)],
}
PAINT = (30, 60, 200)
TRIM = (10, 10, 10)


def write_box_ac(path: Path, tex: str, acc: bool = False, loc: tuple | None = None) -> None:
    lines = [
        "AC3Db",
        'MATERIAL "m" rgb 1 1 1  amb 1 1 1  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0',
        "OBJECT world",
        "kids 1",
        "OBJECT poly",
        'name "body"',
    ]
    lines += (
        [f'texture "{tex}" base', f'texture "{tex}" tiled', f'texture "{tex}" skids', f'texture "{tex}" shad']
        if acc
        else [f'texture "{tex}"']
    )
    if loc:
        lines.append("loc %g %g %g" % loc)
    lines.append(f"numvert {len(BOX_V)}")
    lines += [" ".join(map(str, v)) + (" 0 1 0" if acc else "") for v in BOX_V]
    lines.append(f"numsurf {len(BOX_F)}")
    for idx, reg in BOX_F:
        lines += ["SURF 0x30", "mat 0", "refs 4"]
        for i, uv in zip(idx, UV[reg]):
            extra = " 0 0 0 0 0 0" if acc else ""
            lines.append(f"{i} {uv[0]} {uv[1]}{extra}")
    lines.append("kids 0")
    path.write_text("\n".join(lines) + "\n")


def write_texture(path: Path) -> None:
    a = np.zeros((16, 16, 3), np.uint8)
    a[:, :8] = PAINT
    a[:, 8:] = TRIM
    Image.fromarray(a).save(path, format="SGI")


CAR_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE params SYSTEM "../../../../src/libs/tgf/params.dtd">
<params name="Test Car" type="template">
  <section name="Car"><attstr name="category" val="Track-RWD"/></section>
  <section name="Front Axle"><attnum name="xpos" val="1.3"/></section>
  <section name="Rear Axle"><attnum name="xpos" val="-1.3"/></section>
  <section name="Front Right Wheel"><attnum name="ypos" val="-0.8"/><attnum name="rim diameter" val="16"/>
    <attnum name="tire width" val="225"/><attnum name="tire height-width ratio" val=".5"/></section>
  <section name="Front Left Wheel"><attnum name="ypos" val="0.8"/><attnum name="rim diameter" val="16"/>
    <attnum name="tire width" val="225"/><attnum name="tire height-width ratio" val=".5"/></section>
  <section name="Rear Right Wheel"><attnum name="ypos" val="-0.8"/><attnum name="rim diameter" val="16"/>
    <attnum name="tire width" val="225"/><attnum name="tire height-width ratio" val=".5"/></section>
  <section name="Rear Left Wheel"><attnum name="ypos" val="0.8"/><attnum name="rim diameter" val="16"/>
    <attnum name="tire width" val="225"/><attnum name="tire height-width ratio" val=".5"/></section>
</params>
"""


def make_car(cars_dir: Path, name: str, broken: bool = False) -> Path:
    d = cars_dir / name
    d.mkdir(parents=True)
    (d / f"{name}.xml").write_text(CAR_XML)
    write_texture(d / f"{name}.rgb")
    write_box_ac(d / f"{name}.acc", f"{name}.rgb", acc=True)
    if broken:
        text = (d / f"{name}.acc").read_text().splitlines()
        (d / f"{name}.acc").write_text("\n".join(text[:20]) + "\nSURF 0x30\nrefs 3\n999 0 0\n")
    return d


@pytest.fixture()
def torcs_tree(tmp_path: Path) -> Path:
    cars = tmp_path / "torcs" / "usr/share/games/torcs/cars"
    make_car(cars, "boxcar")
    make_car(cars, "brokencar", broken=True)
    return tmp_path / "torcs"


# ----------------------------------------------------------------------------- parser


def test_parse_ac_polygons_and_loc(tmp_path: Path) -> None:
    write_box_ac(tmp_path / "a.ac", "t.rgb", loc=(1.0, 0.0, 0.0))
    m = parse_ac3d(tmp_path / "a.ac")
    assert m.n_tris == 12  # 6 quads fanned
    assert m.textures == ["t.rgb"] and (m.tex == 0).all()
    assert m.materials[0].name == "m" and m.materials[0].shi == 10
    xs = m.pos[..., 0]
    assert xs.min() == pytest.approx(-1.0) and xs.max() == pytest.approx(3.0)  # loc applied
    assert m.two_sided.all()
    assert 0.0 <= m.uv.min() and m.uv.max() <= 1.0


def test_parse_acc_multitexture_strip_and_nesting(tmp_path: Path) -> None:
    text = """AC3Db
MATERIAL "" rgb 1 1 1 amb 1 1 1 emis 0 0 0 spec 0 0 0 shi 0 trans 0
OBJECT world
kids 1
OBJECT group
loc 0 0 5
kids 1
OBJECT poly
name "strip"
texture "base.rgb" base
texture "tiled.rgb" tiled
texture "skids.rgb" skids
texture "shad.rgb" shad
numvert 4
0 0 0 0 1 0
1 0 0 0 1 0
0 1 0 0 1 0
1 1 0 0 1 0
numsurf 1
SURF 0x14
mat 0
refs 4
0 0.0 0.0 0.5 0.5 0.1 0.1 0.2 0.2
1 1.0 0.0 0.5 0.5 0.1 0.1 0.2 0.2
2 0.0 1.0 0.5 0.5 0.1 0.1 0.2 0.2
3 1.0 1.0 0.5 0.5 0.1 0.1 0.2 0.2
kids 0
"""
    (tmp_path / "s.acc").write_text(text)
    m = parse_ac3d(tmp_path / "s.acc")
    assert m.n_tris == 2  # strip of 4 refs
    assert m.textures == ["base.rgb"]  # the base layer of the multi-texture block
    assert m.pos[..., 2].min() == pytest.approx(5.0)  # parent group's loc
    assert sorted(map(tuple, m.uv.reshape(-1, 2).round(3).tolist()))[0] == (0.0, 0.0)  # first UV pair
    np.testing.assert_allclose(m.nrm[0, 0], [0, 1, 0])  # .acc vertex normals


def test_parse_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.ac").write_text("not an ac file\n")
    with pytest.raises(AC3DError):
        parse_ac3d(tmp_path / "bad.ac")
    write_box_ac(tmp_path / "b.ac", "t.rgb")
    lines = (tmp_path / "b.ac").read_text().splitlines()
    (tmp_path / "b.ac").write_text("\n".join(lines[:-8]) + "\n")  # truncated
    with pytest.raises(AC3DError):
        parse_ac3d(tmp_path / "b.ac")


# ----------------------------------------------------------------------------- rasterizer


def _quad(x0, x1, y0, y1, z):
    a, b, c, d = (x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)
    return np.array([[a, b, c], [a, c, d]], np.float32)


def test_rasterize_coverage_and_zbuffer() -> None:
    W = H = 64
    f = 32.0  # 90 deg fov: at z=2 the image spans x in [-2, 2]
    far = _quad(-1, 1, -1, 1, 2.0)  # centred, covers the middle half
    near = _quad(0, 1.5, 0, 1.5, 1.5)  # closer, lower-right quadrant
    for tris, near_ids in ((np.concatenate([far, near]), (2, 3)), (np.concatenate([near, far]), (0, 1))):
        fr = rasterize(tris, W, H, f)
        assert fr.tri[32 - 16, 32 - 16] in (set(range(4)) - set(near_ids))  # far quad, upper-left
        assert fr.tri[40, 40] in near_ids  # near quad wins regardless of draw order
        assert fr.tri[2, 2] == -1 and np.isinf(fr.depth[2, 2])
        assert fr.depth[40, 40] == pytest.approx(1.5, rel=1e-4)
    fr = rasterize(far, W, H, f)
    covered = (fr.tri >= 0).sum()
    assert abs(covered - 32 * 32) <= 64  # area of the projected square, up to edge pixels
    b = fr.bary[fr.tri >= 0]
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-5)


def test_rasterize_drops_triangles_behind_camera() -> None:
    tri = np.array([[[-1, -1, -1], [1, -1, 2], [0, 1, 2]]], np.float32)
    assert (rasterize(tri, 16, 16, 8.0).tri == -1).all()


def test_texture_colours_appear() -> None:
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:, :4] = (255, 0, 0)
    tex[:, 4:] = (0, 0, 255)
    tris = _quad(-1, 1, -1, 1, 2.0)
    uv = np.array([[[0, 1], [1, 1], [1, 0]], [[0, 1], [1, 0], [0, 0]]], np.float32)
    fr = rasterize(tris, 64, 64, 32.0)
    col = sample_bilinear(tex, interpolate(fr, uv))
    img = np.zeros((64 * 64, 3), np.float32)
    img[fr.tri.ravel() >= 0] = col
    img = img.reshape(64, 64, 3)
    np.testing.assert_allclose(img[32, 20], [1, 0, 0], atol=0.02)  # left half red
    np.testing.assert_allclose(img[32, 44], [0, 0, 1], atol=0.02)  # right half blue


def test_camera_look_at_projects_target_to_centre() -> None:
    cam = Camera.look_at((10, 3, 6), (0, 0, 0.5), 50.0, 224, 224)
    p = cam.project(cam.to_cam(np.array([0, 0, 0.5])))
    np.testing.assert_allclose(p, [112, 112], atol=1e-6)


def test_view_from_azimuth() -> None:
    assert view_from_azimuth(0) == "front" and view_from_azimuth(180) == "rear"
    assert view_from_azimuth(-90) == "side" and view_from_azimuth(135) == "three-quarter"
    assert view_from_azimuth(-40) == "three-quarter" and view_from_azimuth(200) == "rear"


# ----------------------------------------------------------------------------- car + API


def test_load_car_and_recolour_keeps_trim(torcs_tree: Path) -> None:
    folder = torcs_tree / "usr/share/games/torcs/cars/boxcar"
    car = load_car(folder)
    assert car.model_id == "boxcar" and car.n_body_tris == 12
    assert car.pos.shape[0] > 12  # wheels added from the XML
    assert car.pos[..., 2].min() == pytest.approx(0.0, abs=1e-5)  # wheels touch the ground
    new = recolour_texture(car, (0.8, 0.1, 0.1))
    orig = car.textures[car.paint_tex][..., :3] / 255.0
    paint_px, trim_px = new[8, 2], new[8, 13]
    assert paint_px[0] > 0.6 and paint_px[2] < 0.2  # paint became red
    np.testing.assert_allclose(trim_px, orig[8, 13], atol=1e-3)  # dark trim untouched


def test_render_torcs_skips_broken_and_is_deterministic(torcs_tree: Path, tmp_path: Path, capsys) -> None:
    assert [p.name for p in find_torcs_cars(torcs_tree)] == ["boxcar", "brokencar"]
    items1, skips = render_torcs(torcs_tree, tmp_path / "a", 6, size=64, seed=3, workers=1, progress=False)
    assert len(items1) == 6
    assert len(skips) == 1 and skips[0][0].endswith("brokencar") and skips[0][1].startswith("mesh brokencar.acc")
    assert "brokencar" in capsys.readouterr().err
    items2, _ = render_torcs(torcs_tree, tmp_path / "b", 6, size=64, seed=3, workers=2, progress=False)
    for (p1, l1), (p2, l2) in zip(items1, items2):
        assert p1.read_bytes() == p2.read_bytes() and l1 == l2  # same seed -> same bytes, any workers
    items3, _ = render_torcs(torcs_tree, tmp_path / "c", 6, size=64, seed=4, workers=1, progress=False)
    assert [p.read_bytes() for p, _ in items3] != [p.read_bytes() for p, _ in items1]
    p, lab = items1[0]
    with Image.open(p) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    assert lab["model_id"] == "boxcar" and lab["color"] in COLORS and lab["view"] in VIEWS
    assert lab["camera"] in ("pole", "dashcam") and lab["scene"]
    sheet = contact_sheet(items1, tmp_path / "sheet.png", n=6, cols=3)
    assert Image.open(sheet).size[0] == 3 * 224


def test_broken_texture_is_skipped(torcs_tree: Path, tmp_path: Path) -> None:
    from carsearch_world import load_cars

    d = make_car(torcs_tree / "usr/share/games/torcs/cars", "badtex")
    (d / "badtex.rgb").write_bytes(b"not an sgi image")
    cars, skips = load_cars(find_torcs_cars(torcs_tree))
    assert [c.model_id for c in cars] == ["boxcar"]
    reasons = dict((Path(f).name, r) for f, r in skips)
    assert "texture badtex.rgb" in reasons["badtex"] and "brokencar" in reasons


def test_colours_and_views_balanced(torcs_tree: Path, tmp_path: Path) -> None:
    items, _ = render_torcs(
        torcs_tree, tmp_path / "o", 8, size=48, seed=0, workers=1, colors=["red", "blue"], progress=False
    )
    cols = [lab["color"] for _, lab in items]
    views = [lab["view"] for _, lab in items]
    assert cols.count("red") == cols.count("blue") == 4
    assert all(views.count(v) == 2 for v in VIEWS)


# ----------------------------------------------------------------------------- real TORCS data


def _real_dir() -> Path | None:
    d = default_torcs_dir()
    return d if find_torcs_cars(d) else None


@pytest.mark.skipif(_real_dir() is None, reason="torcs-data not fetched (run scripts/fetch_torcs.sh)")
def test_real_torcs_models(tmp_path: Path) -> None:
    d = _real_dir()
    cars = find_torcs_cars(d)
    assert len(cars) >= 10
    p406 = next((c for c in cars if c.name == "p406"), cars[0])
    car = load_car(p406)
    assert car.n_body_tris > 1000
    assert 3.5 < car.length < 5.5 and 1.0 < car.height < 1.6
    items, skips = render_torcs(d, tmp_path / "out", 4, size=224, seed=0, workers=1, progress=False)
    assert not skips and len(items) == 4
    for p, lab in items:
        assert {"model_id", "make", "model", "body_type", "color", "view", "scene", "camera"} <= lab.keys()
        assert lab["body_type"] in (
            "sedan",
            "coupe",
            "hatchback",
            "suv",
            "pickup",
            "van",
            "sports car",
            "buggy",
            "race car",
            "formula car",
        )
        a = np.asarray(Image.open(p).convert("RGB"), np.float32)
        assert a.shape == (224, 224, 3) and a.std() > 10  # not a blank frame
