"""A light path for text queries: the CLIP text tower of a `save_pretrained` folder, run in NumPy
with the folder's own `tokenizer.json` (the `tokenizers` library, what transformers' CLIPTokenizer
runs), so a cold `carsearch search "..."` needs neither torch nor transformers (about 8 s of
imports on 2 cores; docs/scale.md). Same math as transformers' CLIPTextModel (pre-LN blocks,
causal attention, quick_gelu, EOS pooling, projection): tests/test_textenc.py checks the vectors
against `model.encode_texts`. `load()` returns None for anything it does not cover (another
activation, half-precision weights, missing files): callers then use the transformers model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def read_weights(path: Path, prefixes: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The float32 tensors of a safetensors file whose names start with one of `prefixes`; None
    when there are none or any is of another dtype (then the NumPy path does not apply)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        weights = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}
    if not weights or any(v.dtype != np.float32 for v in weights.values()):
        return None
    return weights


def encoder_layer(
    h: np.ndarray, w: dict, lp: str, heads: int, eps: float, mask: np.ndarray | None = None
) -> np.ndarray:
    """One pre-LN CLIP encoder layer (transformers' CLIPEncoderLayer) on [n, d] hidden states:
    attention (`mask` added to the scores: causal for text, none for images), then quick_gelu MLP."""
    n, d = h.shape
    hd = d // heads
    x = layer_norm(h, w[lp + "layer_norm1.weight"], w[lp + "layer_norm1.bias"], eps)

    def proj(name):
        return (
            (x @ w[f"{lp}self_attn.{name}.weight"].T + w[f"{lp}self_attn.{name}.bias"])
            .reshape(n, heads, hd)
            .transpose(1, 0, 2)
        )

    q, k, v = proj("q_proj") * np.float32(hd**-0.5), proj("k_proj"), proj("v_proj")
    s = q @ k.transpose(0, 2, 1)
    if mask is not None:
        s = s + mask
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    h = (
        h
        + a.transpose(1, 0, 2).reshape(n, d) @ w[lp + "self_attn.out_proj.weight"].T
        + w[lp + "self_attn.out_proj.bias"]
    )
    x = layer_norm(h, w[lp + "layer_norm2.weight"], w[lp + "layer_norm2.bias"], eps)
    x = x @ w[lp + "mlp.fc1.weight"].T + w[lp + "mlp.fc1.bias"]
    x = x * (1.0 / (1.0 + np.exp(-1.702 * x)))  # quick_gelu
    return h + x @ w[lp + "mlp.fc2.weight"].T + w[lp + "mlp.fc2.bias"]


class ClipTextNP:
    def __init__(self, cfg: dict, weights: dict[str, np.ndarray], tokenizer, max_length: int):
        self.cfg, self.w, self.tok, self.max_length = cfg, weights, tokenizer, max_length
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-5))
        self.layers = int(cfg["num_hidden_layers"])
        self.eos = int(cfg.get("eos_token_id", 2))
        self.pad = int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else self.eos)

    @classmethod
    def load(cls, model_dir: str | Path) -> "ClipTextNP | None":
        """The text encoder of a local CLIP folder, or None when this light path does not apply."""
        d = Path(model_dir)
        try:
            conf = json.loads((d / "config.json").read_text())
            tcfg = conf.get("text_config") or {}
            if conf.get("model_type") != "clip" or tcfg.get("hidden_act", "quick_gelu") != "quick_gelu":
                return None
            if not (d / "tokenizer.json").is_file() or not (d / "model.safetensors").is_file():
                return None
            from tokenizers import Tokenizer

            weights = read_weights(d / "model.safetensors", ("text_model.", "text_projection.weight"))
            if weights is None:
                return None
            tcfg = {
                **tcfg,
                "num_attention_heads": tcfg.get("num_attention_heads", 8),
                "num_hidden_layers": tcfg.get("num_hidden_layers", 12),
            }
            tok_cfg = (
                json.loads((d / "tokenizer_config.json").read_text()) if (d / "tokenizer_config.json").is_file() else {}
            )
            max_len = int(min(tok_cfg.get("model_max_length") or 77, tcfg.get("max_position_embeddings", 77)))
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(max_len)
            return cls(tcfg, weights, tok, max_len)
        except Exception:  # noqa: BLE001  (anything unexpected: the caller uses transformers instead)
            return None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 [N, D] (as `model.encode_texts`)."""
        w, p = self.w, "text_model."
        out = []
        for text in texts:  # one at a time: no padding, the same numbers as a padded batch
            ids = np.asarray(self.tok.encode(text).ids, np.int64)
            n = len(ids)
            h = w[p + "embeddings.token_embedding.weight"][ids] + w[p + "embeddings.position_embedding.weight"][:n]
            mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
            for i in range(self.layers):
                h = encoder_layer(h, w, f"{p}encoder.layers.{i}.", self.heads, self.eps, mask)
            h = layer_norm(h, w[p + "final_layer_norm.weight"], w[p + "final_layer_norm.bias"], self.eps)
            pos = int(ids.argmax()) if self.eos == 2 else int(np.argmax(ids == self.eos))
            e = h[pos] @ w["text_projection.weight"].T
            out.append(e / max(float(np.linalg.norm(e)), 1e-12))
        if not out:
            return np.zeros((0, w["text_projection.weight"].shape[0]), np.float32)
        return np.stack(out).astype(np.float32)
