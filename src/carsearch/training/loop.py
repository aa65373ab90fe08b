"""Contrastive fine-tuning of a `transformers.CLIPModel` on (image, caption) pairs.

What a researcher needs, all from one config dict (`conf/train/*.yaml`):
- lock the image tower, the text tower, or all but the last N encoder layers of either (`lock`);
- gradient accumulation, bf16 autocast where supported, gradient checkpointing;
- AdamW with weight decay (no decay on norms/biases/logit scale), linear warmup + cosine schedule;
- several texts per image (the caption and attribute queries such as "a red sedan seen from the
  front"), one drawn per image per epoch, and a multi-positive contrastive loss: in a batch, a
  text is a positive for every image whose labels it describes (two red sedans are not pushed
  apart by "a red sedan"). Without labels it is the plain CLIP loss. Optionally
  (`image_loss_weight`) an image-image term with same-model images as positives;
- light, label-preserving image augmentation (shift + horizontal flip);
- validation each epoch (a callback), early stopping on a validation metric, best weights kept;
- optionally (`ema`) an exponential moving average of the weights (torch.optim.swa_utils), which
  is what is validated, kept and saved (carsearch.training.ema);
- a checkpoint every epoch and automatic resume after a kill, bit-identical to an uninterrupted
  run: every random draw is seeded from (seed, epoch), never from a running generator;
- multi-process data parallel (`torchrun --nproc_per_node N`, gloo on CPU, nccl on GPU): the
  global batch is split over ranks and features are all-gathered, so the loss is the same as
  one process with the whole batch.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from carsearch.core.paths import resolve
from carsearch.core.schema import Train
from carsearch.model.clip import pixel_tensor
from carsearch.sources.labels import same_model_relevance
from carsearch.training.checkpoint import architecture, fingerprint, remove_checkpoint, resume_state, save_checkpoint
from carsearch.training.distributed import Dist, all_gather_grad
from carsearch.training.ema import WeightEMA
from carsearch.training.loss import multi_positive_loss, same_model_loss
from carsearch.training.optim import apply_lock, autocast_dtype, lr_lambda, param_groups
from carsearch.training.texts import positives, text_variants, unknowns


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment(pix: torch.Tensor, gen: torch.Generator, shift: int, flip: bool) -> torch.Tensor:
    """Label-preserving: random translation (reflect-padded) and horizontal flip."""
    n, _, h, w = pix.shape
    if shift > 0:
        padded = F.pad(pix, (shift, shift, shift, shift), mode="reflect")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        pix = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if flip:
        f = torch.rand(n, generator=gen) < 0.5
        pix = torch.where(f[:, None, None, None], pix.flip(-1), pix)
    return pix


# ------------------------------------------------------------------ model helpers
class DualEncoder(nn.Module):
    """forward(pixels, ids, mask) -> (image emb, text emb, logit scale); what DDP wraps."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values, input_ids, attention_mask):
        img = self.clip.get_image_features(pixel_values=pixel_values)
        txt = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
        return (
            F.normalize(img.float(), dim=-1),
            F.normalize(txt.float(), dim=-1),
            self.clip.logit_scale.exp().clamp(max=100),
        )


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    losses: list[float]
    history: list[dict]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    resumed_from_epoch: int
    counts: dict


def _batches(n: int, bs: int, world: int, gen: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    out = [perm[i : i + bs] for i in range(0, n, bs)]
    if len(out) > 1 and len(out[-1]) < max(2, world * 2 if world > 1 else 2):
        out[-2] = torch.cat([out[-2], out.pop()])  # never a batch of one
    if world > 1:  # equal local batches for all_gather: trim to a multiple of world
        out = [b[: len(b) - len(b) % world] for b in out]
    return [b for b in out if len(b) >= 2]


def train_clip(
    model,
    processor,
    train_pairs: list[dict],
    root: Path,
    cfg: Train,
    on_step: Callable[[int, float, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    validate: Callable[[object], dict] | None = None,
    dist: Dist | None = None,
    extra_loss: Callable[[object, int, object], torch.Tensor] | None = None,
) -> TrainResult:
    """Train `model` in place (ends with the best validated weights). `cfg`: the validated `train` section of params.yaml (conf/train/default.yaml), complete.
    `validate(model) -> {metric: value}` runs after each epoch; `on_step(step, loss, lr)`,
    `on_epoch(epoch, info)` for logging (call them on the main rank only if you log);
    `extra_loss(model, step, device)` is added to every batch's loss (training.feedback)."""
    d = dist or Dist()
    if len(train_pairs) < 2:
        raise ValueError(f"train split has {len(train_pairs)} pair(s); contrastive training needs at least 2")
    if len(train_pairs) < 2 * d.world:
        raise ValueError(f"train split has {len(train_pairs)} pairs; {d.world} processes need at least {2 * d.world}")
    seed = int(cfg.seed)
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.logit_scale_init is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(float(cfg.logit_scale_init)))
    counts = apply_lock(model, cfg.lock.as_dict())
    if cfg.grad_checkpointing:
        import warnings

        with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_* (same thing)
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(d.device)
    amp = autocast_dtype(cfg.precision, d.device)

    pix = pixel_tensor(processor, [root / p["path"] for p in train_pairs])
    labels = [dict(p.get("labels") or p.get("attributes") or {}) for p in train_pairs]
    variants = [text_variants(p, cfg.texts) for p in train_pairs]
    uniq = sorted({t for vs in variants for t, _ in vs})
    tok = processor.tokenizer(uniq, padding=True, truncation=True, return_tensors="pt")
    tid = {t: i for i, t in enumerate(uniq)}
    multi = cfg.loss == "multi_positive"
    w_img = float(cfg.image_loss_weight or 0.0)
    if cfg.loss not in ("multi_positive", "clip"):
        raise ValueError(f"train.loss: {cfg.loss!r} (expected multi_positive or clip)")

    bs = max(2, min(int(cfg.batch_size), len(train_pairs)))
    accum = max(1, int(cfg.grad_accum))
    epochs = int(cfg.epochs)
    n_batches = len(_batches(len(train_pairs), bs, d.world, torch.Generator().manual_seed(0)))
    total_steps = math.ceil(n_batches / accum) * epochs
    warmup = int(round(float(cfg.warmup_ratio) * total_steps))
    net = DualEncoder(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    opt = torch.optim.AdamW(param_groups(model, float(cfg.weight_decay)), lr=float(cfg.lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, warmup, float(cfg.min_lr_ratio)))

    es = cfg.early_stopping  # null: no early stopping
    metric, patience, min_delta = (es.metric, int(es.patience), float(es.min_delta)) if es else (None, 0, 0.0)
    fp = fingerprint(cfg, model, train_pairs, d.world)
    # a configured (relative) path is the repo's (`root`), never the current directory's
    ckpt_dir = resolve(cfg.checkpoint_dir, root) if cfg.checkpoint_dir else None
    losses: list[float] = []
    history: list[dict] = []
    best = {"score": None, "epoch": 0, "state": None}
    start_epoch, step, bad_epochs = 0, 0, 0
    ema = WeightEMA(model, cfg.ema)  # off (no-op) when train.ema is null
    if ckpt_dir and cfg.resume:
        state = resume_state(ckpt_dir, model, fp, d.main)  # another run's is moved aside (one line)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, step, losses, history = state["epoch"], state["step"], state["losses"], state["history"]
            best, bad_epochs = state["best"], state["bad_epochs"]
            ema.load_state_dict(state.get("ema"))
            if d.main:
                print(f"train: resumed from {ckpt_dir} after epoch {start_epoch}", file=sys.stderr)
    resumed_from = start_epoch
    stopped = bool(history and history[-1].get("stopped"))
    t0 = time.time()
    aug = cfg.augment
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        # every random draw of this epoch derives from (seed, epoch): resume == no interruption
        seed_everything(seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        batches = _batches(len(train_pairs), bs, d.world, gen)
        choice = [vs[int(torch.randint(len(vs), (1,), generator=gen))] for vs in variants]
        model.train()
        opt.zero_grad(set_to_none=True)
        ep_losses = []
        for bi, idx in enumerate(batches):
            gidx = idx.tolist()
            local = gidx[d.rank :: d.world] if d.world > 1 else gidx
            p = pix[gidx]
            if aug.shift or aug.flip:  # drawn for the global batch: same for any world size
                p = augment(
                    p,
                    torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + bi * 31),
                    int(aug.shift),
                    bool(aug.flip),
                )
            p = p[d.rank :: d.world] if d.world > 1 else p
            t = torch.tensor([tid[choice[i][0]] for i in local])
            order = [i for r in range(d.world) for i in gidx[r :: d.world]] if d.world > 1 else gidx
            blabels, bcons = [labels[i] for i in order], [choice[i][1] for i in order]
            pos = positives(blabels, bcons) if multi else torch.eye(len(order), dtype=torch.bool)
            unk = unknowns(blabels, bcons) if multi else None
            sync = (bi + 1) % accum == 0 or bi + 1 == len(batches)
            ctx = net.no_sync() if (d.world > 1 and not sync) else _null()
            with ctx:
                with torch.autocast(d.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    img, txt, scale = net(
                        p.to(d.device), tok["input_ids"][t].to(d.device), tok["attention_mask"][t].to(d.device)
                    )
                img, txt = all_gather_grad(img, d), all_gather_grad(txt, d)
                loss = multi_positive_loss(img, txt, scale, pos, unk)
                if w_img:
                    loss = loss + w_img * same_model_loss(img, scale, same_model_relevance(blabels))
                if extra_loss is not None:  # e.g. the judgments (training.feedback; one process)
                    loss = loss + extra_loss(model, step, d.device)
                (loss / accum).backward()
            if sync:
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(
                        [q for q in model.parameters() if q.requires_grad], float(cfg.max_grad_norm)
                    )
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                ema.update()
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            ep_losses.append(lv)
            if on_step:
                on_step(step, lv, sched.get_last_lr()[0])
        info = {
            "epoch": epoch + 1,
            "loss": float(np.mean(ep_losses)),
            "seconds": time.time() - t0,
            "lr": sched.get_last_lr()[0],
            "logit_scale": float(model.logit_scale.detach().exp()),
        }
        if validate is not None:
            with ema.swapped():  # the averaged weights are the ones validated (and kept)
                model.eval()
                info.update(validate(model))
        score = info.get(metric) if metric else None
        improved = score is not None and (best["score"] is None or score > best["score"] + min_delta)
        if improved:
            best = {
                "score": float(score),
                "epoch": epoch + 1,
                "state": ema.state_of_model(),
            }
            bad_epochs = 0
        elif score is not None:
            bad_epochs += 1
        if patience and bad_epochs >= patience:
            info["stopped"] = stopped = True
        history.append(info)
        if on_epoch:
            on_epoch(epoch + 1, info)
        if ckpt_dir and d.main:
            save_checkpoint(
                ckpt_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "losses": losses,
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "fingerprint": fp,
                    "ema": ema.state_dict(),
                    "arch": architecture(model),
                },
            )
        if d.world > 1:
            torch.distributed.barrier()
    if ckpt_dir and d.main:
        remove_checkpoint(ckpt_dir)  # finished: nothing to resume
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    else:
        ema.copy_to_model()  # no validation: the averaged weights of the last epoch
    if cfg.grad_checkpointing:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_disable()
    for q in model.parameters():
        q.requires_grad_(True)
    model.to("cpu")
    model.eval()
    return TrainResult(losses, history, best["epoch"] or len(history), best["score"], stopped, resumed_from, counts)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
