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
- a checkpoint every epoch and automatic resume after a kill, bit-identical to an uninterrupted
  run: every random draw is seeded from (seed, epoch), never from a running generator;
- multi-process data parallel (`torchrun --nproc_per_node N`, gloo on CPU, nccl on GPU): the
  global batch is split over ranks and features are all-gathered, so the loss is the same as
  one process with the whole batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .captions import query_text
from .evaluation import same_model_relevance
from .model import ModelConfigError, load_images

DEFAULTS = {
    "lr": 5e-4, "epochs": 10, "batch_size": 64, "seed": 0, "weight_decay": 0.1,
    "warmup_ratio": 0.1, "min_lr_ratio": 0.0, "grad_accum": 1, "precision": "auto",
    "grad_checkpointing": False, "lock": {"image": "none", "text": "none"},
    "texts": "caption+queries", "loss": "multi_positive", "logit_scale_init": None, "image_loss_weight": 0.0,
    "augment": {"shift": 4, "flip": True},
    "early_stopping": {"metric": "t2i_recall@5", "patience": 0, "min_delta": 0.0},
    "checkpoint_dir": None, "resume": True, "max_grad_norm": 1.0,
}
QUERY_ATTRS = ("color", "body_type", "view")


def train_config(cfg: dict) -> dict:
    """`cfg` over the defaults (nested dicts merged one level deep)."""
    out = json.loads(json.dumps(DEFAULTS))
    for k, v in (cfg or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ distributed helpers
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """From torchrun's environment (WORLD_SIZE/RANK/LOCAL_RANK); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, local, device)


def _all_gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)  # differentiable: gradients flow back to each rank


# ------------------------------------------------------------------ data
def pixel_tensor(processor, paths: list[str | Path], batch_size: int = 128) -> torch.Tensor:
    chunks = []
    for i in range(0, len(paths), batch_size):
        chunks.append(processor.image_processor(images=load_images(paths[i : i + batch_size]), return_tensors="pt")["pixel_values"])
    if not chunks:
        raise ValueError("no images to encode")
    return torch.cat(chunks)


def _make_model(labels: dict) -> str | None:
    make, model = labels.get("make"), labels.get("model")
    if make and model and "unknown" not in (make, model):
        return f"{make} {model}" if make.lower() not in model.lower() else str(model)
    return None


def text_variants(pair: dict, mode: str = "caption+queries") -> list[tuple[str, dict]]:
    """Training texts for one pair, each with the label constraints it states (for positives).

    `caption`: the caption only (it states every label). `caption+queries`: also one attribute
    query per non-empty subset of colour/body type/view, with and without make and model."""
    labels = pair.get("labels") or pair.get("attributes") or {}
    full = {k: labels[k] for k in (*QUERY_ATTRS, "model_id", "make", "model") if labels.get(k)}
    out = [(pair["caption"], full)]
    if mode == "caption":
        return out
    if mode != "caption+queries":
        raise ValueError(f"train.texts: unknown mode {mode!r} (expected 'caption' or 'caption+queries')")
    avail = [a for a in QUERY_ATTRS if labels.get(a)]
    mm = _make_model(labels)
    for r in range(1, len(avail) + 1):
        for combo in itertools.combinations(avail, r):
            kw = {a: labels[a] for a in combo}
            out.append((query_text(**kw), dict(kw)))
            if mm:
                mkw = {**kw, "make": labels["make"], "model": labels["model"]}
                out.append((query_text(**kw, make_model=mm), mkw))
    if mm:
        out.append((query_text(make_model=mm), {"make": labels["make"], "model": labels["model"]}))
    return out


def positives(labels: list[dict], constraints: list[dict]) -> torch.Tensor:
    """pos[i, j]: text j's constraints all hold for image i (the diagonal always does)."""
    n = len(labels)
    pos = torch.zeros(n, len(constraints), dtype=torch.bool)
    for j, c in enumerate(constraints):
        for i, lab in enumerate(labels):
            pos[i, j] = bool(c) and all(lab.get(k) == v for k, v in c.items())
    pos[torch.arange(n), torch.arange(n)] = True
    return pos


def unknowns(labels: list[dict], constraints: list[dict]) -> torch.Tensor:
    """unk[i, j]: image i has no label for some key text j constrains and agrees on the others, so
    whether the text describes it is unknown: neither positive nor negative ("unknown" is no
    constraint). All False when every image has every label (the rendered set)."""
    unk = torch.zeros(len(labels), len(constraints), dtype=torch.bool)
    for j, c in enumerate(constraints):
        for i, lab in enumerate(labels):
            unk[i, j] = any(k not in lab for k in c) and all(lab[k] == v for k, v in c.items() if k in lab)
    return unk


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, pos: torch.Tensor,
                        ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE whose target spreads evenly over every positive (identity = CLIP loss).
    `ignore[i, j]` (not positive) leaves the pair out of both softmaxes: unknown, not a negative."""
    logits = scale * img @ txt.t()
    if ignore is not None and bool(ignore.any()):
        logits = logits.masked_fill((ignore & ~pos).to(logits.device), -1e9)  # finite: 0 * it stays 0
    pos = pos.to(logits.device, torch.float32)
    li = -(F.log_softmax(logits, 1) * (pos / pos.sum(1, keepdim=True))).sum(1).mean()
    lt = -(F.log_softmax(logits.t(), 1) * (pos.t() / pos.t().sum(1, keepdim=True))).sum(1).mean()
    return (li + lt) / 2


def same_model_loss(img: torch.Tensor, scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Image-image InfoNCE (SupCon): `same[i, j]` marks image j as the same car model as image i
    (diagonal False, as `evaluation.same_model_relevance` builds it). Pulls one model's views and
    colours together, which image->image search needs and text alone teaches slowly. 0 when no
    image in the batch has a same-model partner."""
    same = torch.as_tensor(same, dtype=torch.bool, device=img.device)
    has = same.any(1)
    if not bool(has.any()):
        return img.sum() * 0.0
    eye = torch.eye(len(same), dtype=torch.bool, device=img.device)
    logp = F.log_softmax((scale * img @ img.t()).masked_fill(eye, float("-inf")), 1)
    per_row = -logp.masked_fill(~same, 0.0).sum(1) / same.sum(1).clamp(min=1)
    return per_row[has].mean()


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
        return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1), self.clip.logit_scale.exp().clamp(max=100)


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
            raise ValueError(f"train.lock.{name}: {setting!r} is not 'none', 'all' or a number of trainable last layers") from None
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


def architecture(model) -> dict:
    c = model.config
    return {"vision": {k: getattr(c.vision_config, k) for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size")},
            "text": {k: getattr(c.text_config, k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
            "projection_dim": c.projection_dim}


def fingerprint(cfg: dict, model, train_pairs: list[dict], world: int) -> str:
    keep = {k: v for k, v in cfg.items() if k not in {"checkpoint_dir", "resume", "log_every", "num_workers", "nproc_per_node"}}
    blob = json.dumps({"cfg": keep, "arch": architecture(model), "world": world,
                       "data": [p.get("id", p["path"]) for p in train_pairs]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ checkpoints
CKPT = "last.pt"


def save_checkpoint(ckpt_dir: Path, state: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / (CKPT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / CKPT)  # a kill mid-save never leaves a broken checkpoint


def load_checkpoint(path: Path, model) -> dict:
    """A checkpoint for this model; a clear error if it was saved for another architecture."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelConfigError(f"checkpoint {path}: not a carsearch training checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ModelConfigError(f"checkpoint {path}: not a carsearch training checkpoint (no model state)")
    want, got = architecture(model), state.get("arch")
    if got is not None and got != want:
        raise ModelConfigError(f"checkpoint {path} is for another architecture ({_arch_str(got)}), "
                               f"the configured model is {_arch_str(want)}; delete it or fix model=")
    own = model.state_dict()
    bad = [k for k, v in state["model"].items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state["model"]]
    if bad or missing:
        raise ModelConfigError(f"checkpoint {path} does not fit the configured model "
                               f"({len(bad)} mismatched, {len(missing)} missing tensors, e.g. {(bad + missing)[0]})")
    return state


def _arch_str(a: dict) -> str:
    v, t = a.get("vision", {}), a.get("text", {})
    return (f"vision {v.get('num_hidden_layers')}x{v.get('hidden_size')} @{v.get('image_size')}px, "
            f"text {t.get('num_hidden_layers')}x{t.get('hidden_size')}, dim {a.get('projection_dim')}")


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
    cfg: dict,
    on_step: Callable[[int, float, float], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    validate: Callable[[object], dict] | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Train `model` in place (ends with the best validated weights). `cfg`: see DEFAULTS.
    `validate(model) -> {metric: value}` runs after each epoch; `on_step(step, loss, lr)`,
    `on_epoch(epoch, info)` for logging (call them on the main rank only if you log)."""
    cfg = train_config(cfg)
    d = dist or Dist()
    if len(train_pairs) < 2:
        raise ValueError(f"train split has {len(train_pairs)} pair(s); contrastive training needs at least 2")
    if len(train_pairs) < 2 * d.world:
        raise ValueError(f"train split has {len(train_pairs)} pairs; {d.world} processes need at least {2 * d.world}")
    seed = int(cfg["seed"])
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg["logit_scale_init"] is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(float(cfg["logit_scale_init"])))
    counts = apply_lock(model, cfg["lock"])
    if cfg["grad_checkpointing"]:
        import warnings

        with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_* (same thing)
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(d.device)
    amp = autocast_dtype(cfg["precision"], d.device)

    pix = pixel_tensor(processor, [root / p["path"] for p in train_pairs])
    labels = [dict(p.get("labels") or p.get("attributes") or {}) for p in train_pairs]
    variants = [text_variants(p, cfg["texts"]) for p in train_pairs]
    uniq = sorted({t for vs in variants for t, _ in vs})
    tok = processor.tokenizer(uniq, padding=True, truncation=True, return_tensors="pt")
    tid = {t: i for i, t in enumerate(uniq)}
    multi = cfg["loss"] == "multi_positive"
    w_img = float(cfg["image_loss_weight"] or 0.0)
    if cfg["loss"] not in ("multi_positive", "clip"):
        raise ValueError(f"train.loss: {cfg['loss']!r} (expected multi_positive or clip)")

    bs = max(2, min(int(cfg["batch_size"]), len(train_pairs)))
    accum = max(1, int(cfg["grad_accum"]))
    epochs = int(cfg["epochs"])
    n_batches = len(_batches(len(train_pairs), bs, d.world, torch.Generator().manual_seed(0)))
    total_steps = math.ceil(n_batches / accum) * epochs
    warmup = int(round(float(cfg["warmup_ratio"]) * total_steps))
    net = DualEncoder(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    opt = torch.optim.AdamW(param_groups(model, float(cfg["weight_decay"])), lr=float(cfg["lr"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, warmup, float(cfg["min_lr_ratio"])))

    es = cfg["early_stopping"] or {}
    metric, patience, min_delta = es.get("metric"), int(es.get("patience") or 0), float(es.get("min_delta") or 0)
    fp = fingerprint(cfg, model, train_pairs, d.world)
    ckpt_dir = Path(cfg["checkpoint_dir"]) if cfg["checkpoint_dir"] else None
    losses: list[float] = []
    history: list[dict] = []
    best = {"score": None, "epoch": 0, "state": None}
    start_epoch, step, bad_epochs = 0, 0, 0
    if ckpt_dir and cfg["resume"] and (ckpt_dir / CKPT).is_file():
        state = load_checkpoint(ckpt_dir / CKPT, model)
        if state.get("fingerprint") != fp:
            if d.main:
                print(f"train: checkpoint in {ckpt_dir} is for other params/data; starting fresh", file=sys.stderr)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start_epoch, step, losses, history = state["epoch"], state["step"], state["losses"], state["history"]
            best, bad_epochs = state["best"], state["bad_epochs"]
            if d.main:
                print(f"train: resumed from {ckpt_dir / CKPT} after epoch {start_epoch}", file=sys.stderr)
    resumed_from = start_epoch
    stopped = bool(history and history[-1].get("stopped"))
    t0 = time.time()
    aug = cfg["augment"] or {}
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
            if aug.get("shift") or aug.get("flip"):  # drawn for the global batch: same for any world size
                p = augment(p, torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + bi * 31),
                            int(aug.get("shift") or 0), bool(aug.get("flip")))
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
                    img, txt, scale = net(p.to(d.device), tok["input_ids"][t].to(d.device), tok["attention_mask"][t].to(d.device))
                img, txt = _all_gather(img, d), _all_gather(txt, d)
                loss = multi_positive_loss(img, txt, scale, pos, unk)
                if w_img:
                    loss = loss + w_img * same_model_loss(img, scale, same_model_relevance(blabels))
                (loss / accum).backward()
            if sync:
                if cfg["max_grad_norm"]:
                    torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], float(cfg["max_grad_norm"]))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
            step += 1
            lv = float(loss.detach())
            losses.append(lv)
            ep_losses.append(lv)
            if on_step:
                on_step(step, lv, sched.get_last_lr()[0])
        info = {"epoch": epoch + 1, "loss": float(np.mean(ep_losses)), "seconds": time.time() - t0,
                "lr": sched.get_last_lr()[0], "logit_scale": float(model.logit_scale.detach().exp())}
        if validate is not None:
            model.eval()
            info.update(validate(model))
        score = info.get(metric) if metric else None
        improved = score is not None and (best["score"] is None or score > best["score"] + min_delta)
        if improved:
            best = {"score": float(score), "epoch": epoch + 1,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            bad_epochs = 0
        elif score is not None:
            bad_epochs += 1
        if patience and bad_epochs >= patience:
            info["stopped"] = stopped = True
        history.append(info)
        if on_epoch:
            on_epoch(epoch + 1, info)
        if ckpt_dir and d.main:
            save_checkpoint(ckpt_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "epoch": epoch + 1, "step": step,
                                       "losses": losses, "history": history, "best": best, "bad_epochs": bad_epochs,
                                       "fingerprint": fp, "arch": architecture(model)})
        if d.world > 1:
            torch.distributed.barrier()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if cfg["grad_checkpointing"]:
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
