"""Reproducibility (docs/REPRODUCIBILITY.md).

1. The data stages are bit-exact on any machine: the renderer (synthetic box car, and the real
   TORCS cars when present), the demo drawings and the near-duplicate grouping give the same bytes
   whatever BLAS kernel (OPENBLAS_CORETYPE), numpy SIMD dispatch (NPY_DISABLE_CPU_FEATURES),
   libjpeg-turbo SIMD (JSIMD_FORCENONE) and worker count. Each setting runs in its own process.
2. Training is reproducible on one machine: same seed + same data -> same model content hash
   (two processes, different PYTHONHASHSEED).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest

from carsearch.core import xmath
from carsearch_world import default_torcs_dir, find_torcs_cars

REPO = Path(__file__).resolve().parents[1]
RENDER_DIR = REPO / "src" / "carsearch_world"

# ----------------------------------------------------------------------------- environments


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _numpy_dispatch() -> tuple[list[str], list[str]]:
    """(numpy SIMD dispatch targets this CPU runs, the AVX-512 ones among them). Only these may be
    named in NPY_DISABLE_CPU_FEATURES (numpy refuses to disable baseline features)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    on = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    return on, [t for t in on if "AVX512" in t or t == "X86_V4"]


def environments() -> dict[str, dict[str, str]]:
    """Named environment overrides; each is run in a fresh process. Kernels a CPU lacks are left
    out (forcing OpenBLAS' SkylakeX kernel on a CPU without AVX-512 can crash)."""
    flags = _cpu_flags()
    envs = {"sandybridge-2workers": {"OPENBLAS_CORETYPE": "Sandybridge", "REPRO_WORKERS": "2"}}
    if "avx2" in flags:
        envs["haswell"] = {"OPENBLAS_CORETYPE": "Haswell"}
    if "avx512f" in flags:
        envs["skylakex"] = {"OPENBLAS_CORETYPE": "SkylakeX"}
    on, avx512 = _numpy_dispatch()
    if avx512:
        envs["numpy-no-avx512"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512)}
    if on:
        envs["numpy-baseline-only"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(on), "REPRO_WORKERS": "2"}
    envs["jpeg-no-simd"] = {"JSIMD_FORCENONE": "1", "OPENBLAS_CORETYPE": "Sandybridge"}
    return envs


# what each process computes: sha256 of every rendered image, of the demo drawings, the
# near-duplicate grouping, and the bits of a few xmath results; plus what it actually ran on
RENDER_SCRIPT = r"""
import hashlib, json, os, sys, tempfile
from pathlib import Path
import numpy as np
from carsearch.core import xmath
from carsearch_world import render_torcs
from carsearch.sources.demo import demo_items
from carsearch.curation.split import perceptual_groups

torcs, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
workers = int(os.environ.get("REPRO_WORKERS", "1"))
out = {}
with tempfile.TemporaryDirectory() as tmp:
    items, _ = render_torcs(Path(torcs), Path(tmp) / "r", n, size=size, seed=7, workers=workers,
                            progress=False, framing=(0.7, 1.0) if size < 100 else None)
    out["render"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in items}
    paths = {p.stem: p for p, _ in items}
    for name, data, _, _ in demo_items(6, 64, 3):
        out.setdefault("demo", {})[name] = hashlib.sha256(data).hexdigest()
        p = Path(tmp) / name.replace("/", "_")
        p.write_bytes(data)
        paths[p.stem] = p
    out["groups"] = perceptual_groups(paths, 10)
# float intermediates (far more sensitive than 8-bit JPEGs): camera-space mesh, fragments, background
from carsearch_world.api import load_cars
from carsearch_world.torcs import find_torcs_cars
from carsearch_world.scene import _background, _lighting, make_camera, sample_scene
from carsearch_world.raster import rasterize
h = hashlib.sha256()
car = load_cars(find_torcs_cars(Path(torcs))[:1])[0][0]
for i, (col, view, cam_kind) in enumerate([("red", "front", "pole"), ("blue", "three-quarter", "dashcam"),
                                           ("white", "side", "pole"), ("black", "rear", "dashcam")]):
    spec = sample_scene(np.random.default_rng([11, i]), col, view, cam_kind)
    spec.time, spec.weather, spec.fog_density = ("dusk", "", 0.0) if i % 2 else ("night", "fog", 0.02)
    cam = make_camera(car, spec, 96)
    pc = cam.to_cam(car.pos.reshape(-1, 3)).reshape(-1, 3, 3)
    fr = rasterize(pc, 96, 96, cam.f)
    bg = _background(cam, spec, _lighting(spec), car, None)
    for a in (cam.R, pc, fr.tri, fr.bary, fr.depth, bg, car.pos, car.textures[car.paint_tex]):
        h.update(np.ascontiguousarray(a).tobytes())
out["floats"] = h.hexdigest()
x = np.linspace(-40.0, 40.0, 4001)
out["xmath"] = hashlib.sha256(b"".join(np.ascontiguousarray(v, np.float64).tobytes() for v in (
    xmath.sin(x), xmath.cos(x), xmath.exp(x), xmath.atan2(x, x[::-1]), xmath.asin(x / 40),
    xmath.pow(np.abs(x), 0.6), xmath.log(np.abs(x) + 1e-3)))).hexdigest()
try:
    from threadpoolctl import threadpool_info
    out["blas"] = sorted(i.get("architecture") or "" for i in threadpool_info() if i.get("user_api") == "blas")
except Exception:
    out["blas"] = []
print("REPRO " + json.dumps(out, sort_keys=True))
"""


def _run(script: str, args: list[str], env: dict[str, str], timeout: int = 600, cwd: Path | None = None) -> dict:
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "JSIMD_FORCENONE", "REPRO_WORKERS")
    }
    e.update(env)
    e["PYTHONPATH"] = os.pathsep.join((str(REPO / "src"), str(REPO / "tests")))  # tests/: testkit
    p = subprocess.run(
        [sys.executable, "-c", script, *args], env=e, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert p.returncode == 0, f"{env}: exit {p.returncode}\n{p.stderr[-3000:]}"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("REPRO "))
    return json.loads(line[len("REPRO ") :])


def _assert_same_everywhere(torcs: Path, n: int, size: int) -> None:
    envs = environments()
    results = {name: _run(RENDER_SCRIPT, [str(torcs), str(n), str(size)], env) for name, env in envs.items()}
    # the settings really took effect (else this test would prove nothing)
    for name, kernel in (("skylakex", "SkylakeX"), ("haswell", "Haswell"), ("sandybridge-2workers", "Sandybridge")):
        if name in results:
            assert set(results[name]["blas"]) <= {kernel}, (name, results[name]["blas"])
    ref_name = "haswell" if "haswell" in results else next(iter(results))
    ref = results[ref_name]
    assert len(ref["render"]) == n and len(ref["demo"]) == 6
    for name, res in results.items():
        for key in ("render", "demo", "groups", "floats", "xmath"):
            diff = (
                sorted(k for k in set(ref[key]) | set(res[key]) if ref[key].get(k) != res[key].get(k))
                if isinstance(ref[key], dict)
                else ([key] if ref[key] != res[key] else [])
            )
            assert not diff, f"{key}: {name} ({envs[name]}) differs from {ref_name} in {diff[:5]}"


# ----------------------------------------------------------------------------- 1. data stages


def test_render_bit_exact_across_blas_simd_and_workers(tmp_path: Path) -> None:
    from test_render import make_car  # the synthetic TORCS-layout box car

    cars = tmp_path / "torcs" / "usr/share/games/torcs/cars"
    make_car(cars, "boxcar")
    make_car(cars, "boxcar2")
    _assert_same_everywhere(tmp_path / "torcs", n=12, size=64)


@pytest.mark.skipif(
    not find_torcs_cars(default_torcs_dir()), reason="torcs-data not installed (scripts/fetch_torcs.sh)"
)
def test_real_torcs_render_bit_exact_across_blas_simd_and_workers() -> None:
    _assert_same_everywhere(default_torcs_dir(), n=10, size=128)


STREET_SCRIPT = r"""
import hashlib, json, os, tempfile
from pathlib import Path
import numpy as np
from carsearch_world import build_fleet, render_corridor, render_fleet, render_highway
from carsearch_world.street import vehicle_of

workers = int(os.environ.get("REPRO_WORKERS", "1"))
types = dict.fromkeys(("sedan", "suv", "pickup", "bus", "motorcycle", "van"), 1.0)
fleet = build_fleet(5, 40, types, {"white": 0.4, "black": 0.3, "red": 0.3}, {"taxi": 0.3, "police": 0.3}, 2, "eu")
out = {}
with tempfile.TemporaryDirectory() as tmp:
    singles = render_fleet(fleet, Path(tmp) / "s", 8, 64, seed=3, workers=workers)
    frames = render_corridor(fleet, Path(tmp) / "f", seed=3, sessions=1, cameras=2, frames_per_camera=2,
                             size=(160, 120), workers=workers, moving=10, parked=2)
    frames += render_highway(fleet, Path(tmp) / "h", seed=3, frames=2, vehicles=8, size=(160, 120), workers=workers)
    out["render"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p, _ in singles}
    out["render"] |= {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p, *_ in frames}
    out["boxes"] = hashlib.sha256(json.dumps([b for _, _, b, _ in frames], sort_keys=True).encode()).hexdigest()
h = hashlib.sha256()
for ident in fleet[:6]:
    car = vehicle_of(ident)
    for a in (car.pos, car.nrm, car.uv, *car.textures):
        h.update(np.ascontiguousarray(a).tobytes())
out["floats"] = h.hexdigest()
print("REPRO " + json.dumps(out, sort_keys=True))
"""


def test_street_world_bit_exact_across_blas_simd_and_workers() -> None:
    """The street world (fleet meshes, atlases and plates, single renders, corridor and highway frames and boxes)
    renders to the same bytes under every BLAS kernel / SIMD setting and worker count."""
    results = {name: _run(STREET_SCRIPT, [], env) for name, env in environments().items()}
    ref_name = next(iter(results))
    ref = results[ref_name]
    assert len(ref["render"]) == 8 + 4 + 2
    for name, res in results.items():
        assert res == ref, f"{name} ({environments()[name]}) differs from {ref_name}"


def _code_tokens(path: Path) -> str:
    """The file's code with strings and comments removed, tokens joined by spaces."""
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return " ".join(
        t.string
        for t in toks
        if t.type
        not in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    )


FORBIDDEN = re.compile(
    r"\bnp \. (sin|cos|tan|exp|exp2|expm1|log|log2|log10|log1p|power|float_power|arcsin|arccos|arctan|arctan2|"
    r"sinh|cosh|tanh|radians|degrees|deg2rad|rad2deg|hypot|dot|vdot|inner|matmul|einsum|tensordot|linalg)\b"
    r"|\bmath \. (sin|cos|tan|exp|log|pow|asin|acos|atan|atan2|hypot)\b"
    r"|@ (?!dataclass\b|property\b|staticmethod\b|classmethod\b)"
)


def test_renderer_source_has_no_blas_or_transcendentals() -> None:
    """Guard against regressions: pixel maths in the renderer goes through xmath (see its docstring)."""
    bad = {}
    for p in sorted(RENDER_DIR.glob("*.py")):
        if p.name == "xmath.py":
            continue
        code = _code_tokens(p)
        hits = [m.group(0) for m in FORBIDDEN.finditer(code)]
        # `**` calls libm pow() on floats (and np.power on arrays): only int ** int and **kwargs pass
        rest = re.sub(r"\b\d+ \*\* \d+\b", "", code)
        hits += [m.group(0) for m in re.finditer(r"(?<![(,] )\*\* \S+", rest)]
        if hits:
            bad[p.name] = hits
    assert not bad, f"BLAS / transcendental calls in the renderer (use core.xmath): {bad}"


def test_xmath_matches_libm_to_a_few_ulp() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-60, 60, 20000), [0.0, -0.0, 1e-300, xmath.PI, -xmath.PIO2]])
    for f, g in ((xmath.sin, np.sin), (xmath.cos, np.cos), (xmath.atan, np.arctan)):
        assert np.max(np.abs(f(x) - g(x))) < 1e-15  # a few ulp
    assert np.max(np.abs(xmath.tan(x[:100]) / np.tan(x[:100]) - 1)) < 1e-14
    e = rng.uniform(-700, 700, 20000)
    assert np.max(np.abs(xmath.exp(e) / np.exp(e) - 1)) < 1e-15
    pos = np.exp(rng.uniform(-600, 600, 20000))
    assert np.max(np.abs(xmath.log(pos) - np.log(pos)) / np.maximum(1, np.abs(np.log(pos)))) < 1e-15
    u = rng.uniform(-1, 1, 20000)
    assert np.max(np.abs(xmath.asin(u) - np.arcsin(u))) < 1e-15
    a, b = rng.normal(size=20000), rng.normal(size=20000)
    assert np.max(np.abs(xmath.atan2(a, b) - np.arctan2(a, b))) < 2e-15
    assert xmath.atan2(0.0, 0.0) == 0.0 and xmath.atan2(1.0, -1.0) == pytest.approx(3 * math.pi / 4, abs=1e-15)
    t = rng.uniform(0, 1, 20000)
    assert np.max(np.abs(xmath.pow(t, 0.6) - t**0.6)) < 1e-15 and xmath.pow(0.0, 0.6) == 0.0
    assert np.max(np.abs(xmath.ipow(t, 5) - t**5)) < 1e-15 and np.max(np.abs(xmath.ipow(t, 60) - t**60)) < 1e-14
    assert xmath.ipow(3.0, 0) == 1.0 and xmath.ipow(2.0, 10) == 1024.0
    assert isinstance(xmath.sin(1.0), float) and xmath.sin(1.0) == pytest.approx(math.sin(1.0), abs=2e-16)
    M, v = rng.normal(size=(3, 3)), rng.normal(size=(5, 3))
    np.testing.assert_allclose(xmath.mat_rows(v, M), v @ M.T, atol=1e-15)
    np.testing.assert_allclose(xmath.matmul33(M, M.T), M @ M.T, atol=1e-14)


def test_perceptual_groups_agree_with_imagehash(tmp_path: Path) -> None:
    """The fixed-order DCT gives imagehash.phash's grouping (ties at the median aside)."""
    import imagehash
    from PIL import Image

    from carsearch.curation.split import perceptual_groups
    from carsearch.sources.demo import demo_items

    paths = {}
    for name, data, _, _ in demo_items(40, 64, 1):
        p = tmp_path / name.replace("/", "_")
        p.write_bytes(data)
        paths[p.stem] = p
    paths["dup"] = tmp_path / "dup.png"  # a re-encoded copy of the first image
    Image.open(paths["demo_00000"]).convert("RGB").save(paths["dup"])
    for dist in (0, 6):
        hs = {i: imagehash.phash(Image.open(p).convert("RGB")) for i, p in paths.items()}
        reps, ref = [], {}
        for i, h in hs.items():
            r = next((r for r, rh in reps if h - rh <= dist), None)
            if r is None:
                reps.append((i, h))
            ref[i] = r or i
        assert perceptual_groups(paths, dist) == ref
    assert perceptual_groups(paths, 6)["dup"] == "demo_00000"


DATA_STAGES = ("ingest", "make_jsonl", "caption_batch", "curate_pairs")
STAGE_OUTPUTS = ("data/raw", "data/jsonl", "data/captions", "data/pairs", ".carsearch/caption_cache")


@pytest.mark.slow
def test_data_stages_bit_exact_across_machines(tmp_path: Path) -> None:
    """ingest -> make_jsonl -> caption_batch (offline) -> curate_pairs, run twice from scratch in a
    copy of the repo: AVX2 BLAS kernel + every SIMD path, then Sandybridge BLAS + numpy baseline
    only + scalar libjpeg + 2 workers: every output file (images, records, captions, pairs, stage
    metrics) has the same bytes."""
    import shutil

    import yaml

    from conftest import copy_repo, run

    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    if find_torcs_cars(default_torcs_dir()):
        params["data"]["source"] = "torcs"
        params["data"]["torcs"].update(n_images=16, size=96)
    else:
        params["data"]["source"] = "demo"
        params["data"]["demo"].update(n_images=24, size=64)
    params["caption"]["backend"] = "offline"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    envs = environments()
    slow_env = {**envs.get("numpy-baseline-only", {}), **envs["jpeg-no-simd"]}
    digests = []
    for env, workers in (({"OPENBLAS_CORETYPE": "Haswell"} if "haswell" in envs else {}, 1), (slow_env, 2)):
        for d in STAGE_OUTPUTS:
            shutil.rmtree(repo / d, ignore_errors=True)
        params["data"]["torcs"]["workers"] = workers
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage in DATA_STAGES:
            run(
                ["python", "-m", f"carsearch.stages.{stage}"],
                repo,
                env={**env, "OPENBLAS_CORETYPE": env.get("OPENBLAS_CORETYPE", "Sandybridge")},
            )
        files = sorted(p for d in STAGE_OUTPUTS[:4] for p in (repo / d).rglob("*") if p.is_file())
        files += [repo / "metrics" / f"{m}.json" for m in ("ingest", "caption", "curate")]
        digests.append({str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert len([k for k in digests[0] if k.startswith("data/raw/images/")]) >= 16
    assert digests[0] == digests[1], sorted(k for k in digests[0] if digests[0][k] != digests[1].get(k))


# ----------------------------------------------------------------------------- 2. training

TRAIN_SCRIPT = r"""
import json, sys
from pathlib import Path
import torch
from testkit import TINY, section, write_pairs
from carsearch.evaluation.protocol import validation_fn
from carsearch.core.io import dir_hash
from carsearch.model.clip import load_clip, save_clip
from carsearch.training.loop import train_clip

root, out = Path(sys.argv[1]), Path(sys.argv[2])
if len(sys.argv) > 3:
    torch.set_num_threads(int(sys.argv[3]))
pairs = write_pairs(root, {"train": 16, "val": 12, "test": 12}, size=40)
model, proc = load_clip(TINY, seed=0)
cfg = section("train", lr=2e-3, epochs=3, batch_size=8, seed=3, augment={"shift": 2, "flip": True})
val = validation_fn(proc, pairs["val"], root, section("eval", ks=[1, 5]))
before = val(model)["val_recall@5"]
res = train_clip(model, proc, pairs["train"], root, cfg, validate=val)
save_clip(model, proc, out)
test = validation_fn(proc, pairs["test"], root, section("eval", ks=[1, 5]))(model)
print("REPRO " + json.dumps({"hash": dir_hash(out), "final_loss": res.losses[-1], "resumed": res.resumed_from_epoch,
                             "epoch_loss": [h["loss"] for h in res.history], "val_before": before,
                             "val": [h["val_recall@5"] for h in res.history],
                             "checkpoint_left": (root / cfg["checkpoint_dir"]).exists(),
                             "test": {k: float(v) for k, v in test.items()}}, sort_keys=True))
"""


def test_training_same_seed_same_model_hash(tmp_path: Path) -> None:
    """Two processes train from scratch, each in its own folder and working directory (the
    configured checkpoint folder is relative: it is the data root's, never the working
    directory's, so neither run can resume the other's): the same model, bit for bit, and it learns."""
    runs = []
    for k in (1, 2):
        (tmp_path / f"cwd{k}").mkdir()
        args = [str(tmp_path / f"data{k}"), str(tmp_path / f"model{k}")]
        runs.append(_run(TRAIN_SCRIPT, args, {"PYTHONHASHSEED": str(k)}, cwd=tmp_path / f"cwd{k}"))
        assert not list((tmp_path / f"cwd{k}").iterdir())  # nothing written where it ran
    assert all(r["resumed"] == 0 and not r["checkpoint_left"] for r in runs), runs
    assert runs[0]["hash"] == runs[1]["hash"], runs
    assert runs[0]["final_loss"] == runs[1]["final_loss"] and runs[0]["test"] == runs[1]["test"]
    loss, val = runs[0]["epoch_loss"], runs[0]["val"]
    assert loss[-1] < loss[0] and max(val) > runs[0]["val_before"], runs[0]  # it learns
