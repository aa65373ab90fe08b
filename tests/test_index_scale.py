"""The index at scale: the indices build_table creates (ANN, BITMAP/BTREE scalar, caption FTS),
per-query nprobes/refine_factor with defaults from the index, hybrid (vector + full-text) search,
and a table written to / searched on S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np
import pytest

from conftest_bedrock import aws_env, bucket, moto_url, s3  # noqa: F401  (pytest fixtures)
from test_index_corpus import _build, repo  # noqa: F401  (pytest fixture + helper)
from testkit import section

COLORS = ("red", "blue", "white")


def _rows(n: int, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = [
        {
            "id": f"{i:016x}",
            "path": f"images/{i}.jpg",
            "caption": f"a {COLORS[i % 3]} {('van', 'sedan')[i % 2]} seen from the front",
            "labels": {"color": COLORS[i % 3], "body_type": ("van", "sedan")[i % 2], "view": "front"},
        }
        for i in range(n)
    ]
    return rows, v


def _kinds(tbl) -> dict[str, str]:
    return {i.columns[0]: str(i.index_type).upper() for i in tbl.list_indices()}


@pytest.mark.parametrize("ann", ["IVF_HNSW_SQ", "IVF_PQ"])
def test_build_table_creates_ann_scalar_and_fts_indices(tmp_path, ann):
    from carsearch.index.store import build_table

    rows, v = _rows(400)
    cfg = section("index", ann_min_rows=100, ann_index=ann, num_partitions=2, num_sub_vectors=4)
    tbl, kind = build_table(tmp_path / "db", "cars", rows, v, "test", cfg)
    kinds = _kinds(tbl)
    assert kind == ann and kinds["vector"].replace("_", "") == ann.replace("_", "")
    for col in ("color", "view", "body_type", "split", "make", "model", "model_id", "scene"):
        assert kinds[col] == "BITMAP", (col, kinds)
    assert kinds["id"] == "BTREE" and kinds["caption"] == "FTS"
    hits = (
        tbl.search(v[7])
        .distance_type("cosine")
        .nprobes(2)
        .refine_factor(5)
        .where("color = 'blue'", prefilter=True)
        .limit(3)
        .to_list()
    )
    assert hits[0]["id"] == rows[7]["id"] and {h["color"] for h in hits} == {"blue"}
    # below ann_min_rows: exact search, still with scalar and FTS indices; both can be switched off
    tbl2, kind2 = build_table(tmp_path / "db2", "cars", rows[:50], v[:50], "test", cfg)
    assert kind2 == "brute force (exact)" and "vector" not in _kinds(tbl2) and _kinds(tbl2)["caption"] == "FTS"
    tbl3, _ = build_table(
        tmp_path / "db3",
        "cars",
        rows[:50],
        v[:50],
        "test",
        cfg.model_copy(update={"scalar_indices": False, "fts": False}),
    )
    assert not tbl3.list_indices()


def test_ann_partitions_follow_the_rows():
    from carsearch.index.store import ann_partitions

    assert ann_partitions(1_000_000, section("index", num_partitions=None, rows_per_partition=4096)) == 244
    assert ann_partitions(100_000, section("index", num_partitions=None, rows_per_partition=4096)) == 24
    assert ann_partitions(100_000, section("index", num_partitions=256)) == 256
    assert ann_partitions(40, section("index", num_partitions=256)) == 5  # never more than rows / 8


def test_search_knobs_and_hybrid_search(repo):  # noqa: F811
    from carsearch.index.query import QueryError
    from carsearch.index.search import CarSearch, search

    _build(repo, ann_min_rows=10, num_partitions=2, nprobes=2, refine_factor=3)
    s = CarSearch(root=repo)
    assert s.meta["nprobes"] == 2 and s.meta["refine_factor"] == 3 and s.has_fts()
    base = s.text("a red car", k=5)
    assert [h.id for h in s.text("a red car", k=5, nprobes=2, refine_factor=20)] == [h.id for h in base]
    assert len(s.image(repo / base[0].path, k=3, nprobes=1, refine_factor=0)) == 3
    with pytest.raises(QueryError, match="nprobes"):
        s.text("a red car", nprobes=-1)
    hyb = s.text("red", k=5, hybrid=True)
    assert len(hyb) == 5 and all(h.score > 0 for h in hyb)
    assert sum("red" in h.caption for h in hyb) >= sum("red" in h.caption for h in base)  # the captions count
    only_blue = s.hybrid("a red car", k=3, where="color = 'blue'")
    assert only_blue and all(h.labels.get("color") == "blue" for h in only_blue)
    assert len(search("red car", k=2, hybrid=True, index_dir=repo / "data/index")) == 2
    with pytest.raises(QueryError, match="hybrid search needs a text query"):
        search(image=repo / base[0].path, hybrid=True, index_dir=repo / "data/index")


def test_hybrid_search_on_an_index_without_fts_says_so(repo):  # noqa: F811
    from carsearch.index.query import QueryError
    from carsearch.index.search import CarSearch

    _build(repo, fts=False)
    s = CarSearch(root=repo)
    assert len(s.text("a red car", k=2)) == 2
    with pytest.raises(QueryError, match="full-text index"):
        s.text("a red car", hybrid=True)


def test_table_on_s3_builds_and_searches(tmp_path, s3, bucket):  # noqa: F811
    """build_table to s3://bucket/prefix (credentials from the boto3 chain, AWS_ENDPOINT_URL_S3 =
    moto), then open and search it: same answers as the same table on disk."""
    from carsearch.index.scale import open_table, search_table
    from carsearch.index.store import build_table, is_uri

    rows, v = _rows(300)
    cfg = section("index", ann_min_rows=100, num_partitions=2)
    uri = f"s3://{bucket}/indexes/cars-v1"
    assert is_uri(uri) and not is_uri(tmp_path)
    _, kind = build_table(uri, "cars", rows, v, "test", cfg)
    build_table(tmp_path / "local", "cars", rows, v, "test", cfg)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="indexes/cars-v1/")["Contents"]]
    assert kind == "IVF_HNSW_SQ" and any(k.startswith("indexes/cars-v1/cars.lance/") for k in keys)
    remote, local = open_table(uri), open_table(str(tmp_path / "local"))
    assert remote.count_rows() == 300
    for q in (v[3], v[150]):
        got = search_table(remote, q, k=5, where="color = 'red'", nprobes=2, refine_factor=5)
        assert [r["id"] for r in got] == [
            r["id"] for r in search_table(local, q, k=5, where="color = 'red'", nprobes=2, refine_factor=5)
        ]
        assert all(r["labels_json"] and '"red"' in r["labels_json"] for r in got)
    assert search_table(remote, v[3], k=1)[0]["id"] == rows[3]["id"]


def test_build_index_stage_writes_to_s3_and_searches_from_the_bucket(repo, s3, bucket, tmp_path, monkeypatch):  # noqa: F811
    """`index.uri=s3://…` through the build_index stage: the table goes to the bucket (not into
    data/index), the model and the pointer beside it. CarSearch on the repo and CarSearch("s3://…")
    (what a service on another machine opens) answer alike; a rebuild moves the bucket's pointer,
    prunes the old version, and an open searcher follows it."""
    from carsearch.index import handle, remote
    from carsearch.index.search import CarSearch
    from carsearch.index.store import read_meta

    monkeypatch.setenv("CARSEARCH_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{bucket}/indexes/cars"
    out = _build(repo, uri=uri)
    meta = read_meta(repo / "data/index")
    v1 = meta["version"]
    assert out["uri"] == uri and meta["table_uri"] == f"{uri}/{v1}"
    assert not list((repo / "data/index" / v1).glob("*.lance"))  # the table lives only in the bucket
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="indexes/cars/")["Contents"]}
    assert "indexes/cars/carsearch_index.json" in keys
    assert any(k.startswith(f"indexes/cars/{v1}/cars.lance/") for k in keys)
    assert f"indexes/cars/{v1}/model/config.json" in keys

    local, far = CarSearch(root=repo), CarSearch(uri, root=repo)
    assert far.index_dir is None and far.meta["version"] == v1 and far.table.count_rows() == out["rows"]
    assert str(tmp_path / "cache") in far.index.model_source[0]  # the model came from the bucket
    for q in ("a red car", "a white car seen from the side"):
        assert [h.id for h in far.text(q, k=5)] == [h.id for h in local.text(q, k=5)]
    img = next((repo / "data/raw/images").iterdir())
    assert far.image(img, k=1)[0].id == local.image(img, k=1)[0].id
    # the search service over the bucket index (`carsearch serve --index s3://…`)
    from fastapi.testclient import TestClient

    from carsearch.serve import create_app

    with TestClient(create_app(far, root=repo)) as tc:
        assert tc.get("/api/v1/info").json()["rows"] == out["rows"]
        r = tc.get("/api/v1/search", params={"q": "a red car", "limit": 3, "facets": False})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["hits"]] == [h.id for h in local.text("a red car", k=3)]

    # `carsearch index add` appends to the table in the bucket and moves the bucket's pointer too
    from carsearch.core.params import load_config
    from carsearch.index.append import add_images
    from test_index_corpus import _photos

    _photos(tmp_path / "new", 2)  # 2 per colour, 3 colours
    res = add_images([tmp_path / "new"], load_config(repo / "params.yaml"), repo)
    assert res["added"] == 6 and remote.get_json(f"{uri}/carsearch_index.json")[0]["rows"] == out["rows"] + 6
    monkeypatch.setattr(handle, "REMOTE_POLL_S", 0.0)
    assert far.text("a red car", k=3) and far.table.count_rows() == out["rows"] + 6
    monkeypatch.setattr(handle, "REMOTE_POLL_S", 5.0)

    _build(repo, uri=uri, keep_versions=1)  # embeddings from the cache; the bucket keeps one version
    v2 = read_meta(repo / "data/index")["version"]
    assert v2 != v1 and remote.versions(uri) == [v2]
    monkeypatch.setattr(handle, "REMOTE_POLL_S", 0.0)
    assert far.text("a red car", k=3) and far.meta["version"] == v2

    p = subprocess.run(
        ["carsearch", "search", "a red car", "--index", uri, "-k", "2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert len([ln for ln in p.stdout.splitlines() if ln.split("\t")[0].isdigit()]) == 2


def test_build_index_to_a_missing_bucket_is_one_line_and_keeps_the_live_index(repo, s3):  # noqa: F811
    from carsearch.index.remote import RemoteIndexError
    from carsearch.index.store import read_meta

    _build(repo)
    live = read_meta(repo / "data/index")["version"]
    with pytest.raises(
        RemoteIndexError, match=r"^index.uri s3://no-such-bucket-carsearch/idx: cannot write the table: "
    ):
        _build(repo, uri="s3://no-such-bucket-carsearch/idx")
    assert read_meta(repo / "data/index")["version"] == live and not list((repo / "data/index").glob(".building-*"))


def test_versions_built_in_the_same_second_sort_in_build_order(tmp_path):
    """`prune` keeps the newest and the service falls back to the one before: both sort names, so
    names made back to back (the same second) must sort in the order they were made."""
    from carsearch.index.store import new_version, prune, write_meta

    names = [new_version() for _ in range(200)]
    assert len(set(names)) == 200 and names == sorted(names)
    for n in names[:3]:
        (tmp_path / n).mkdir()
    write_meta(tmp_path, {"version": names[2], "table": "cars"})
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("v-*")) == names[1:3]


def test_table_streamed_from_the_cache_equals_the_table_of_one_matrix(tmp_path):
    """build_index streams the table a batch at a time, the vectors read from the embedding cache
    (`vectors` = cache.get): the same rows, order and vectors as the table of one matrix, and the
    manifest digest is the same either way."""
    from carsearch.index.embed_cache import EmbedCache
    from carsearch.index.manifest import digest
    from carsearch.index.store import build_table

    rows, v = _rows(50)
    cache = EmbedCache(tmp_path / "cache", "m")
    cache.put([r["id"] for r in rows[::-1]], v[::-1])  # cached in another order than the table's
    cfg = section("index", ann_min_rows=10**9)
    whole, _ = build_table(tmp_path / "a", "cars", rows, v, "test", cfg)
    streamed, _ = build_table(tmp_path / "b", "cars", rows, cache.get, "test", cfg, batch_rows=7)
    a, b = (t.to_arrow() for t in (whole, streamed))
    assert b.num_rows == 50 and b.column("id").to_pylist() == [r["id"] for r in rows]
    assert a.drop(["vector"]).equals(b.drop(["vector"]))
    np.testing.assert_array_equal(np.stack(b.column("vector").to_numpy(zero_copy_only=False)), v)
    assert digest(rows, cache.get, batch_rows=7) == digest(rows, v)
    # the manifest's definition, so committed manifests keep their digest: ids and paths, then vectors
    lines = "".join(f"{r['id']}\t{r['path']}\n" for r in rows).encode()
    assert digest(rows, v) == hashlib.sha256(lines + v.astype(np.float32).tobytes()).hexdigest()
    assert digest(rows, cache.get) != digest(rows[::-1], cache.get)


def test_embedding_cache_keeps_the_newest_vector_through_compaction(tmp_path, monkeypatch):
    """The cache holds one matrix + an id index: a repeated id takes the newer vector, in memory,
    after parts are compacted, and after reopening; a cache of another dimension is one clear error."""
    from carsearch.index import embed_cache

    monkeypatch.setattr(embed_cache, "COMPACT_AT", 3)
    monkeypatch.setattr(embed_cache._write_part, "__defaults__", (64,))  # a compaction writes 64 rows at a time
    c = embed_cache.EmbedCache(tmp_path, "m")
    rng = np.random.default_rng(0)
    first = rng.normal(size=(1500, 8)).astype(np.float32)  # past the first allocation: the matrix grows
    c.put([f"i{k}" for k in range(1500)], first)
    newer = rng.normal(size=(2, 8)).astype(np.float32)
    c.put(["i3", "new"], newer)
    assert len(c) == 1501 and c.dim == 8
    np.testing.assert_array_equal(c.get(["new", "i3", "i4"]), np.stack([newer[1], newer[0], first[4]]))
    c.put(["i5"], newer[:1])  # the third part: compacted into one
    assert len(list(c.dir.glob("part-*.parquet"))) == 1
    again = embed_cache.EmbedCache(tmp_path, "m")
    assert len(again) == 1501 and again._mat.shape == (1501, 8)  # sized from the parts' footers: no doubling
    np.testing.assert_array_equal(again.get(["i3", "i5", "i7"]), np.stack([newer[0], newer[0], first[7]]))
    with pytest.raises(ValueError, match="dim 4 and 8"):
        again.put(["x"], np.zeros((1, 4), np.float32))
