"""The index at scale, measured: LanceDB tables of 100k and 1M rows of 512-d vectors clustered like
real image embeddings (1,000 gaussian clusters on the unit sphere), built with the same code as
build_index (`carsearch.index.create_indices`: ANN + BITMAP/BTREE scalar + caption FTS indices),
then searched with the search parameters of params.yaml (`index.nprobes`, `index.refine_factor`).
Reports build time, p50/p95 latency of single queries, recall@10 against exact search, and the
p50 of a filtered query (`where color = 'red'`, a BITMAP prefilter) beside the targets.

    python benchmarks/bench_index.py                       # 100k and 1M, params.yaml settings
    python benchmarks/bench_index.py --sizes 100000 --sweep   # plus a grid of search parameters
    python benchmarks/bench_index.py --sizes 100000 --set ann_index=IVF_PQ --set num_partitions=64

Memory: the vectors (n x 512 float32, 2 GB at 1M) are held once; the table is written in chunks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

COLORS = ("red", "blue", "green", "yellow", "white", "black", "silver", "grey", "orange", "purple", "brown")
VIEWS = ("front", "rear", "side", "three-quarter")
BODIES = ("sedan", "coupe", "hatchback", "suv", "pickup", "van")
TARGET_P50_MS = {100_000: 10.0, 1_000_000: 30.0}
TARGET_RECALL = 0.95
TARGET_FILTER_RATIO = 1.5


def clustered(
    n: int, dim: int, centers: np.ndarray, sigma: float, rng: np.random.Generator, chunk: int = 100_000
) -> np.ndarray:
    """n unit vectors: a random cluster centre plus isotropic gaussian noise, renormalised."""
    out = np.empty((n, dim), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = centers[rng.integers(0, len(centers), b - a)] + rng.normal(0, sigma, (b - a, dim)).astype(np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def batches(vectors: np.ndarray, colors: np.ndarray, rng: np.random.Generator, chunk: int = 50_000):
    """The table's schema (carsearch.index.arrow_rows), in record batches."""
    import pyarrow as pa

    n, dim = vectors.shape
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        col = [COLORS[c] for c in colors[a:b]]
        view = [VIEWS[v] for v in rng.integers(0, len(VIEWS), m)]
        body = [BODIES[v] for v in rng.integers(0, len(BODIES), m)]
        ids = [f"{i:016x}" for i in range(a, b)]
        cols = {
            "id": ids,
            "path": [f"data/index/images/{i}.jpg" for i in ids],
            "caption": [f"a {c} {bt} seen from the {v}" for c, bt, v in zip(col, body, view)],
            "split": [""] * m,
            "make": [""] * m,
            "model": [""] * m,
            "model_id": [""] * m,
            "body_type": body,
            "color": col,
            "view": view,
            "scene": ["day"] * m,
            "labels_json": [json.dumps({"color": c}) for c in col],
            "origin": [""] * m,
            "model_ref": ["bench"] * m,
        }
        arrays = {k: pa.array(v, pa.string()) for k, v in cols.items()}
        arrays["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors[a:b].ravel(), pa.float32()), dim)
        yield pa.RecordBatch.from_pydict(arrays)


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None, chunk: int = 200_000
) -> np.ndarray:
    """Exact top-k row numbers by cosine (vectors are unit length), optionally among `mask` rows."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for a in range(0, len(vectors), chunk):
        s = queries @ vectors[a : a + chunk].T
        if mask is not None:
            s[:, ~mask[a : a + chunk]] = -np.inf
        idx = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, idx, 1)], 1)
        best_i = np.concatenate([best_i, idx + a], 1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def run_queries(tbl, queries: np.ndarray, k: int, where: str | None, params: dict) -> tuple[np.ndarray, list[set[int]]]:
    """Single queries one after the other, as CarSearch runs them; (latencies in ms, result rows)."""
    from carsearch.index.store import RESULT_COLUMNS

    lat, got = [], []
    for q in queries:
        t = time.perf_counter()
        b = tbl.search(q).distance_type("cosine").limit(k).select(list(RESULT_COLUMNS))
        if params.get("nprobes"):
            b = b.nprobes(int(params["nprobes"]))
        if params.get("refine_factor"):
            b = b.refine_factor(int(params["refine_factor"]))
        if params.get("ef"):
            b = b.ef(int(params["ef"]))
        if where:
            b = b.where(where, prefilter=True)
        rows = b.to_arrow()
        lat.append((time.perf_counter() - t) * 1000)
        got.append({int(i, 16) for i in rows.column("id").to_pylist()})
    return np.array(lat), got


def recall(got: list[set[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(g & set(t.tolist())) / len(t) for g, t in zip(got, truth)]))


def measure(tbl, queries, truth, truth_red, k, params, warm=20) -> dict:
    run_queries(tbl, queries[:warm], k, None, params)  # warm the caches (index pages, Python paths)
    lat, got = run_queries(tbl, queries, k, None, params)
    run_queries(tbl, queries[:warm], k, "color = 'red'", params)
    flat, fgot = run_queries(tbl, queries, k, "color = 'red'", params)
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "recall@10": round(recall(got, truth), 4),
        "filtered_p50_ms": round(float(np.percentile(flat, 50)), 2),
        "filtered_p95_ms": round(float(np.percentile(flat, 95)), 2),
        "filtered_recall@10": round(recall(fgot, truth_red), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--sigma", type=float, default=0.03, help="per-dimension noise around a cluster centre")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an index.* setting")
    ap.add_argument("--sweep", action="store_true", help="also try a grid of nprobes x refine_factor")
    ap.add_argument("--sweep-nprobes", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--sweep-refine", type=int, nargs="+", default=[0, 5, 10], help="0: no refine step")
    ap.add_argument("--sweep-ef", type=int, nargs="+", default=[0], help="HNSW ef values to try (0: lance's default)")
    ap.add_argument("--dir", default=None, help="where to write the tables (default: a temp folder, deleted)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    import yaml

    from carsearch.index.store import connect, create_indices

    cfg = dict(yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["index"])
    for kv in a.set:
        key, val = kv.split("=", 1)
        cfg[key] = yaml.safe_load(val)
    search = {"nprobes": cfg.get("nprobes"), "refine_factor": cfg.get("refine_factor"), "ef": cfg.get("ef")}
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(a.clusters, a.dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    queries = clustered(a.queries, a.dim, centers, a.sigma, np.random.default_rng(1))
    tmp = Path(a.dir or tempfile.mkdtemp(prefix="bench_index_"))
    results = []
    try:
        for n in a.sizes:
            vectors = clustered(n, a.dim, centers, a.sigma, np.random.default_rng(2))
            crng = np.random.default_rng(3)
            colors = crng.integers(0, len(COLORS), n)
            truth = exact_top(vectors, queries, a.k)
            truth_red = exact_top(vectors, queries, a.k, mask=colors == 0)
            db_dir = tmp / f"n{n}"
            shutil.rmtree(db_dir, ignore_errors=True)
            import pyarrow as pa

            t0 = time.perf_counter()
            schema = next(batches(vectors[:1], colors[:1], np.random.default_rng(0))).schema
            tbl = connect(db_dir).create_table(
                "cars", data=pa.RecordBatchReader.from_batches(schema, batches(vectors, colors, crng))
            )
            write_s = time.perf_counter() - t0
            info = create_indices(tbl, {**cfg, "ann_min_rows": min(n, int(cfg["ann_min_rows"]))}, n)
            build_s = time.perf_counter() - t0
            del vectors
            gc.collect()
            res = {
                "rows": n,
                "dim": a.dim,
                "index": info["search"],
                "cfg": {
                    k: cfg.get(k) for k in ("ann_index", "num_partitions", "rows_per_partition", "num_sub_vectors")
                },
                "build_s": round(build_s, 1),
                "write_s": round(write_s, 1),
                "index_s": info["seconds"],
                "search": search,
                **measure(tbl, queries, truth, truth_red, a.k, search),
            }
            results.append(res)
            print(json.dumps(res), flush=True)
            if a.sweep:
                for nprobes in a.sweep_nprobes:
                    for refine in a.sweep_refine:
                        for ef in a.sweep_ef if info["search"] == "IVF_HNSW_SQ" else (0,):
                            p = {"nprobes": nprobes, "refine_factor": refine, "ef": ef}
                            print(
                                json.dumps({"rows": n, "sweep": p, **measure(tbl, queries, truth, truth_red, a.k, p)}),
                                flush=True,
                            )
            del tbl
            if not a.dir:
                shutil.rmtree(db_dir, ignore_errors=True)
    finally:
        if not a.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nbench_index: {a.dim}-d, {a.clusters} gaussian clusters (sigma {a.sigma}), {a.queries} queries, k={a.k}, "
        f"{os.cpu_count()} cores; search {search}"
    )
    print(
        f"{'rows':>9} {'index':>12} {'build s':>8} {'p50 ms':>7} {'target':>7} {'p95 ms':>7} {'recall@10':>9} {'target':>7} "
        f"{'filt p50':>8} {'ratio':>6} {'target':>6} {'filt recall':>11}"
    )
    ok = True
    for r in results:
        tgt = TARGET_P50_MS.get(r["rows"], 30.0)
        ratio = r["filtered_p50_ms"] / r["p50_ms"]
        good = r["p50_ms"] < tgt and r["recall@10"] >= TARGET_RECALL and ratio <= TARGET_FILTER_RATIO
        ok &= good
        print(
            f"{r['rows']:>9} {r['index']:>12} {r['build_s']:>8.1f} {r['p50_ms']:>7.2f} {'<' + format(tgt, 'g'):>7} {r['p95_ms']:>7.2f} "
            f"{r['recall@10']:>9.3f} {'>=' + format(TARGET_RECALL, 'g'):>7} {r['filtered_p50_ms']:>8.2f} {ratio:>6.2f} "
            f"{'<=' + format(TARGET_FILTER_RATIO, 'g'):>6} {r['filtered_recall@10']:>11.3f}  {'MET' if good else 'MISSED'}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
