"""Load on `carsearch serve`: 8 concurrent clients (asyncio + httpx, 127.0.0.1 only) for a fixed time
per phase, against a real index (demo images, the default model config, random init: quality does
not matter here, cost does). Reports requests/s and p50/p95/p99 latency, and errors (expected: 0;
the run fails, exit status 1, when any phase has no request or more than 1 % errors):

- text, new queries: every request a query string not seen before (the text encoder runs each time)
- text, repeated: a realistic mix of 120 queries people repeat (text embeddings come from the cache)
- image upload: multipart uploads of 224 px JPEGs (decode + image encoder each time)

    python benchmarks/bench_serve.py [--n 2000] [--seconds 10] [--clients 8]

The server is `python -m carsearch.cli serve` in a subprocess, so client and server share the cores.
It runs with the bench's own serve settings (`SERVER`): every client comes from 127.0.0.1, so the
per-address upload rate limit (serve.upload_rate_per_minute) is off, or the image phase would
measure 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
COLORS = ["red", "blue", "green", "white", "black", "silver", "yellow", "orange"]
BODIES = ["sedan", "suv", "pickup", "van", "hatchback"]
VIEWS = ["front", "rear", "side", "three-quarter"]
MAX_REQUESTS = 50_000  # per phase, whatever the duration: the benchmark always ends
MAX_ERROR_RATE = 0.01  # a phase with more failed requests than this measured errors, not search
SERVER = {"upload_rate_per_minute": 0}  # the bench's serve settings: all its clients share one address


def configure(root: Path) -> None:
    """The bench repo's params.yaml with the bench's serve settings (`SERVER`), also when --root is reused."""
    import yaml

    from carsearch.core.params import load_params

    params = load_params(root / "params.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "serve": {**params["serve"], **SERVER}}))


def check(results: list[dict], max_error_rate: float = MAX_ERROR_RATE) -> list[str]:
    """Why the run does not measure what it says (empty: it does): a phase with no request, or with
    more than `max_error_rate` of its requests failed."""
    bad = []
    for r in results:
        if not r["requests"]:
            bad.append(f"{r['phase']}: no request completed")
        elif r["errors"] / r["requests"] > max_error_rate:
            bad.append(
                f"{r['phase']}: {r['errors']} of {r['requests']} requests failed "
                f"({r['errors'] / r['requests']:.1%} > {max_error_rate:.0%})"
                + (f", first: {r['first_error']}" if r.get("first_error") else "")
            )
    return bad


def build(root: Path, n: int, size: int) -> None:
    import yaml

    from carsearch.core.params import load_params
    from carsearch.model.clip import load_clip, save_clip
    from carsearch.sources.demo import demo_items

    params = load_params(REPO / "params.yaml")
    (root / "dvc.yaml").touch()
    img_dir = root / "data/raw/images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (_, data, labels, _) in enumerate(demo_items(n, size, seed=5)):
        p = img_dir / f"{i:06d}.jpg"
        p.write_bytes(data)
        rows.append({"id": f"{i:016x}", "path": p.relative_to(root).as_posix(), "labels": labels})
    (root / "data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_clip(*load_clip(params["model"], seed=0), root / "models/finetuned")
    # the bench's own corpus (the demo images it wrote), whatever this workspace's index.corpus says
    index = {**params["index"], "corpus": "ingested", "corpus_path": "data/raw", "uri": None}
    params = {**params, "index": {**index, "promote": {**params["index"]["promote"], "metric": None}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "CARSEARCH_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}",
        "PYTHONPATH": str(REPO / "src"),
    }
    subprocess.run(
        [sys.executable, "-m", "carsearch.stages.build_index"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def phase(name: str, url: str, clients: int, seconds: float, make_request) -> dict:
    import httpx

    lat, errors, counter = [], [], itertools.count()
    deadline = time.perf_counter() + seconds

    async def client(c):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= MAX_REQUESTS:
                    return
                t = time.perf_counter()
                try:
                    r = await make_request(http, i)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text[:120]}")
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(repr(e))
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else (lat or [float("nan")]) * 99
    res = {
        "phase": name,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }
    print(
        f"{name:<24} {res['requests']:>6} req  {res['rps']:7.1f} req/s  p50 {res['p50_ms']:6.1f} ms  "
        f"p95 {res['p95_ms']:6.1f} ms  p99 {res['p99_ms']:6.1f} ms  errors {res['errors']}"
        + (f"  (first: {errors[0]})" if errors else ""),
        flush=True,
    )
    return res


async def run_all(url: str, images: list[bytes], clients: int, seconds: float) -> list[dict]:
    combos = [f"a {c} {b} seen from the {v}" for c in COLORS for b in BODIES for v in VIEWS]

    async def text_new(http, i):
        return await http.get("/api/v1/search", params={"q": f"{combos[i % len(combos)]} number {i}", "limit": 24})

    common = combos[:120]

    async def text_repeated(http, i):
        return await http.get("/api/v1/search", params={"q": common[(i * 7) % len(common)], "limit": 24})

    async def upload(http, i):
        return await http.post(
            "/api/v1/search/image",
            files={"image": ("q.jpg", images[i % len(images)], "image/jpeg")},
            data={"limit": "24"},
        )

    async def warm(http, i):
        return await http.get("/api/v1/search", params={"q": common[i % len(common)], "limit": 24})

    await phase("warm-up (not counted)", url, clients, 3, warm)
    out = [
        await phase("text, new queries", url, clients, seconds, text_new),
        await phase("text, repeated queries", url, clients, seconds, text_repeated),
        await phase("image upload", url, clients, seconds, upload),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="images in the index")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds the server may take to start")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--root", type=Path, help="build the bench repo here and keep it (reused when it has an index)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = a.root or Path(d)
        if not (root / "data/index/carsearch_index.json").is_file():
            t = time.perf_counter()
            root.mkdir(parents=True, exist_ok=True)
            build(root, a.n, a.size)
            print(f"index of {a.n} images built in {time.perf_counter() - t:.0f} s", flush=True)
        configure(root)
        port = free_port()
        env = {**os.environ, "CARSEARCH_ROOT": str(root), "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carsearch.cli",
                "serve",
                "--index",
                str(root / "data/index"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.time() + a.start_timeout
            while True:
                try:
                    info = httpx.get(url + "/api/v1/info", timeout=2).json()
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit(
                            "carsearch serve did not start"
                            + (
                                f":\n{server.stderr.read()}"
                                if server.poll() is not None
                                else f" in {a.start_timeout:g} s"
                            )
                        )
                    time.sleep(0.3)
            built = sum(1 for _ in (root / "data/raw/images").glob("*.jpg"))
            if info["rows"] != built:
                raise SystemExit(f"carsearch serve serves {info['rows']} rows, not the {built} images the bench built")
            images = [p.read_bytes() for p in sorted((root / "data/raw/images").glob("*.jpg"))[:32]]
            print(
                f"carsearch serve on {url}: {info['rows']} rows, model {info['model_ref']}; {a.clients} clients, "
                f"{a.seconds:g} s a phase, {os.cpu_count()} cores shared by client and server",
                flush=True,
            )
            results = asyncio.run(run_all(url, images, a.clients, a.seconds))
        finally:
            server.terminate()
            server.wait(20)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    bad = check(results)
    if bad:
        raise SystemExit("bench_serve: FAILED, these figures do not measure search:\n  " + "\n  ".join(bad))


if __name__ == "__main__":
    main()
