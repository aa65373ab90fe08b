"""Resumable training: the checkpoint file, the architecture it was written for (a mismatch is one
line naming both), and the fingerprint that says whether a checkpoint belongs to this run. Training
resumes only a checkpoint of this very run; any other is moved aside (one line), never a hard stop,
and a finished training removes its checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carsearch.core.schema import Train
from carsearch.model.clip import ModelConfigError


def architecture(model) -> dict:
    c = model.config
    return {
        "vision": {
            k: getattr(c.vision_config, k) for k in ("hidden_size", "num_hidden_layers", "patch_size", "image_size")
        },
        "text": {k: getattr(c.text_config, k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        "projection_dim": c.projection_dim,
    }


def fingerprint(cfg: Train, model, train_pairs: list[dict], world: int) -> str:
    keep = {
        k: v
        for k, v in cfg.as_dict().items()
        if k not in {"checkpoint_dir", "resume", "log_every", "num_workers", "nproc_per_node"}
        and not (k == "ema" and v is None)  # off: the same fingerprint as before the key existed
    }
    blob = json.dumps(
        {
            "cfg": keep,
            "arch": architecture(model),
            "world": world,
            "data": [p.get("id", p["path"]) for p in train_pairs],
        },
        sort_keys=True,
        default=str,
    )
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
        raise ModelConfigError(
            f"checkpoint {path} is for another architecture ({arch_str(got)}), the configured model is {arch_str(want)}"
        )
    own = model.state_dict()
    bad = [k for k, v in state["model"].items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state["model"]]
    if bad or missing:
        raise ModelConfigError(
            f"checkpoint {path} does not fit the configured model "
            f"({len(bad)} mismatched, {len(missing)} missing tensors, e.g. {(bad + missing)[0]})"
        )
    return state


def resume_state(ckpt_dir: Path, model, fp: str, main: bool = True) -> dict | None:
    """The checkpoint in `ckpt_dir` if it is this run's (same architecture, params and data: `fp`),
    else None. One that is not (another architecture or run, or no checkpoint at all) is moved aside
    to `last.pt.mismatch-<time>` with one line, and training starts fresh (on the main rank; the
    other ranks come to the same answer and leave the file alone)."""
    path = ckpt_dir / CKPT
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path, model)
        why = None if state.get("fingerprint") == fp else f"checkpoint {path} is for other params/data"
    except ModelConfigError as e:
        state, why = None, str(e)
    if why is None:
        return state
    if main:
        aside = path.with_name(f"{CKPT}.mismatch-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{CKPT}.mismatch-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        os.replace(path, aside)
        print(f"train: {why}; moved aside to {aside.name}, training from scratch", file=sys.stderr)
    return None


def remove_checkpoint(ckpt_dir: Path) -> None:
    """A finished training: nothing to resume (the folder goes too once empty; moved-aside files stay)."""
    (ckpt_dir / CKPT).unlink(missing_ok=True)
    try:
        ckpt_dir.rmdir()
    except OSError:
        pass


def arch_str(a: dict) -> str:
    v, t = a.get("vision", {}), a.get("text", {})
    return (
        f"vision {v.get('num_hidden_layers')}x{v.get('hidden_size')} @{v.get('image_size')}px, "
        f"text {t.get('num_hidden_layers')}x{t.get('hidden_size')}, dim {a.get('projection_dim')}"
    )


@dataclass
class TrainState:
    """What a checkpoint carries besides the weights, optimizer, schedule and EMA."""

    epoch: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": None, "epoch": 0, "state": None})
    bad_epochs: int = 0

    def payload(self, model, opt, sched, ema, fp: str) -> dict:
        """The checkpoint of this state (`save_checkpoint`)."""
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "losses": self.losses,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "fingerprint": fp,
            "ema": ema.state_dict(),
            "arch": architecture(model),
        }

    @classmethod
    def of(cls, state: dict) -> "TrainState":
        """The state of a loaded checkpoint (`resume_state`)."""
        keys = ("epoch", "step", "losses", "history", "best", "bad_epochs")
        return cls(*(state[k] for k in keys))
