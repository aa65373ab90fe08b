"""`index.engine: ray` (carsearch.index.ray_engine) inside build_index, on a local Ray with 2 CPUs:
the same rows and vectors (allclose) as the local engine, through the same embedding cache (a
rebuild embeds nothing), published as a version like any other; a file the Ray workers cannot
read fails the build with its name."""

from __future__ import annotations

import numpy as np
import pytest

from test_index_corpus import _build, _photos, repo  # noqa: F401  (the repo fixture)
from testkit import section

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        object_store_memory=150 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
    yield
    ray.shutdown()


def _table(root):
    from carsearch.index.search import CarSearch

    t = CarSearch(root=root).table.to_arrow().sort_by("id")
    vec = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    return {c: t.column(c).to_pylist() for c in ("id", "path", "origin", "color")}, vec


def test_ray_engine_builds_the_same_index_as_the_local_one(repo, local_ray):  # noqa: F811
    photos = repo.parent / "photos"
    _photos(photos, 3, colors=("red", "blue"))
    local = _build(repo, corpus="folder", corpus_path=str(photos), embed_cache_dir=".cache/local")
    rows_local, vec_local = _table(repo)
    ray_cfg = {"address": None, "num_cpus": 2, "actors": 2, "actor_cpus": 1, "num_gpus": None, "chunk": 4}  # 2 Ray runs
    got = _build(repo, engine="ray", ray=ray_cfg, embed_cache_dir=".cache/ray")
    assert got["embedded"] == 6 and got["cached"] == 0 and got["rows"] == local["rows"] == 6
    rows_ray, vec_ray = _table(repo)
    assert rows_ray == rows_local
    np.testing.assert_allclose(vec_ray, vec_local, atol=1e-5)
    again = _build(repo, engine="ray", ray=ray_cfg, embed_cache_dir=".cache/ray")  # the same cache
    assert again["embedded"] == 0 and again["cached"] == 6
    (photos / "red" / "photo 0.jpg").write_bytes(b"\xff\xd8\xff\xe0 now broken")  # a corrupt photo
    bad = _build(repo, engine="ray", ray=ray_cfg, embed_cache_dir=".cache/ray2")
    assert bad["rows"] == 5 and bad["rejected"] == 1  # checked when read: rejected with its reason


def test_actor_plan_shares_the_cpus_or_takes_one_gpu_each():
    """Without GPUs the CPUs are split into actors of `actor_cpus` (decode is fused into them); with
    GPUs one actor per GPU and no CPU reserved for it; `actors` set by hand wins."""
    from carsearch.index.ray_engine import actor_plan

    rc = section("index").ray.model_copy(update={"actors": None, "actor_cpus": 2})
    assert actor_plan(rc, {"CPU": 2.0}, 0.0) == {"actors": 1, "actor_cpus": 2}
    assert actor_plan(rc, {"CPU": 16.0}, 0.0) == {"actors": 8, "actor_cpus": 2}
    assert actor_plan(rc, {"CPU": 1.0}, 0.0) == {"actors": 1, "actor_cpus": 1}
    assert actor_plan(rc, {"CPU": 32.0, "GPU": 4.0}, 1.0) == {"actors": 4, "actor_cpus": 0}
    assert actor_plan(rc.model_copy(update={"actors": 3}), {"CPU": 16.0}, 0.0) == {"actors": 3, "actor_cpus": 2}
