"""Scale-out embedding on Ray Data (carsearch.index.scale), run on a local Ray with 2 CPU model actors:
the table it writes holds the same vectors (allclose) as the single-process path, labels from
sub-folders, rejects listed; the `carsearch embed-ray` command's wiring."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from testkit import composed_params, section

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=4,
        object_store_memory=150 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
    yield
    ray.shutdown()


def _corpus(folder):
    rng = np.random.default_rng(0)
    for c in ("red", "blue"):
        (folder / c).mkdir(parents=True)
        for i in range(5):
            a = (rng.random((13, 17, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).resize((340, 260), Image.BILINEAR).save(folder / c / f"{i}.jpg", quality=90)
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(folder / "red" / "x.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_ray_embedding_equals_the_single_process_path(tmp_path, local_ray):
    from carsearch.index.scale import embed_corpus, open_table, search_table
    from carsearch.model.clip import encode_images, load_clip, load_pretrained, save_clip
    from testkit import TINY

    save_clip(*load_clip(TINY, seed=0), tmp_path / "model")
    _corpus(tmp_path / "corpus")
    res = embed_corpus(
        tmp_path / "corpus",
        str(tmp_path / "out"),
        tmp_path / "model",
        concurrency=2,
        batch_size=4,
        index_cfg=section("index"),
    )
    assert res["rows"] == 11 and res["rejected"] == 1 and res["actors"] == 2 and res["num_gpus_per_actor"] == 0
    assert res["rejects"][0]["path"].endswith("broken.jpg")
    t = open_table(str(tmp_path / "out")).to_arrow()
    paths = t.column("path").to_pylist()
    got = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    model, proc = load_pretrained(tmp_path / "model")
    np.testing.assert_allclose(got, encode_images(model, proc, paths, draft=True), atol=1e-5)
    import hashlib

    assert t.column("id").to_pylist() == [hashlib.sha256(open(p, "rb").read()).hexdigest()[:16] for p in paths]
    assert sorted(t.column("color").to_pylist()) == ["blue"] * 5 + ["red"] * 6
    hit = search_table(open_table(str(tmp_path / "out")), got[0], k=1)[0]
    assert hit["path"] == paths[0] and hit["score"] == pytest.approx(1.0, abs=1e-5)


def test_embed_ray_command_wiring(tmp_path, monkeypatch):
    """`carsearch embed-ray` passes its options (and index.* defaults) to scale.embed_corpus and
    prints one summary line; the model defaults to the live index's (Ray itself: the test above)."""
    from typer.testing import CliRunner

    from carsearch.cli import app
    from carsearch.index import scale

    seen = {}

    def fake(corpus, out, model_dir, **kw):
        seen.update(corpus=corpus, out=out, model_dir=model_dir, **kw)
        return {
            "rows": 3,
            "rejected": 1,
            "rejects": [{"path": "c/b.jpg", "reason": "not an image (unrecognised format)"}],
            "out": out,
            "table": kw["table"],
            "search": "brute force (exact)",
            "actors": kw["concurrency"],
            "num_gpus_per_actor": 0.0,
            "images_per_second": 12.5,
        }

    monkeypatch.setattr(scale, "embed_corpus", fake)
    monkeypatch.setenv("CARSEARCH_ROOT", str(tmp_path))
    (tmp_path / "dvc.yaml").touch()
    over = {"paths": {"index_dir": "data/index"}, "index": {"batch_size": 4, "subfolder_key": "color"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(composed_params(over)))
    r = CliRunner().invoke(app, ["embed-ray", "--corpus", "s3://b/photos", "--out", "s3://b/index", "--workers", "3"])
    assert r.exit_code == 1 and "pass --model" in r.output  # no live index to take the model from
    (tmp_path / "data/index/v-1/model").mkdir(parents=True)
    (tmp_path / "data/index/carsearch_index.json").write_text(
        '{"version": "v-1", "model_dir": "model", "table": "cars"}'
    )
    r = CliRunner().invoke(app, ["embed-ray", "--corpus", "s3://b/photos", "--out", "s3://b/index", "--workers", "3"])
    assert r.exit_code == 0, r.output
    assert (
        seen["model_dir"] == tmp_path / "data/index/v-1/model" and seen["concurrency"] == 3 and seen["batch_size"] == 4
    )
    assert seen["subfolder_key"] == "color" and seen["num_gpus"] is None
    assert "3 images into s3://b/index table cars" in r.output and "1 file: not an image" in r.output
