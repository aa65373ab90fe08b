"""Contrastive fine-tuning of a `transformers.CLIPModel` on (image, caption) pairs."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .model import load_images


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pixel_tensor(processor, paths: list[str | Path], batch_size: int = 128) -> torch.Tensor:
    chunks = []
    for i in range(0, len(paths), batch_size):
        chunks.append(processor.image_processor(images=load_images(paths[i : i + batch_size]), return_tensors="pt")["pixel_values"])
    return torch.cat(chunks)


def clip_loss(model, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    if pixel_values.shape[0] < 2:
        raise ValueError("a contrastive batch needs at least 2 pairs (a batch of one gives loss 0)")
    out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, return_loss=True)
    return out.loss


def train_clip(
    model,
    processor,
    train_pairs: list[dict],
    root: Path,
    cfg: dict,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[float]:
    """Train in place with AdamW; returns the per-step losses. `cfg`: lr, epochs, batch_size,
    seed, weight_decay. `on_epoch(epoch, info)` may evaluate and log."""
    if len(train_pairs) < 2:
        raise ValueError(f"train split has {len(train_pairs)} pair(s); contrastive training needs at least 2")
    seed_everything(cfg["seed"])
    pix = pixel_tensor(processor, [root / p["path"] for p in train_pairs])
    tok = processor.tokenizer([p["caption"] for p in train_pairs], padding=True, truncation=True, return_tensors="pt")
    bs = max(2, min(int(cfg["batch_size"]), len(train_pairs)))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.0)))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    losses: list[float] = []
    step = 0
    t0 = time.time()
    for epoch in range(int(cfg["epochs"])):
        model.train()
        perm = torch.randperm(len(train_pairs), generator=gen)
        batches = [perm[i : i + bs] for i in range(0, len(perm), bs)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # never a batch of one
            batches[-2] = torch.cat([batches[-2], batches.pop()])
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="batch", leave=False)
        for idx in bar:
            loss = clip_loss(model, pix[idx], tok["input_ids"][idx], tok["attention_mask"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss))
            bar.set_postfix(loss=f"{float(loss):.3f}")
            if on_step:
                on_step(step, float(loss))
        if on_epoch:
            on_epoch(epoch + 1, {"loss": float(np.mean(losses[-len(batches):])), "seconds": time.time() - t0})
    model.eval()
    return losses
