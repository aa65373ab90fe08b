"""What one optimizer step sees: the batches of an epoch (shuffled, or with each vehicle identity's
images side by side for the identity loss), the texts drawn per image, and the label-preserving
image augmentation; the train split prepared once (`TrainData`). Every draw comes from a generator seeded by the caller from (seed, epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from carsearch.model.clip import pixel_tensor
from carsearch.training.texts import class_prompts, text_variants


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


def identity_order(perm: torch.Tensor, identities: list[str | None]) -> torch.Tensor:
    """`perm` reordered so that each image is followed by one more image of its vehicle identity
    (the first unused one in `perm` order), so that a batch holds positives for the identity loss.
    Images without an identity, or whose identity has no image left, stand alone."""
    by_id: dict[str, list[int]] = {}
    for i in perm.tolist():
        if identities[i]:
            by_id.setdefault(identities[i], []).append(i)
    used, out = set(), []
    for i in perm.tolist():
        if i in used:
            continue
        used.add(i)
        out.append(i)
        partner = next((j for j in by_id.get(identities[i] or "", []) if j not in used), None)
        if partner is not None:
            used.add(partner)
            out.append(partner)
    return torch.tensor(out, dtype=torch.long)


def epoch_batches(
    n: int, bs: int, world: int, gen: torch.Generator, identities: list[str | None] | None = None
) -> list[torch.Tensor]:
    """The epoch's batches of indices: a shuffle (`identities`: paired by identity) cut into `bs`;
    never a batch of one; with several processes, equal local batches (a multiple of `world`)."""
    perm = torch.randperm(n, generator=gen)
    if identities is not None:
        perm = identity_order(perm, identities)
    out = [perm[i : i + bs] for i in range(0, n, bs)]
    if len(out) > 1 and len(out[-1]) < max(2, world * 2 if world > 1 else 2):
        out[-2] = torch.cat([out[-2], out.pop()])  # never a batch of one
    if world > 1:  # equal local batches for all_gather: trim to a multiple of world
        out = [b[: len(b) - len(b) % world] for b in out]
    return [b for b in out if len(b) >= 2]


def draw_texts(variants: list[list[tuple[str, dict]]], k: int, gen: torch.Generator) -> list[list[tuple[str, dict]]]:
    """Per image, `k` variants, distinct while it has that many (then repeated in turn): the first
    is drawn as with k = 1 (one draw per image, in order), so k = 1 is the single-text draw exactly."""
    first = [int(torch.randint(len(vs), (1,), generator=gen)) for vs in variants]
    if k <= 1:
        return [[vs[f]] for vs, f in zip(variants, first)]
    out = []
    for vs, f in zip(variants, first):
        order = [f] + [j for j in torch.randperm(len(vs), generator=gen).tolist() if j != f]
        out.append([vs[order[m % len(order)]] for m in range(k)])
    return out


@dataclass
class TrainData:
    """The train split prepared once: pixels, labels, text variants and their tokens."""

    pix: torch.Tensor
    labels: list[dict]
    variants: list[list[tuple[str, dict]]]
    ids: torch.Tensor  # [texts, max_len] token ids of the distinct texts
    mask: torch.Tensor
    tid: dict[str, int]
    prompts: list[str]  # the class prompts of the split's attribute values (training.texts.class_prompts)
    prompt_targets: dict[str, tuple[slice, torch.Tensor]]  # attribute -> (its rows of prompts, value index per image)

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask of `texts`, cut to the longest of them (padding is masked anyway)."""
        t = torch.tensor([self.tid[x] for x in texts])
        ids, mask = self.ids[t], self.mask[t]
        width = max(1, int(mask.sum(1).max()))
        return ids[:, :width], mask[:, :width]


def prepare_data(processor, pairs: list[dict], root: Path, mode: str) -> TrainData:
    pix = pixel_tensor(processor, [root / p["path"] for p in pairs])
    labels = [dict(p.get("labels") or p.get("attributes") or {}) for p in pairs]
    variants = [text_variants(p, mode) for p in pairs]
    prompts, targets = class_prompts(labels)
    uniq = sorted({t for vs in variants for t, _ in vs} | set(prompts))
    tok = processor.tokenizer(uniq, padding=True, truncation=True, return_tensors="pt")
    tid = {t: i for i, t in enumerate(uniq)}
    return TrainData(pix, labels, variants, tok["input_ids"], tok["attention_mask"], tid, prompts, targets)
