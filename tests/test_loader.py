"""The parallel image loader (carsearch.model.loader): its preprocessing is the CLIP processor's, and the
embeddings it feeds the model equal the processor path's (exactly without JPEG draft decoding,
within a small tolerance with it), in worker processes or not; bad files fail as open_rgb does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from carsearch.core import imaging
from testkit import TINY


def _photos(folder, sizes=((1024, 768), (768, 1024), (97, 61), (300, 200), (40, 30), (64, 64))) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate(sizes):
        a = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        p = folder / f"photo{i}.jpg"
        Image.fromarray(a).resize((w, h), Image.BILINEAR).save(p, quality=90)
        out.append(p)
    png = folder / "photo.png"  # not a JPEG: never drafted
    Image.fromarray((rng.random((50, 70, 3)) * 255).astype(np.uint8)).save(png)
    return out + [png]


@pytest.fixture(scope="module")
def tiny():
    from carsearch.model.clip import load_clip

    return load_clip(TINY, seed=0)


@pytest.mark.parametrize("edge", [None, 224])
def test_preprocess_is_the_processors(tmp_path, tiny, edge):
    from transformers import CLIPImageProcessorPil

    from carsearch.model.preprocess import ClipPreprocess

    proc = (
        tiny[1].image_processor
        if edge is None
        else CLIPImageProcessorPil(size={"shortest_edge": edge}, crop_size={"height": edge, "width": edge})
    )
    prep = ClipPreprocess.from_processor(proc)
    for p in _photos(tmp_path):
        im = imaging.open_rgb(p)
        ours = prep(im)
        theirs = proc(images=[im], return_tensors="np")["pixel_values"][0]
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_loader_embeddings_equal_the_processor_path(tmp_path, tiny):
    from carsearch.model.clip import encode_images

    model, proc = tiny
    paths = _photos(tmp_path)
    ref = encode_images(model, proc, [imaging.open_rgb(p) for p in paths])  # PIL images: the processor itself
    exact = encode_images(model, proc, paths, batch_size=3)  # loader, in process, full decode
    np.testing.assert_allclose(exact, ref, atol=1e-5)
    fast = encode_images(model, proc, paths, batch_size=3, num_workers=2, draft=True)  # workers + JPEG draft
    np.testing.assert_allclose(fast, ref, atol=2e-2)
    assert (fast * ref).sum(1).min() > 0.999


def test_loader_reports_a_bad_file_like_open_rgb(tmp_path, tiny):
    from carsearch.model.clip import encode_images

    paths = _photos(tmp_path)[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for workers in (0, 2):
        with pytest.raises(imaging.ImageError, match="corrupt or truncated|not an image"):
            encode_images(*tiny, [*paths, bad], batch_size=2, num_workers=workers)


def test_draft_decodes_a_jpeg_smaller_but_never_below_the_request(tmp_path):
    p = _photos(tmp_path, sizes=((1024, 768),))[0]
    full = imaging.open_rgb(p)
    small = imaging.open_rgb(p, draft=(64, 64))
    assert full.size == (1024, 768) and small.size == (128, 96)
    assert min(imaging.open_rgb(p, draft=(224, 224)).size) >= 224
