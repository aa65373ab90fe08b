"""Contrastive fine-tuning of a `transformers.CLIPModel` on (image, caption) pairs.

What a researcher needs, all from one config dict (`conf/train/*.yaml`):
- lock the image tower, the text tower, or all but the last N encoder layers of either (`lock`);
- gradient accumulation, bf16 autocast where supported, gradient checkpointing;
- AdamW with weight decay (no decay on norms/biases/logit scale), linear warmup + cosine schedule;
- several texts per image (the caption and attribute queries such as "a red sedan seen from the
  front"), one drawn per image per epoch, and a multi-positive contrastive loss: in a batch, a
  text is a positive for every image whose labels it describes (two red sedans are not pushed
  apart by "a red sedan"). Without labels it is the plain CLIP loss. `texts_per_image` texts of
  an image per step (more text supervision for one image forward pass). Optionally
  (`image_loss_weight`) an image-image term with same-model images as positives, and
  (`identity_loss_weight`) one with the same vehicle at another camera as positive and every
  stranger, of the same type and colour too, as negative (batches then pair each identity's images);
  (`prompt_loss_weight`) a class-prompt term: each image against every body type's, colour's and
  view's prompt, cross-entropy to its own (UniCL's image-label contrast);
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
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from carsearch.core.paths import resolve
from carsearch.core.schema import Train
from carsearch.sources.labels import same_model_relevance
from carsearch.training.batches import TrainData, augment, draw_texts, epoch_batches, prepare_data
from carsearch.training.checkpoint import TrainState, fingerprint, remove_checkpoint, resume_state, save_checkpoint
from carsearch.training.distributed import Dist, all_gather_grad
from carsearch.training.ema import WeightEMA
from carsearch.training.loss import IdentityLoss, multi_positive_loss, prompt_class_loss, same_model_loss
from carsearch.training.optim import apply_lock, autocast_dtype, lr_lambda, param_groups
from carsearch.training.texts import positives, unknowns


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _grad_checkpointing(model, on: bool) -> None:
    with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_* (same thing)
        warnings.simplefilter("ignore", FutureWarning)
        if on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()


def _setup_model(model, cfg: Train, d: Dist) -> tuple[dict, torch.dtype | None]:
    """Seeds, logit scale, locked towers, checkpointing, device: (parameter counts, autocast dtype)."""
    seed_everything(int(cfg.seed))
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.logit_scale_init is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(float(cfg.logit_scale_init)))
    counts = apply_lock(model, cfg.lock.as_dict())
    if cfg.grad_checkpointing:
        _grad_checkpointing(model, True)
    model.to(d.device)
    return counts, autocast_dtype(cfg.precision, d.device)


# ------------------------------------------------------------------ training state
@dataclass
class TrainResult:
    losses: list[float]
    history: list[dict]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    resumed_from_epoch: int
    counts: dict


@dataclass
class _Run:
    """One training run's fixed parts."""

    cfg: Train
    d: Dist
    model: object
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: WeightEMA
    data: TrainData
    amp: torch.dtype | None
    bs: int
    accum: int
    ckpt_dir: Path | None
    fp: str
    extra_loss: Callable | None
    identity: IdentityLoss | None


def _optimizer(model, cfg: Train, n_batches: int):
    accum = max(1, int(cfg.grad_accum))
    total_steps = math.ceil(n_batches / accum) * int(cfg.epochs)
    warmup = int(round(float(cfg.warmup_ratio) * total_steps))
    opt = torch.optim.AdamW(param_groups(model, float(cfg.weight_decay)), lr=float(cfg.lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, warmup, float(cfg.min_lr_ratio)))
    return opt, sched


def _resume(r: _Run) -> TrainState:
    """The state of a killed run with the same fingerprint from `checkpoint_dir` (weights, optimizer,
    schedule and EMA loaded), else a fresh one."""
    if not (r.ckpt_dir and r.cfg.resume):
        return TrainState()
    state = resume_state(r.ckpt_dir, r.model, r.fp, r.d.main)  # another run's is moved aside (one line)
    if state is None:
        return TrainState()
    r.model.load_state_dict(state["model"])
    r.opt.load_state_dict(state["optimizer"])
    r.sched.load_state_dict(state["scheduler"])
    r.ema.load_state_dict(state.get("ema"))
    if r.d.main:
        print(f"train: resumed from {r.ckpt_dir} after epoch {state['epoch']}", file=sys.stderr)
    return TrainState.of(state)


# ------------------------------------------------------------------ one batch
def _batch_loss(r: _Run, idx: torch.Tensor, texts: list, epoch: int, bi: int, step: int) -> torch.Tensor:
    """The loss of one global batch (this rank's share of the forward pass; features all-gathered)."""
    cfg, d, data = r.cfg, r.d, r.data
    seed, aug = int(cfg.seed), cfg.augment
    gidx = idx.tolist()
    local = gidx[d.rank :: d.world] if d.world > 1 else gidx
    p = data.pix[gidx]
    if aug.shift or aug.flip:  # drawn for the global batch: same for any world size
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + bi * 31)
        p = augment(p, gen, int(aug.shift), bool(aug.flip))
    p = p[d.rank :: d.world] if d.world > 1 else p
    extra = data.prompts if cfg.prompt_loss_weight and data.prompt_targets else []
    ids, mask = data.tokens([t for i in local for t, _ in texts[i]] + extra)
    order = [i for rk in range(d.world) for i in gidx[rk :: d.world]] if d.world > 1 else gidx
    k = len(texts[order[0]])
    blabels, bcons = [data.labels[i] for i in order], [c for i in order for _, c in texts[i]]
    owners = [j // k for j in range(len(bcons))]
    multi = cfg.loss == "multi_positive"
    if multi:
        pos, unk = positives(blabels, bcons, owners), unknowns(blabels, bcons)
    else:
        pos, unk = torch.tensor([[o == i for o in owners] for i in range(len(order))]), None
    with torch.autocast(d.device.type, dtype=r.amp or torch.float32, enabled=r.amp is not None):
        img, txt, scale = r.net(p.to(d.device), ids.to(d.device), mask.to(d.device))
    txt, prompts = txt[: len(txt) - len(extra)], txt[len(txt) - len(extra) :]  # each rank encodes the prompts
    img, txt = all_gather_grad(img, d), all_gather_grad(txt, d)
    loss = multi_positive_loss(img, txt, scale, pos, unk)
    if extra:
        at = torch.tensor(order)
        targets = {a: (rows, t[at]) for a, (rows, t) in data.prompt_targets.items()}
        loss = loss + float(cfg.prompt_loss_weight) * prompt_class_loss(img, prompts, scale, targets)
    if cfg.image_loss_weight:
        loss = loss + float(cfg.image_loss_weight) * same_model_loss(img, scale, same_model_relevance(blabels))
    if r.identity is not None:
        loss = loss + float(cfg.identity_loss_weight) * r.identity(img, scale, blabels)
    if r.extra_loss is not None:  # e.g. the judgments (training.feedback; one process)
        loss = loss + r.extra_loss(r.model, step, d.device)
    return loss


def _optimizer_step(r: _Run) -> None:
    if r.cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([q for q in r.model.parameters() if q.requires_grad], float(r.cfg.max_grad_norm))
    r.opt.step()
    r.sched.step()
    r.opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        r.model.logit_scale.clamp_(0, math.log(100))
    r.ema.update()


# ------------------------------------------------------------------ one epoch
def _run_epoch(r: _Run, s: TrainState, epoch: int, on_step) -> list[float]:
    """Train one epoch; every random draw derives from (seed, epoch): resume == no interruption."""
    seed, d = int(r.cfg.seed), r.d
    seed_everything(seed * 1000 + epoch)
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    idents = [lab.get("identity") for lab in r.data.labels] if r.identity is not None else None
    batches = epoch_batches(len(r.data.pix), r.bs, d.world, gen, idents)
    texts = draw_texts(r.data.variants, int(r.cfg.texts_per_image), gen)
    r.model.train()
    r.opt.zero_grad(set_to_none=True)
    ep_losses = []
    for bi, idx in enumerate(batches):
        sync = (bi + 1) % r.accum == 0 or bi + 1 == len(batches)
        with r.net.no_sync() if (d.world > 1 and not sync) else nullcontext():
            loss = _batch_loss(r, idx, texts, epoch, bi, s.step)
            (loss / r.accum).backward()
        if sync:
            _optimizer_step(r)
        s.step += 1
        lv = float(loss.detach())
        s.losses.append(lv)
        ep_losses.append(lv)
        if on_step:
            on_step(s.step, lv, r.sched.get_last_lr()[0])
    return ep_losses


def _end_epoch(r: _Run, s: TrainState, epoch: int, ep_losses: list[float], seconds: float, validate, on_epoch) -> None:
    """Validate (the EMA weights when on), keep the best, decide early stopping, report, checkpoint."""
    info = {
        "epoch": epoch + 1,
        "loss": float(np.mean(ep_losses)),
        "seconds": seconds,
        "lr": r.sched.get_last_lr()[0],
        "logit_scale": float(r.model.logit_scale.detach().exp()),
    }
    if validate is not None:
        with r.ema.swapped():  # the averaged weights are the ones validated (and kept)
            r.model.eval()
            info.update(validate(r.model))
    es = r.cfg.early_stopping  # null: no early stopping
    metric, patience, min_delta = (es.metric, int(es.patience), float(es.min_delta)) if es else (None, 0, 0.0)
    score = info.get(metric) if metric else None
    if score is not None and (s.best["score"] is None or score > s.best["score"] + min_delta):
        s.best = {"score": float(score), "epoch": epoch + 1, "state": r.ema.state_of_model()}
        s.bad_epochs = 0
    elif score is not None:
        s.bad_epochs += 1
    if patience and s.bad_epochs >= patience:
        info["stopped"] = True
    s.history.append(info)
    s.epoch = epoch + 1
    if on_epoch:
        on_epoch(epoch + 1, info)
    if r.ckpt_dir and r.d.main:
        save_checkpoint(r.ckpt_dir, s.payload(r.model, r.opt, r.sched, r.ema, r.fp))


def _finish(r: _Run, s: TrainState) -> None:
    """The best validated weights (else the last epoch's, averaged when EMA is on), back on the CPU."""
    if r.ckpt_dir and r.d.main:
        remove_checkpoint(r.ckpt_dir)  # finished: nothing to resume
    if s.best["state"] is not None:
        r.model.load_state_dict(s.best["state"])
    else:
        r.ema.copy_to_model()  # no validation: the averaged weights of the last epoch
    if r.cfg.grad_checkpointing:
        _grad_checkpointing(r.model, False)
    for q in r.model.parameters():
        q.requires_grad_(True)
    r.model.to("cpu")
    r.model.eval()


def _check(cfg: Train, n: int, d: Dist) -> None:
    if n < 2:
        raise ValueError(f"train split has {n} pair(s); contrastive training needs at least 2")
    if n < 2 * d.world:
        raise ValueError(f"train split has {n} pairs; {d.world} processes need at least {2 * d.world}")
    if cfg.loss not in ("multi_positive", "clip"):
        raise ValueError(f"train.loss: {cfg.loss!r} (expected multi_positive or clip)")


def _make_run(model, processor, train_pairs, root: Path, cfg: Train, d: Dist, extra_loss) -> tuple[_Run, dict]:
    counts, amp = _setup_model(model, cfg, d)
    data = prepare_data(processor, train_pairs, root, cfg.texts)
    bs = max(2, min(int(cfg.batch_size), len(train_pairs)))
    n_batches = len(epoch_batches(len(train_pairs), bs, d.world, torch.Generator().manual_seed(0)))
    net = DualEncoder(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    opt, sched = _optimizer(model, cfg, n_batches)
    # a configured (relative) path is the repo's (`root`), never the current directory's
    ckpt_dir = resolve(cfg.checkpoint_dir, root) if cfg.checkpoint_dir else None
    run = _Run(
        cfg, d, model, net, opt, sched, WeightEMA(model, cfg.ema), data, amp, bs,
        max(1, int(cfg.grad_accum)), ckpt_dir, fingerprint(cfg, model, train_pairs, d.world), extra_loss,
        IdentityLoss() if cfg.identity_loss_weight else None,
    )  # fmt: skip
    return run, counts


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
    """Train `model` in place (ends with the best validated weights). `cfg`: the validated `train`
    section of params.yaml (conf/train/default.yaml), complete.
    `validate(model) -> {metric: value}` runs after each epoch; `on_step(step, loss, lr)`,
    `on_epoch(epoch, info)` for logging (call them on the main rank only if you log);
    `extra_loss(model, step, device)` is added to every batch's loss (training.feedback)."""
    d = dist or Dist()
    _check(cfg, len(train_pairs), d)
    r, counts = _make_run(model, processor, train_pairs, root, cfg, d, extra_loss)
    s = _resume(r)  # the weights, optimizer, schedule and EMA of a killed run; else a fresh state
    resumed_from = s.epoch
    t0 = time.time()
    for epoch in range(s.epoch, int(cfg.epochs)):
        if s.history and s.history[-1].get("stopped"):
            break
        ep_losses = _run_epoch(r, s, epoch, on_step)
        _end_epoch(r, s, epoch, ep_losses, time.time() - t0, validate, on_epoch)
        if d.world > 1:
            torch.distributed.barrier()
    _finish(r, s)
    stopped = bool(s.history and s.history[-1].get("stopped"))
    return TrainResult(
        s.losses, s.history, s.best["epoch"] or len(s.history), s.best["score"], stopped, resumed_from, counts
    )
