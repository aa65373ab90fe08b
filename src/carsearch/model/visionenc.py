"""A light path for image queries: the CLIP vision tower of a `save_pretrained` folder in NumPy,
with the folder's own image-processor settings (carsearch.model.preprocess, the same steps as
CLIPImageProcessor), so a cold `carsearch search --image x.jpg` needs neither torch nor
transformers, as text queries already do (carsearch.model.textenc). Same math as transformers'
CLIPVisionModel: patch embedding (the stride-p convolution as one matrix product), class token,
positions, pre-LN, the encoder layers, post-LN on the class token, projection.
tests/test_textenc.py checks the vectors against `model.encode_images`. `load()` returns None for
anything it does not cover; callers then use the transformers model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from carsearch.model.textenc import encoder_layer, layer_norm, read_weights


def _processor_settings(d: Path):
    """The image processor's settings from processor_config.json (transformers 5) or
    preprocessor_config.json, as the attributes ClipPreprocess.from_processor reads."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        p = d / name
        if p.is_file():
            cfg = json.loads(p.read_text())
            cfg = cfg.get("image_processor", cfg)
            if "image_mean" in cfg:
                return SimpleNamespace(**cfg)
    return None


class ClipVisionNP:
    def __init__(self, cfg: dict, weights: dict[str, np.ndarray], preprocess):
        self.w, self.pre = weights, preprocess
        self.heads = int(cfg.get("num_attention_heads", 12))
        self.layers = int(cfg.get("num_hidden_layers", 12))
        self.eps = float(cfg.get("layer_norm_eps", 1e-5))
        self.patch = int(cfg.get("patch_size", 32))

    @classmethod
    def load(cls, model_dir: str | Path) -> "ClipVisionNP | None":
        """The image encoder of a local CLIP folder, or None when this light path does not apply."""
        d = Path(model_dir)
        try:
            conf = json.loads((d / "config.json").read_text())
            vcfg = conf.get("vision_config") or {}
            if conf.get("model_type") != "clip" or vcfg.get("hidden_act", "quick_gelu") != "quick_gelu":
                return None
            settings = _processor_settings(d)
            if settings is None or not (d / "model.safetensors").is_file():
                return None
            from carsearch.model.preprocess import ClipPreprocess

            pre = ClipPreprocess.from_processor(settings)
            size = int(vcfg.get("image_size", 224))
            if (pre.crop_h, pre.crop_w) != (size, size):  # position embeddings are for this size only
                return None
            weights = read_weights(d / "model.safetensors", ("vision_model.", "visual_projection.weight"))
            if weights is None:
                return None
            return cls(vcfg, weights, pre)
        except Exception:  # noqa: BLE001  (anything unexpected: the caller uses transformers instead)
            return None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of preprocessed images [N, 3, H, W] (float32 [N, D])."""
        w, p, ps = self.w, "vision_model.", self.patch
        conv = w[p + "embeddings.patch_embedding.weight"]  # [D, 3, p, p], no bias
        dim = conv.shape[0]
        out = []
        for x in pixels:
            c, hh, ww = x.shape
            patches = x.reshape(c, hh // ps, ps, ww // ps, ps).transpose(1, 3, 0, 2, 4).reshape(-1, c * ps * ps)
            h = np.concatenate([w[p + "embeddings.class_embedding"][None], patches @ conv.reshape(dim, -1).T])
            h = h + w[p + "embeddings.position_embedding.weight"][: len(h)]
            h = layer_norm(h, w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"], self.eps)
            for i in range(self.layers):
                h = encoder_layer(h, w, f"{p}encoder.layers.{i}.", self.heads, self.eps)
            e = (
                layer_norm(h[0], w[p + "post_layernorm.weight"], w[p + "post_layernorm.bias"], self.eps)
                @ w["visual_projection.weight"].T
            )
            out.append(e / max(float(np.linalg.norm(e)), 1e-12))
        if not out:
            return np.zeros((0, w["visual_projection.weight"].shape[0]), np.float32)
        return np.stack(out).astype(np.float32)

    def encode(self, images: Sequence) -> np.ndarray:
        """Embeddings of image paths or PIL images (opened, EXIF-rotated and preprocessed as
        `model.encode_images` does)."""
        from PIL import Image

        from carsearch.core.imaging import open_rgb

        ims = [im if isinstance(im, Image.Image) else open_rgb(im) for im in images]
        return self.encode_pixels(np.stack([self.pre(im) for im in ims])) if ims else self.encode_pixels(np.zeros((0,)))
