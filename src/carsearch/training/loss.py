"""The contrastive losses: multi-positive InfoNCE over image/text pairs, the same-model
image/image term (`train.loss`, `train.image_loss_weight`), the vehicle identity term
(`train.identity_loss_weight`) and the class-prompt term (`train.prompt_loss_weight`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_positive_loss(
    img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, pos: torch.Tensor, ignore: torch.Tensor | None = None
) -> torch.Tensor:
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


class IdentityLoss(nn.Module):
    """Vehicle re-identification, as open_clip's `loss.py` writes a loss (a module: features and
    logit scale in, a scalar out). Image-image InfoNCE with several positives (SupCon): for each
    image, the other images of the same vehicle `identity` seen by another `camera` are positives;
    every other image of the batch is a negative, the stranger of the same body type and colour
    included (the attribute losses call those two the same; this one tells them apart). Images of
    the same identity at the same camera (near repeats) are left out of the softmax. 0 when no image
    in the batch has a positive."""

    def forward(self, img: torch.Tensor, logit_scale: torch.Tensor, labels: list[dict]) -> torch.Tensor:
        pos, ignore = identity_masks(labels)
        pos, ignore = pos.to(img.device), ignore.to(img.device)
        has = pos.any(1)
        if not bool(has.any()):
            return img.sum() * 0.0
        logits = (logit_scale * img @ img.t()).masked_fill(ignore, float("-inf"))
        logp = F.log_softmax(logits, 1)
        per_row = -logp.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1)
        return per_row[has].mean()


def identity_masks(labels: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, ignore) [N, N]: pos[i, j] = same identity, another camera (a missing camera counts as
    another); ignore[i, j] = i itself, or the same identity at the same camera."""
    n = len(labels)
    ident = [lab.get("identity") for lab in labels]
    cam = [lab.get("camera") for lab in labels]
    pos = torch.zeros(n, n, dtype=torch.bool)
    ignore = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if i != j and ident[i] and ident[i] == ident[j]:
                same_cam = cam[i] is not None and cam[i] == cam[j]
                ignore[i, j] = same_cam
                pos[i, j] = not same_cam
    return pos, ignore


def prompt_class_loss(
    img: torch.Tensor, prompts: torch.Tensor, scale: torch.Tensor, targets: dict[str, tuple[slice, torch.Tensor]]
) -> torch.Tensor:
    """Image-label contrast over class prompts (UniCL's image-label term): per attribute, each image
    against every value's prompt ("a sedan", "a hatchback", ...; rows `slice` of `prompts`), cross-
    entropy to its own value (`targets`: the value's index per image, -1 where unlabelled). Every
    class is in every step's softmax, so the rare body types and colours get a gradient in each
    batch, as zero-shot classification asks. Mean over the attributes with a labelled image; 0 if none."""
    terms = []
    for rows, target in targets.values():
        target = target.to(img.device)
        keep = target >= 0
        if bool(keep.any()):
            logits = scale * img[keep] @ prompts[rows].t()
            terms.append(F.cross_entropy(logits, target[keep]))
    return torch.stack(terms).mean() if terms else img.sum() * 0.0
