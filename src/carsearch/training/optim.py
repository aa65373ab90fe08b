"""What the optimiser sees: frozen towers or layers (`train.lock`), weight-decay groups, the
warm-up + cosine learning-rate schedule and the autocast precision."""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch


def apply_lock(model, lock: dict) -> dict[str, int]:
    """Freeze towers. `lock.image` / `lock.text`: "none" (train all), "all" (frozen), or an int N:
    all but the last N encoder layers frozen (that tower's final norm and projection stay trainable).
    Returns trainable/total parameter counts."""
    towers = {
        "image": (model.vision_model, model.visual_projection, ["embeddings", "pre_layrnorm"], "post_layernorm"),
        "text": (model.text_model, model.text_projection, ["embeddings"], "final_layer_norm"),
    }
    for name, setting in (lock or {}).items():
        if name not in towers:
            raise ValueError(f"train.lock: unknown tower {name!r} (expected 'image' or 'text')")
        tower, proj, stem, _ = towers[name]
        if setting is None or setting is False or setting in ("none", "false"):
            continue
        if setting is True or setting in ("all", "true"):
            for p in itertools.chain(tower.parameters(), proj.parameters()):
                p.requires_grad_(False)
            continue
        try:
            n = int(setting)
        except (TypeError, ValueError):
            raise ValueError(
                f"train.lock.{name}: {setting!r} is not 'none', 'all' or a number of trainable last layers"
            ) from None
        layers = tower.encoder.layers
        if not 0 <= n <= len(layers):
            raise ValueError(f"train.lock.{name}: {n} trainable layers, but the {name} tower has {len(layers)}")
        for s in stem:
            if hasattr(tower, s):
                for p in getattr(tower, s).parameters():
                    p.requires_grad_(False)
        for layer in list(layers)[: len(layers) - n]:
            for p in layer.parameters():
                p.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}


def param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n or "logit_scale" in n or "embedding" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def autocast_dtype(precision: str, device: torch.device):
    """bf16 autocast where supported: `auto` = bf16 on a bf16-capable GPU, fp32 elsewhere."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("train.precision=bf16 but this GPU does not support bfloat16")
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    raise ValueError(f"train.precision: {precision!r} (expected auto, bf16 or fp32)")
