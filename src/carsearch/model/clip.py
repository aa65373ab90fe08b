"""CLIP models: a small random-init CLIP built from a config (offline default) or any pretrained
`transformers.CLIPModel` (hub id or local `save_pretrained` dir), behind one loading function.

The tiny model uses the real CLIP BPE vocabulary (`assets/bpe_simple_vocab_16e6.txt.gz`, the file
OpenAI and open_clip ship), converted to the `vocab.json`/`merges.txt` pair `CLIPTokenizer` reads.
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from carsearch.core.errors import CarsearchError
from carsearch.core.imaging import open_rgb
from carsearch.core.paths import mlflow_uri
from carsearch.model.loader import batches, default_workers
from carsearch.model.preprocess import ClipPreprocess

BPE_PATH = Path(__file__).parents[1] / "assets" / "bpe_simple_vocab_16e6.txt.gz"


class ModelConfigError(CarsearchError, ValueError):
    """A model spec that cannot be built or loaded."""


def _bytes_to_unicode() -> dict[int, str]:
    # The byte->unicode table of GPT-2/CLIP BPE.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP vocabulary (49408 tokens) and BPE merges, from the shipped merges file."""
    lines = gzip.open(BPE_PATH, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


@functools.lru_cache(maxsize=4)
def clip_tokenizer(max_length: int = 77):
    """A `CLIPTokenizer` on the real CLIP vocabulary, built offline from the shipped BPE file."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


@dataclass
class TinySpec:
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_text_len: int = 32
    projection_dim: int = 128


def build_tiny_clip(spec: TinySpec, seed: int = 0):
    """A small random-init `CLIPModel` + matching processor; vocab is the real CLIP BPE."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = clip_tokenizer(spec.max_text_len)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=spec.text_width,
            intermediate_size=spec.text_width * 4,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            max_position_embeddings=spec.max_text_len,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            hidden_size=spec.vision_width,
            intermediate_size=spec.vision_width * 4,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
        ),
        projection_dim=spec.projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg)
    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = CLIPProcessor(image_processor=image_proc, tokenizer=tok)
    return model, processor


def load_clip(spec: dict, seed: int = 0):
    """Load a CLIP model from a model spec mapping (a `conf/model/*.yaml` group: `cfg.model.as_dict()`).

    - `kind: tiny`: build from `TinySpec` fields with random init.
    - `kind: pretrained`: `pretrained` is a hub id or a local `save_pretrained` directory.
    Returns (model, processor) in eval mode.
    """
    kind = spec.get("kind")
    if kind == "tiny":
        fields = {k: spec[k] for k in TinySpec.__dataclass_fields__ if k in spec}
        model, processor = build_tiny_clip(TinySpec(**fields), seed=seed)
    elif kind == "pretrained":
        model, processor = load_pretrained(spec["pretrained"])
    else:
        raise ModelConfigError(f"model config: unknown kind {kind!r} (expected 'tiny' or 'pretrained')")
    model.eval()
    return model, processor


def resolve_model_uri(name_or_path: str | os.PathLike) -> str:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` (the MLflow registry, e.g.
    `models:/carsearch-clip@champion`) -> a local folder with the registered files; else unchanged."""
    s = str(name_or_path)
    if not s.startswith("models:/"):
        return s
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # lazy: only a registry URI needs MLflow (a cold search must not import it)

    mlflow.set_tracking_uri(mlflow_uri())  # the store carsearch.experiments.tracking writes to

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=s)
    except Exception as e:  # noqa: BLE001 - unknown name/alias, store unreachable: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelConfigError(f"cannot load {s} from the MLflow registry: {first}") from None


def load_pretrained(name_or_path: str | os.PathLike):
    """Load `CLIPModel` + `CLIPProcessor` from a hub id, a local directory or a registry URI
    (`models:/carsearch-clip@champion`), with a one-line error."""
    from transformers import CLIPModel, CLIPProcessor

    name_or_path = resolve_model_uri(name_or_path)

    try:
        model = CLIPModel.from_pretrained(str(name_or_path))
        processor = CLIPProcessor.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:  # missing dir, offline hub, wrong architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelConfigError(f"cannot load CLIP model from {name_or_path!s}: {first}") from None
    return model, processor


def save_clip(model, processor, out_dir: str | os.PathLike) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def load_images(paths: Iterable[str | os.PathLike]) -> list[Image.Image]:
    """Upright 8-bit RGB pictures (carsearch.core.imaging.open_rgb: EXIF orientation, 16-bit, alpha)."""
    return [open_rgb(p) for p in paths]


@torch.no_grad()
def encode_texts(model, processor, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """L2-normalised text embeddings, float32 [N, D]."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = processor.tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
        feats = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        feats = getattr(feats, "pooler_output", feats)
        out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
    if not out:
        return np.zeros((0, model.config.projection_dim), dtype=np.float32)
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_images(
    model,
    processor,
    images: Sequence,
    batch_size: int = 64,
    progress: bool = False,
    num_workers: int | None = 0,
    draft: bool = False,
) -> np.ndarray:
    """L2-normalised image embeddings, float32 [N, D]. `images` are PIL images or paths.

    Paths go through `carsearch.model.loader`: decoded and preprocessed (the processor's own steps) by
    `num_workers` processes (0: in this process; None: one per spare core) while the model runs,
    with pinned memory / non-blocking copies on CUDA; `draft=True` decodes JPEGs at a reduced
    DCT scale no smaller than the model input (faster, nearly identical embeddings)."""
    from tqdm import tqdm

    model.eval()
    device = next(model.parameters()).device
    out = []
    prep = None
    if len(images) and not any(isinstance(im, Image.Image) for im in images):
        try:
            prep = ClipPreprocess.from_processor(processor)
        except ValueError:  # an image processor of another kind: run it as it is
            prep = None
    if prep is not None:
        pixel_batches = batches(
            list(images), prep, batch_size=batch_size, num_workers=num_workers, draft=draft, device=device
        )
    else:

        def pixel_batches_fn():
            for i in range(0, len(images), batch_size):
                chunk = list(images[i : i + batch_size])
                if chunk and not isinstance(chunk[0], Image.Image):
                    chunk = load_images(chunk)
                yield processor.image_processor(images=chunk, return_tensors="pt")["pixel_values"].to(device)

        pixel_batches = pixel_batches_fn()
    total = -(-len(images) // batch_size)
    threads = torch.get_num_threads()
    if prep is not None and device.type == "cpu" and num_workers != 0 and total > 1:
        busy = default_workers() if num_workers is None else int(num_workers)  # cores the decoders take
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - busy)))  # no oversubscription
    try:
        for pix in tqdm(pixel_batches, total=total, desc="embed images", disable=not progress, unit="batch"):
            feats = model.get_image_features(pixel_values=pix)
            feats = getattr(feats, "pooler_output", feats)
            out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu())
    finally:
        torch.set_num_threads(threads)
    if not out:
        return np.zeros((0, model.config.projection_dim), dtype=np.float32)
    return torch.cat(out).numpy()


# ------------------------------------------------------------------ data
def pixel_tensor(processor, paths: list[str | Path], batch_size: int = 128) -> torch.Tensor:
    chunks = []
    for i in range(0, len(paths), batch_size):
        chunks.append(
            processor.image_processor(images=load_images(paths[i : i + batch_size]), return_tensors="pt")[
                "pixel_values"
            ]
        )
    if not chunks:
        raise ValueError("no images to encode")
    return torch.cat(chunks)
