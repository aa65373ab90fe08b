"""WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): the weights
(1 - alpha) * base + alpha * fine-tuned. alpha = 0 is the base model, 1 the fine-tuned one; in
between often keeps most of the fine-tuning gain while losing less of the base model's transfer
to other images (here: renders -> real photos). Meaningful when the base is pretrained."""

from __future__ import annotations

import copy

import torch

from carsearch.model.clip import load_clip, load_pretrained, save_clip


def interpolate(base, finetuned, alpha: float):
    """A new model with the interpolated weights (the inputs are left untouched). Floating-point
    tensors are interpolated; integer buffers (position ids) are the fine-tuned model's."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"index.wise_ft.alphas: {alpha!r} is not in [0, 1]")
    sb, sf = base.state_dict(), finetuned.state_dict()
    if sb.keys() != sf.keys() or any(sb[k].shape != sf[k].shape for k in sf):
        raise ValueError("WiSE-FT: the base and the fine-tuned model have different architectures")
    out = copy.deepcopy(finetuned)
    with torch.no_grad():
        mixed = {
            k: (sb[k].to(v.dtype) * (1.0 - a) + v * a)
            if v.is_floating_point() and 0.0 < a < 1.0
            else (sb[k].clone() if a == 0.0 and v.is_floating_point() else v.clone())
            for k, v in sf.items()
        }
        out.load_state_dict(mixed)
    out.eval()
    return out


def candidate_name(alpha: float) -> str:
    return f"wise_ft_{float(alpha):g}"


def save_interpolated(base_spec: dict, seed: int, finetuned_dir, alpha: float, out_dir) -> None:
    """The WiSE-FT model at `alpha` of the configured base and the fine-tuned folder, saved to `out_dir`."""
    base, processor = load_clip(base_spec, seed=seed)
    ft, _ = load_pretrained(finetuned_dir)
    save_clip(interpolate(base, ft, alpha), processor, out_dir)
