"""A folder corpus of generated photo-like JPEGs (~160 px) indexed through `dvc repro build_index`
in a fresh git + DVC repo, per corpus size and engine (index.engine=local|ray): build time,
images/s, peak RSS (the whole process tree: dvc, the stage, its decode workers, Ray's processes),
disk used beyond the corpus (data/index + .dvc/cache + the embedding cache), and the time of a
no-op `dvc status` / `dvc repro` against the corpus dependency; then every figure as a ratio
against the smallest size's. Issue 22 item 6; figures in docs/scale.md.

    python benchmarks/bench_corpus.py --sizes 20000 200000 --engines local ray --budget-s 3600
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
PER_FOLDER = 1000


def _make(args) -> int:
    """Photo-like JPEGs `start..stop`: a sky/road gradient, a car-ish box of a colour at a random
    place, sensor noise (slices of one noise field per process, so that making 200k images costs
    the JPEG encoder, not the random generator); every image's bytes differ."""
    import numpy as np
    from PIL import Image

    folder, start, stop, size = args
    colors = {"red": (190, 30, 30), "blue": (30, 50, 180), "white": (235, 235, 235), "black": (25, 25, 25)}
    names = list(colors)
    h, w = size * 3 // 4, size
    y = np.linspace(0, 1, h)[:, None, None]
    sky = (np.array([120, 150, 200]) * (1 - y) + np.array([90, 90, 90]) * y) * np.ones((h, w, 3))
    noise = np.random.default_rng(start).normal(0, 12, (2 * h, 2 * w, 3))
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        img = sky.copy()
        c = names[i % len(names)]
        x0, y0 = rng.integers(0, w // 2), rng.integers(h // 3, h // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 2] = colors[c]
        ny, nx = rng.integers(0, h), rng.integers(0, w)
        img += noise[ny : ny + h, nx : nx + w]
        d = Path(folder) / c / f"{i // PER_FOLDER:04d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype("uint8")).save(d / f"img_{i:07d}.jpg", quality=85)
    return stop - start


def make_corpus(folder: Path, n: int, size: int) -> float:
    """The corpus (kept between runs: only missing images are made). Returns its bytes."""
    have = sum(1 for _ in folder.rglob("*.jpg")) if folder.is_dir() else 0
    if have < n:
        t = time.perf_counter()
        step = 2000
        jobs = [(str(folder), a, min(a + step, n), size) for a in range(have, n, step)]
        with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as ex:
            done = sum(ex.map(_make, jobs))
        print(f"corpus {folder}: made {done} images in {time.perf_counter() - t:.0f} s", flush=True)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _du(*paths: Path) -> int:
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files)


def same_index(a: Path, b: Path) -> dict:
    """Do two repos' live indices hold the same rows (id, path) and vectors? The manifests' digests
    (bitwise), else the largest vector difference."""
    import numpy as np

    from carsearch.index.store import connect

    man = [json.loads((r / "data/index_manifest.json").read_text()) for r in (a, b)]
    out = {"digest_equal": man[0]["digest"] == man[1]["digest"]}
    tabs = []
    for r, m in zip((a, b), man):
        t = connect(r / "data/index" / m["version"]).open_table(m["table"]).to_arrow().select(["id", "path", "vector"])
        t = t.sort_by("id")
        tabs.append(
            (
                t.column("id").to_pylist(),
                t.column("path").to_pylist(),
                np.stack(t.column("vector").to_numpy(zero_copy_only=False)),
            )
        )
    (ia, pa_, va), (ib, pb, vb) = tabs
    out["same_rows"] = ia == ib and pa_ == pb
    out["max_abs_diff"] = float(np.abs(va - vb).max()) if out["same_rows"] and len(va) else None
    out["allclose"] = bool(out["same_rows"] and np.allclose(va, vb, atol=1e-5))
    return out


def _run(cmd, cwd, env, timeout) -> tuple[float, dict, str]:
    """(seconds, peak memory, output) of a command. Memory, sampled every 0.5 s over the process
    tree: `rss` the sum of the processes' RSS (counts pages a forked decode worker shares with its
    parent twice), `pss` the sum of their PSS (each shared page split among its sharers: the tree's
    real footprint), `stage_rss` the RSS of the stage process itself."""
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, stop = {"rss": 0, "pss": 0, "stage_rss": 0}, threading.Event()

    def watch():
        me = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = pss = 0
                for p in [me, *me.children(recursive=True)]:
                    try:
                        full = p.memory_full_info()
                        rss, pss = rss + full.rss, pss + full.pss
                        if any("carsearch.stages." in a for a in p.cmdline()):
                            peak["stage_rss"] = max(peak["stage_rss"], full.rss)
                    except psutil.Error:
                        pass
                peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            except psutil.Error:
                pass
            stop.wait(0.5)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out += f"\n[killed after {timeout:.0f} s: over the budget]"
    stop.set()
    th.join()
    if proc.returncode:
        out += f"\n[exit {proc.returncode}]"
    return time.perf_counter() - t, peak, out


def make_repo(root: Path, corpus: Path, engine: str) -> dict:
    """A git + DVC repo holding only the list_corpus and build_index stages (code deps left out: the code is this
    checkout's), a tiny 'fine-tuned' model, no gate, a folder corpus."""
    import yaml

    from carsearch.core.params import load_params
    from carsearch.model.clip import load_clip, save_clip

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    params = load_params(REPO / "params.yaml")
    params["index"].update(corpus="folder", corpus_path=str(corpus), engine=engine)
    params["index"]["promote"]["metric"] = None
    params["index"]["ray"]["num_cpus"] = os.cpu_count()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    save_clip(*load_clip(params["model"], seed=0), root / params["paths"]["model_dir"])
    (root / params["paths"]["pairs_dir"]).mkdir(parents=True)
    (root / params["paths"]["manifest"]).parent.mkdir(parents=True)
    (root / params["paths"]["manifest"]).touch()  # list_corpus's DAG edge to ingest
    (root / params["paths"]["metrics_dir"]).mkdir(parents=True, exist_ok=True)
    (root / params["paths"]["metrics_dir"] / "eval.json").write_text("{}")
    (root / params["paths"]["metrics_dir"] / "calibration.json").write_text("{}")  # no fit: no confidence
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    keep = {n: stages["stages"][n] for n in ("list_corpus", "build_index")}
    for st in keep.values():
        st["deps"] = [d for d in st["deps"] if not str(d).startswith("src/")]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"vars": stages["vars"], "stages": keep}))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("CARSEARCH_ROOT", None)
    for cmd in (["git", "init", "-q", "-b", "main"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True)
    return env


def measure(n: int, engine: str, corpus: Path, corpus_bytes: int, work: Path, timeout: float) -> dict:
    root = work / f"repo-{n}-{engine}"
    env = make_repo(root, corpus, engine)
    dvc = [sys.executable, "-m", "dvc"]
    secs, mem, out = _run([*dvc, "repro", "build_index"], root, env, timeout)
    ok = (root / "data/index_manifest.json").is_file() and "[exit" not in out and "[killed" not in out
    res = {
        "images": n,
        "engine": engine,
        "ok": ok,
        "build_s": round(secs, 1),
        "peak_rss_mb": round(mem["rss"] / 2**20),
        "peak_pss_mb": round(mem["pss"] / 2**20),
        "stage_peak_rss_mb": round(mem["stage_rss"] / 2**20),
    }
    if not ok:
        res["error"] = out[-1500:]
        return res
    meta = json.loads((root / "data/index/carsearch_index.json").read_text())
    beyond = _du(root / "data/index", root / ".dvc/cache", root / ".carsearch", root / "data/corpus_listing.tsv")
    res.update(
        images_per_s=round(n / secs, 1),
        embed_images_per_s=meta.get("images_per_second"),
        rows=meta["rows"],
        disk_beyond_corpus_mb=round(beyond / 2**20, 1),
        disk_beyond_corpus_pct=round(100 * beyond / corpus_bytes, 2),
        dvc_cache_mb=round(_du(root / ".dvc/cache") / 2**20, 2),
        copies=len(list((root / "data/index/images").glob("*"))) if (root / "data/index/images").is_dir() else 0,
    )
    res["dvc_status_s"] = round(_run([*dvc, "status"], root, env, 600)[0], 2)
    res["dvc_status_again_s"] = round(_run([*dvc, "status"], root, env, 600)[0], 2)
    t, _, out = _run([*dvc, "repro", "build_index"], root, env, 600)
    res["noop_repro_s"] = round(t, 2)
    res["noop_repro_ran"] = "Running stage" in out
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--size", type=int, default=160, help="image width in px")
    ap.add_argument(
        "--budget-s", type=float, default=3600, help="stop starting runs past this; each run gets what is left"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/carsearch-bench-corpus"))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args()
    t0, results = time.perf_counter(), []
    for n in a.sizes:
        corpus = a.work / f"corpus-{n}"
        cbytes = make_corpus(corpus, n, a.size)
        for engine in a.engines:
            left = a.budget_s - (time.perf_counter() - t0)
            if left < 30:
                print(f"budget spent: {n} images with {engine} not run", flush=True)
                continue
            r = measure(n, engine, corpus, cbytes, a.work, left)
            r["corpus_mb"] = round(cbytes / 2**20, 1)
            results.append(r)
            print(json.dumps(r), flush=True)
    for n in a.sizes:  # the Ray engine's index against the local one's, per size
        repos = [a.work / f"repo-{n}-{e}" for e in ("local", "ray")]
        if all((r / "data/index_manifest.json").is_file() for r in repos) and {"local", "ray"} <= set(a.engines):
            same = same_index(*repos)
            print(f"{n} images, ray vs local: {json.dumps(same)}", flush=True)
            for r in results:
                if r["images"] == n and r["engine"] == "ray":
                    r["same_as_local"] = same
    base = {r["engine"]: r for r in results if r["images"] == min(a.sizes) and r["ok"]}
    cols = (
        "build_s",
        "images_per_s",
        "peak_rss_mb",
        "peak_pss_mb",
        "stage_peak_rss_mb",
        "disk_beyond_corpus_mb",
        "dvc_status_s",
        "noop_repro_s",
    )
    print(
        f"\n{os.cpu_count()} cores, {a.size} px JPEGs, model {json.dumps('tiny')} (ratios against {min(a.sizes)} images)"
    )
    print(f"{'images':>8} {'engine':<6}" + "".join(f"{c:>24}" for c in cols))
    for r in results:
        if not r["ok"]:
            print(f"{r['images']:>8} {r['engine']:<6} failed: {r['error'].splitlines()[-1]}")
            continue
        b = base.get(r["engine"])
        cells = []
        for c in cols:
            v = r.get(c)
            ratio = f" ({v / b[c]:.2f}x)" if b and b.get(c) else ""
            cells.append(f"{v}{ratio}")
        print(f"{r['images']:>8} {r['engine']:<6}" + "".join(f"{x:>24}" for x in cells))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
