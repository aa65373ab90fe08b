"""`index.engine: ray`: build_index's embedding step on Ray Data, the same step as the local engine
(same embedding cache, same rows, vectors allclose), then the same versioned publish and gate.

    locations ──from_items──▶ map_batches(decode)     CPU tasks: read (local or S3) + preprocess
              ──▶ map_batches(scale.Embedder, concurrency)  model actors, one GPU each where the cluster has GPUs
              ──▶ iter_batches ──▶ back in the caller's order ──▶ the embedding cache

`index.ray.address`: a cluster (`ray://head:10001`, `auto`); null: `$RAY_ADDRESS`, else a local
Ray on this machine. Each call embeds one chunk of `index.ray.chunk` images, which the embedding
cache keeps as it finishes: a killed build resumes from there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from carsearch.core import originals
from carsearch.core.schema import Index, IndexRay


def start(ray_cfg: IndexRay) -> dict:
    """Connect to (or start) Ray; returns the cluster's resources."""
    import ray

    if not ray.is_initialized():
        address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
        kw = {} if address else {"num_cpus": ray_cfg.num_cpus}
        ray.init(
            address=address,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
            **{k: v for k, v in kw.items() if v},
        )
    return dict(ray.cluster_resources())


def encoder(
    model_dir: str | os.PathLike, root: Path, cfg: Index, progress: bool = False
) -> Callable[[list[str]], np.ndarray]:
    """`encode(locations) -> vectors` (in the order given) on Ray Data with the model saved in
    `model_dir` (a folder every Ray node can read, or a hub id in every node's cache)."""
    import ray

    from carsearch.model.clip import load_pretrained
    from carsearch.model.preprocess import ClipPreprocess

    rc = cfg.ray
    bs, draft = int(cfg.batch_size), bool(cfg.decode_draft)
    state: dict = {}

    def setup() -> dict:  # on the first chunk: a build whose images are all cached never starts Ray
        if not state:
            resources = start(rc)
            num_gpus = rc.num_gpus
            if num_gpus is None:
                num_gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
            _, processor = load_pretrained(model_dir)
            state.update(
                prep=ClipPreprocess.from_processor(processor), num_gpus=num_gpus, **actor_plan(rc, resources, num_gpus)
            )
            ray.data.DataContext.get_current().enable_progress_bars = progress
        return state

    def encode(locs: list[str]) -> np.ndarray:
        st = setup()
        prep, num_gpus, actors, actor_cpus = st["prep"], st["num_gpus"], st["actors"], st["actor_cpus"]
        where = [loc if originals.is_s3(loc) else str(originals.local_path(loc, root).absolute()) for loc in locs]
        order = {w: k for k, w in enumerate(where)}
        ds = ray.data.from_items(
            [{"path": w} for w in where], override_num_blocks=max(1, min(len(where) // bs + 1, 200))
        )
        ds = ds.map_batches(
            decode,
            fn_kwargs={"prep": prep, "draft": draft},
            batch_size=bs,
            num_cpus=actor_cpus or 1,  # = the actors': Ray Data fuses decode into them (no GPU)
            batch_format="numpy",
        )
        ds = ds.map_batches(
            Embedder,
            fn_constructor_args=(str(model_dir), actor_cpus),
            batch_size=bs,
            concurrency=actors,
            num_gpus=num_gpus,
            num_cpus=actor_cpus,
            batch_format="numpy",
        )
        out: np.ndarray | None = None
        for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
            for p, err in zip(b["path"], b["error"]):
                if err:  # as the local engine: the image ingest accepted cannot be read now
                    raise ValueError(f"build_index: {p}: {err}")
            vec = np.asarray(b["vector"], np.float32)
            if out is None:
                out = np.zeros((len(where), vec.shape[1]), np.float32)
            out[[order[str(p)] for p in b["path"]]] = vec
        return out if out is not None else np.zeros((0, 0), np.float32)

    return encode


def actor_plan(rc: IndexRay, resources: dict, num_gpus: float) -> dict:
    """How many model actors and CPUs each: `index.ray.actors` (null: one per GPU, else the
    cluster's CPUs / `actor_cpus`); a CPU actor gets `actor_cpus` CPUs, which Ray gives it as torch
    threads (OMP_NUM_THREADS). Ray Data fuses the decode step into the actors, so an actor decodes
    its own batches: on 2 cores one actor with 2 CPUs, not two actors fighting over them."""
    cpus = max(1, int(resources.get("CPU", 1)))
    per = 0 if num_gpus else min(int(rc.actor_cpus), cpus)
    actors = rc.actors
    if actors is None:
        actors = max(1, int(resources.get("GPU", 0) // num_gpus)) if num_gpus else max(1, cpus // per)
    return {"actors": int(actors), "actor_cpus": per}


def decode(batch: dict, prep, draft: bool) -> dict:
    """Batch of {"path"} -> {"id", "path", "pixels", "error"}: a CPU task (no torch, no model):
    `imaging.open_rgb` + the CLIP processor's own steps, as `model.encode_images` does in one process."""
    from carsearch.core.imaging import ImageError, open_rgb

    ids, pix, errs = [], [], []
    size = (3, prep.crop_h, prep.crop_w)
    for src in batch["path"]:
        src, iid, err, px = str(src), "", "", np.zeros(size, np.float32)
        try:
            data = originals.read(src, Path("/"))  # absolute paths or s3:// URIs
            iid = hashlib.sha256(data).hexdigest()[:16]
            px = prep(open_rgb(data, draft=prep.draft_size if draft else None))
        except ImageError as e:
            err = str(e) or "unreadable image"
        except Exception as e:  # noqa: BLE001  (an unreadable file or object is a reject, never a crash)
            err = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ids.append(iid)
        pix.append(px)
        errs.append(err)
    return {
        "id": np.array(ids, dtype=object),
        "path": np.array([str(p) for p in batch["path"]], dtype=object),
        "pixels": np.stack(pix) if pix else np.zeros((0, *size), np.float32),
        "error": np.array(errs, dtype=object),
    }


class Embedder:
    """A model actor: loads the model once, embeds pixel batches (on its GPU when it has one)."""

    def __init__(self, model_dir: str, threads: int = 0):
        import torch

        if threads:  # a CPU actor: its torch threads = its CPUs (decode runs in between, same process)
            torch.set_num_threads(threads)

        from carsearch.model.clip import load_pretrained

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, _ = load_pretrained(model_dir)
        self.model.eval().to(self.device)

    def __call__(self, batch: dict) -> dict:
        torch = self.torch
        pix = torch.from_numpy(np.ascontiguousarray(batch["pixels"], dtype=np.float32))
        with torch.no_grad():
            if self.device.type == "cuda":
                pix = pix.pin_memory().to(self.device, non_blocking=True)
            feats = self.model.get_image_features(pixel_values=pix)
            feats = getattr(feats, "pooler_output", feats)
            vec = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
        return {"id": batch["id"], "path": batch["path"], "error": batch["error"], "vector": vec}
