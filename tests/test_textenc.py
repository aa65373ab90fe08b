"""Cold start: a text query runs the CLIP text tower in NumPy (carsearch.model.textenc), an image query
the vision tower (carsearch.model.visionenc), with the same vectors as the transformers model, so
`carsearch search "..."` and `carsearch search --image x.jpg` import neither torch nor
transformers; `CarSearch.model` still loads the full model when asked, and queries then use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from test_index_corpus import _build, repo  # noqa: F401  (pytest fixture + helper)
from testkit import TINY

TEXTS = [
    "a red car",
    "A red SUV, seen from the front!",
    "blue pickup seen from behind at night in the rain " * 8,
    "x",
    "Škoda Octavia — 'grey' hatchback, 2 doors",
]


def test_numpy_text_tower_equals_transformers(tmp_path):
    from carsearch.model.clip import encode_texts, load_clip, load_pretrained, save_clip
    from carsearch.model.textenc import ClipTextNP

    spec = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["model"]
    for name, s in (("tiny", TINY), ("params", spec)):
        save_clip(*load_clip(s, seed=1), tmp_path / name)
        enc = ClipTextNP.load(tmp_path / name)
        assert enc is not None
        np.testing.assert_allclose(enc.encode(TEXTS), encode_texts(*load_pretrained(tmp_path / name), TEXTS), atol=1e-5)
    assert ClipTextNP.load(tmp_path / "missing") is None  # not applicable -> the caller uses transformers


def test_numpy_vision_tower_equals_transformers(tmp_path):
    from PIL import Image

    from carsearch.model.clip import encode_images, load_clip, load_pretrained, save_clip
    from carsearch.model.visionenc import ClipVisionNP

    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate(
        [(96, 72), (50, 200), (33, 33), (640, 480)]
    ):  # landscape, portrait, smaller than the input
        p = tmp_path / f"im{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        images.append(p)
    images.append(Image.open(images[0]).convert("L"))  # a PIL image, grey
    spec = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["model"]
    for name, s in (("tiny", TINY), ("params", spec)):
        save_clip(*load_clip(s, seed=1), tmp_path / name)
        enc = ClipVisionNP.load(tmp_path / name)
        assert enc is not None
        ref = np.concatenate(
            [
                encode_images(*load_pretrained(tmp_path / name), images[:4]),
                encode_images(*load_pretrained(tmp_path / name), [images[4].convert("RGB")]),
            ]
        )
        np.testing.assert_allclose(enc.encode(images), ref, atol=1e-4)
    assert ClipVisionNP.load(tmp_path / "missing") is None


def test_carsearch_text_query_needs_no_torch_model_and_gives_the_same_hits(repo):  # noqa: F811
    from carsearch.index.search import CarSearch

    _build(repo)
    light = CarSearch(root=repo)
    hits = light.text("a red car", k=5)
    assert light.encoder._model is None  # answered without loading the transformers model
    full = CarSearch(root=repo)
    full.model  # noqa: B018  (loads it: text queries then use it)
    ref = full.text("a red car", k=5)
    assert [h.id for h in hits] == [h.id for h in ref]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in ref], atol=1e-5)
    img = light.image(repo / hits[0].path, k=3)
    assert light.encoder._model is None  # image queries too: the NumPy vision tower
    ref = full.image(repo / hits[0].path, k=3)
    assert [h.id for h in img] == [h.id for h in ref] and img[0].id == hits[0].id
    np.testing.assert_allclose([h.score for h in img], [h.score for h in ref], atol=1e-4)


def test_cold_cli_search_imports_neither_torch_nor_transformers(repo):  # noqa: F811
    _build(repo)
    photo = next((repo / "data/raw/images").iterdir())
    for query in (["a red car"], ["--image", str(photo)]):
        code = (
            "import sys; from carsearch.cli import app\n"
            f"try:\n    app(['search', *{query!r}, '-k', '2'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
        )
        env = {**os.environ, "CARSEARCH_ROOT": str(repo), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = out.stdout.strip().splitlines()
        assert len([ln for ln in lines if ln.startswith(("1\t", "2\t"))]) == 2 and lines[-1] == "HEAVY []", out.stdout
