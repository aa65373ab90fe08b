"""The bad-input corpus (scripts/make_bad_inputs.py) through the real folder source and ingest
stage: the run completes, nothing is lost, kept images look right, the summary adds up."""

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from carsearch.core import imaging
from carsearch.sources import files as data
from carsearch.sources import labels
from conftest import REPO, run

spec = importlib.util.spec_from_file_location("make_bad_inputs", REPO / "scripts" / "make_bad_inputs.py")
mbi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mbi)


def _as_reader(ws: Path) -> list[str]:
    """As root every file is readable, so run the stage as root without the capabilities that bypass
    file permissions (the chmod-000 case then is unreadable, as for any real user). The uid stays
    root's, so the package imports from wherever the clone lives (a private `mktemp -d` or /root,
    which another user could not enter); without setpriv the stage runs as is."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return []
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    probe = subprocess.run([*drop, sys.executable, "-c", "pass"], capture_output=True)
    return drop if probe.returncode == 0 else []


def _diff(stored: Image.Image, ref: Image.Image) -> float:
    a = np.asarray(stored.convert("RGB").resize(ref.size, Image.BILINEAR), dtype=np.float32)
    return float(np.abs(a - np.asarray(ref, dtype=np.float32)).mean())


def test_bad_input_corpus_ingests_completely(tmp_path):
    _run_corpus(tmp_path / "ws", tmp_path)


def _run_corpus(ws: Path, tmp_path: Path):
    expected = mbi.make_bad_inputs(ws / "corpus")
    src, refs = ws / "corpus" / "images", ws / "corpus" / "refs"
    assert len(expected) >= 25
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(
        source="folder", folder={"path": str(src), "subfolder_key": "color", "labels_csv": "labels.csv"}
    )
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    (ws / "dvc.yaml").write_text("stages: {}\n")
    prefix = _as_reader(ws)
    p = run(
        [*prefix, sys.executable, "-m", "carsearch.stages.ingest"],
        ws,
        env={"HOME": str(ws), "PYTHONPATH": str(REPO / "src")},
    )
    assert "Traceback" not in p.stdout and "DecompressionBomb" not in p.stdout

    manifest = [json.loads(x) for x in (ws / "data/raw/manifest.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (ws / "data/raw/rejects.jsonl").read_text().splitlines()]
    kept = {Path(r["origin"]).relative_to(src).as_posix(): r for r in manifest}
    rejected: dict[str, list[str]] = {}
    for r in rejects:
        rejected.setdefault(Path(r["path"]).relative_to(src).as_posix(), []).append(r["reason"])
    assert all(r["reason"] for r in rejects)

    # nothing lost: every entry of the folder is kept or rejected with a reason
    entries = set()
    for d, dirs, files in os.walk(src):
        rel_d = Path(d).relative_to(src)
        for n in dirs + files:
            rel = (rel_d / n).as_posix()
            if n.startswith(".") and d != str(src) or rel.startswith(".thumbs/"):
                continue
            if (rel_d / n).as_posix() == "labels.csv" or (
                os.path.isdir(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n))
            ):
                continue
            entries.add(rel)
    entries.add(".thumbs")
    assert entries <= set(kept) | set(rejected), entries - set(kept) - set(rejected)

    unreadable_as_root = not prefix and os.geteuid() == 0
    for rel, exp in expected.items():
        if exp["kept"] is None:
            continue
        if rel == "locked.jpg" and unreadable_as_root:
            continue  # root reads chmod-000 files; the stage could not be run as another user
        if exp["kept"]:
            assert rel in kept, (rel, rejected.get(rel))
            row = kept[rel]
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                stored = Image.open(ws / row["path"])
                stored.load()
            assert stored.mode in ("RGB", "L") and (row["width"], row["height"]) == stored.size
            assert max(stored.size) <= params["data"]["max_edge"]
            assert _diff(stored, Image.open(refs / exp["ref"]).convert("RGB")) < 12, rel
        else:
            assert rel in rejected and rel not in kept, rel
            assert any(exp["reason"] in reason for reason in rejected[rel]), (rel, rejected[rel])

    # the two silent corruptions, measured: upright and not washed out
    g16 = np.asarray(Image.open(ws / kept["gray16.png"]["path"]).convert("L"), dtype=np.float32)
    assert abs(g16.mean() - 127.5) < 3
    assert kept["exif6.jpg"]["width"] == 96 and kept["exif6.jpg"]["height"] == 64
    assert kept["exif6.jpg"]["reencoded"] == "EXIF orientation 6" and kept["exif6.jpg"]["path"].endswith(".jpg")
    assert kept["huge_10000.png"]["width"] == 2048
    assert kept["ok.jpg"].get("reencoded") is None  # a plain JPEG is stored byte for byte
    assert (ws / kept["ok.jpg"]["path"]).read_bytes() == (src / "ok.jpg").read_bytes()

    # labels: Excel's labels.csv (BOM, semicolons, " File"), synonyms, the colour folder above a year folder
    assert kept["ok.jpg"]["labels"] == {"color": "grey", "body_type": "sedan"}
    assert kept["exif6.jpg"]["labels"] is None  # rows 3 and 4 conflict: neither is used
    assert kept["photo.webp"]["labels"] == {"body_type": "van"}  # teal is not a colour
    assert kept["red/2024/car.jpg"]["labels"] == {"color": "red"}
    assert kept["nested/deeper/still/car.png"]["labels"] is None
    csv_reasons = rejected["labels.csv"]
    assert any("rows 3, 4 all name exif6.jpg with different labels" in r for r in csv_reasons)
    assert any("row 6: color 'teal'" in r for r in csv_reasons)
    assert rejected["gone.jpg"] == ["labels.csv row 5 names a file that does not exist"]

    # the summary: one line per kind with its count, an example and the fix; metrics agree
    metrics = json.loads((ws / "metrics/ingest.json").read_text())
    assert metrics["images"] == len(manifest) and metrics["rejected"] == len(rejects)
    kinds = Counter(data.reject_kind(r["reason"])[0] for r in rejects)
    assert metrics["rejected_by_kind"] == dict(kinds)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("rejected ")]
    assert len(lines) == len(kinds)
    for ln in lines:
        m = re.match(r"rejected (\d+) x (.+?): e\.g\. .+ -- fix: .+", ln)
        assert m and kinds[m.group(2)] == int(m.group(1)), ln
    assert f"ingest: {len(manifest)} images" in p.stdout and f"; {len(rejects)} rejected" in p.stdout


def test_labels_csv_variants(tmp_path):
    mbi.make_bad_inputs(tmp_path)
    var = tmp_path / "labels_variants"

    def read(name):
        return labels.read_labels_csv((var / name).read_bytes(), str(var / name))

    assert read("bom.csv").rows == {"a.jpg": {"color": "red", "view": "front"}}
    assert read("semicolon.csv").rows == {"a.jpg": {"color": "red", "view": "front"}}
    assert read("header_case.csv").rows == {"a.jpg": {"color": "red", "view": "rear"}}
    t = read("cp1252.csv")
    assert t.rows["Citroën.jpg"] == {"color": "red", "view": "side"}
    assert t.problems == [
        (
            str(var / "cp1252.csv"),
            "cp1252.csv is not UTF-8 (byte 0xeb at offset 53); read as cp1252, check accented labels",
        )
    ]
    t = read("duplicates.csv")
    assert t.rows == {"a.jpg": {"color": "red", "view": "front"}}
    assert [r for _, r in t.problems] == [
        "duplicates.csv rows 2, 3 all name a.jpg (identical; used once)",
        "duplicates.csv rows 4, 5 all name b.jpg with different labels; none used",
    ]
    with pytest.raises(ValueError, match=r"no_file_column.csv: needs a 'file' column"):
        read("no_file_column.csv")


def test_folder_labels_come_from_known_values_only():
    assert labels.folder_label("red/2024/a.jpg", "color") == "red"
    assert labels.folder_label("2024/a.jpg", "color") is None
    assert labels.folder_label("Gray/a.jpg", "color") == "grey"
    assert labels.folder_label("three_quarter/x/a.jpg", "view") == "three-quarter"
    assert labels.folder_label("cam_7/a.jpg", "scene") == "cam 7"  # no vocabulary: the parent folder


def test_open_rgb_fixes_what_convert_gets_wrong(tmp_path):
    mbi.make_bad_inputs(tmp_path)
    img = tmp_path / "images"
    # 16-bit: convert("RGB") clips to white; open_rgb scales
    assert np.asarray(Image.open(img / "gray16.png").convert("RGB")).mean() > 200
    assert abs(np.asarray(imaging.open_rgb(img / "gray16.png")).mean() - 127.5) < 2
    # EXIF orientation 6 comes out upright, the same through every reader that uses it
    ref = Image.open(tmp_path / "refs" / "exif6.jpg.png")
    from carsearch.model.clip import load_images

    for im in (imaging.open_rgb(img / "exif6.jpg"), load_images([img / "exif6.jpg"])[0]):
        assert im.size == (96, 64) and _diff(im, ref) < 12
    assert (
        _diff(imaging.open_rgb(img / "palette_alpha.png"), Image.open(tmp_path / "refs" / "palette_alpha.png.png")) < 2
    )
    # the bomb is refused from its header, without PIL's warning or error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"image too large \(20000x20000 = 400 MP, data.max_pixels is 150 MP\)"):
            imaging.open_rgb(img / "bomb.png")
        assert max(imaging.open_rgb(img / "huge_10000.png", max_edge=512).size) == 512
    assert imaging.open_rgb(img / "phone.heic").size == (92, 64)  # HEIC through pillow-heif
    with pytest.raises(ValueError, match=r"corrupt or truncated image \(HEIC/HEIF that its decoder cannot read\)"):
        imaging.check((img / "broken.heic").read_bytes())


def test_encode_image_sends_upright_pixels(tmp_path):
    from carsearch.captioning.requests import encode_image

    mbi.make_bad_inputs(tmp_path)
    sent = Image.open(io.BytesIO(encode_image(tmp_path / "images" / "exif6.jpg", 512)))
    assert sent.size == (96, 64)


def test_walk_folder_never_follows_a_loop(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"x")
    os.symlink("../..", tmp_path / "a" / "b" / "up")
    os.symlink(str(tmp_path / "a"), tmp_path / "alias")
    got = {Path(p).relative_to(tmp_path).as_posix(): r for p, r in data.walk_folder(tmp_path)}
    assert got["a/b/x.jpg"] is None
    assert got["a/b/up"].startswith("symlinked folder already read as .")
    assert got["alias"].startswith("symlinked folder already read as a") or got["a"].startswith("symlinked folder")


def test_stage_swaps_raw_dir_atomically(tmp_path):
    from carsearch.core.io import atomic_dir

    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "manifest.jsonl").write_text("old\n")
    with atomic_dir(raw) as new:
        (new / "manifest.jsonl").write_text("new\n")
        assert (raw / "manifest.jsonl").read_text() == "old\n"  # the old one stays readable meanwhile
    assert (raw / "manifest.jsonl").read_text() == "new\n" and not (raw / "images").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
