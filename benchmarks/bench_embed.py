"""Is the model fed? Embeds N real-size photos (1024x768 JPEGs, generated) with the model of
params.yaml and reports images/s of:
  - forward only: the model on already preprocessed pixel batches (the ceiling),
  - the loader pipeline (carsearch.model.loader: decode workers + JPEG draft + the processor's steps),
  - the old path (decode + CLIP processor in the main process, full-size decode),
and the pipeline / forward ratio beside the target (>= 0.8). CPU only unless CUDA is present.

    python benchmarks/bench_embed.py [--n 2048] [--batch-size 64] [--workers N] [--model b32|b32-random]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
TARGET = 0.8


def photos(folder: Path, n: int, size=(1024, 768), seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (gradients, shapes, sensor noise, blur; quality 90; ~70 kB), 64 distinct ones."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        if i >= 64:  # decoding cost is per file, not per distinct picture: copy the first 64
            p = folder / f"{i:05d}.jpg"
            p.write_bytes(out[i % 64].read_bytes())
            out.append(p)
            continue
        c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        t = (xx / w * rng.uniform(0.2, 1) + yy / h * rng.uniform(0.2, 1))[..., None] / 2
        img = (c0 * (1 - t) + c1 * t + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(img)
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
            d.rectangle(
                (x0, y0, x0 + int(rng.integers(20, 300)), y0 + int(rng.integers(20, 200))),
                fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
            )
        p = folder / f"{i:05d}.jpg"
        im.filter(ImageFilter.GaussianBlur(1)).save(p, quality=90)
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--workers", type=int, default=None, help="decode workers (default: index.num_workers / one per spare core)"
    )
    ap.add_argument(
        "--model",
        default=None,
        help="'b32': openai/clip-vit-base-patch32 (needs it cached); 'b32-random': its "
        "shape, random weights; default: params.yaml's model",
    )
    a = ap.parse_args()
    import torch
    import yaml

    from carsearch.model.clip import encode_images, load_clip, load_images
    from carsearch.model.loader import default_workers

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    if a.model == "b32-random":  # ViT-B/32's shape (224 px, 12 x 768) with random weights: its compute, offline
        from carsearch.model.clip import TinySpec, build_tiny_clip

        spec = {"name": "vit-b32-shaped (random init)"}
        model, proc = build_tiny_clip(
            TinySpec(
                image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12, projection_dim=512
            )
        )
    else:
        spec = (
            params["model"]
            if a.model != "b32"
            else {"kind": "pretrained", "pretrained": "openai/clip-vit-base-patch32", "name": "clip_vit_b32"}
        )
        model, proc = load_clip(spec, seed=0)
    model.eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    workers = (
        a.workers
        if a.workers is not None
        else (
            params["index"].get("num_workers") if params["index"].get("num_workers") is not None else default_workers()
        )
    )
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        paths = photos(Path(d), a.n)
        gen_s = time.perf_counter() - t
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
        pix = proc.image_processor(images=load_images(paths[: a.batch_size]), return_tensors="pt")["pixel_values"].to(
            device
        )

        @torch.no_grad()
        def forward_only() -> float:
            t = time.perf_counter()
            for _ in range(0, a.n, a.batch_size):
                f = model.get_image_features(pixel_values=pix)
                torch.nn.functional.normalize(getattr(f, "pooler_output", f).float(), dim=-1).cpu()
            return a.n / (time.perf_counter() - t)

        forward_only()  # warm-up
        fwd = forward_only()  # torch's default threads (all cores)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
        fwd_rest = forward_only()  # on the cores the decode workers leave
        torch.set_num_threads(threads)
        encode_images(
            model, proc, paths[: a.batch_size], batch_size=a.batch_size, num_workers=workers, draft=True
        )  # warm-up
        t = time.perf_counter()
        encode_images(model, proc, paths, batch_size=a.batch_size, num_workers=workers, draft=True)
        pipe = a.n / (time.perf_counter() - t)
        t = time.perf_counter()
        encode_images(model, proc, paths, batch_size=a.batch_size, num_workers=0, draft=True)
        inproc = a.n / (time.perf_counter() - t)
        t = time.perf_counter()
        n_old = min(a.n, 256)
        encode_images(model, proc, load_images(paths[:n_old]), batch_size=a.batch_size)
        old = n_old / (time.perf_counter() - t)
    best = max(fwd, fwd_rest)  # the faster of the two forward measurements is the ceiling
    ratio = pipe / best
    print(
        f"\nbench_embed: {a.n} JPEGs 1024x768 (~{mb:.0f} kB, generated in {gen_s:.0f} s), model {spec.get('name')} "
        f"({'x'.join(map(str, pix.shape[-2:]))} input), batch {a.batch_size}, {workers} decode workers, "
        f"{os.cpu_count()} cores, device {device}"
    )
    print(f"  forward only                      {fwd:8.1f} img/s   ({threads} torch threads)")
    print(
        f"  forward only, cores left to model {fwd_rest:8.1f} img/s   ({max(1, (os.cpu_count() or 1) - workers)} torch threads)"
    )
    print(
        f"  loader pipeline (draft, workers)  {pipe:8.1f} img/s   = {ratio:.2f} x the faster forward   target >= {TARGET}  "
        f"{'MET' if ratio >= TARGET else 'MISSED'}"
    )
    print(f"  loader in-process (draft, 0 workers){inproc:7.1f} img/s   = {inproc / best:.2f} x the faster forward")
    print(f"  old path (full decode, processor) {old:8.1f} img/s   = {old / best:.2f} x the faster forward")
    if device.type != "cuda":
        print("  GPU: not measured (no CUDA device here)")


if __name__ == "__main__":
    main()
