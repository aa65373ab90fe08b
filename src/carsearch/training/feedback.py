"""The judgment term of fine-tuning (issue 34, `train.feedback_weight`): for a few judged queries
per step, each query's text is pulled towards its ✓ hits (extra positives) and pushed from its ✗
hits (hard negatives) and from the other queries' hits (in-batch negatives): multi-positive
InfoNCE over the judged images, text to image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carsearch.core.schema import EvalSet
from carsearch.feedback.pairs import training_groups
from carsearch.model.clip import pixel_tensor


class FeedbackTerm:
    def __init__(self, groups: list[dict], processor, weight: float, per_step: int = 8):
        self.weight, self.per_step = float(weight), max(1, int(per_step))
        files = sorted({f for g in groups for f in g["pos"] + g["neg"]})
        at = {f: i for i, f in enumerate(files)}
        self.pix = pixel_tensor(processor, files)
        self.groups = [([at[f] for f in g["pos"]], [at[f] for f in g["neg"]]) for g in groups]
        self.tok = processor.tokenizer([g["text"] for g in groups], padding=True, truncation=True, return_tensors="pt")

    def embed(self, model, qs: list[int], imgs: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised embeddings of judged images `imgs` and query texts `qs` (indices)."""
        img = model.get_image_features(pixel_values=self.pix[imgs].to(device))
        txt = model.get_text_features(
            input_ids=self.tok["input_ids"][qs].to(device), attention_mask=self.tok["attention_mask"][qs].to(device)
        )
        img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
        return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)

    def __call__(self, model, step: int, device) -> torch.Tensor:
        """weight x the loss of the step's judged queries (they cycle in a fixed order)."""
        n = len(self.groups)
        qs = [(step * self.per_step + i) % n for i in range(min(self.per_step, n))]
        imgs = sorted({i for q in qs for i in self.groups[q][0] + self.groups[q][1]})
        col = {i: c for c, i in enumerate(imgs)}
        img, txt = self.embed(model, qs, imgs, device)
        logits = model.logit_scale.exp().clamp(max=100) * txt @ img.t()
        pos = torch.zeros_like(logits)
        for r, q in enumerate(qs):
            for i in self.groups[q][0]:
                pos[r, col[i]] = 1.0
        loss = -(F.log_softmax(logits, 1) * (pos / pos.sum(1, keepdim=True))).sum(1).mean()
        return self.weight * loss


def feedback_term(path, root, sets: list[EvalSet], processor, weight: float, world: int = 1, log=print):
    """(the term to add to train_clip's loss or None, the record for metrics/train.json): the
    judged queries kept for training (carsearch.feedback.pairs). None when the weight is 0, no
    query is left, or training runs on several processes (the term is single-process)."""
    groups, record = training_groups(path, root, sets, log)
    record["weight"] = float(weight)
    use = bool(groups) and float(weight) > 0 and world == 1
    if groups and world > 1:
        log(f"finetune_clip: note: the judgments are not used with {world} processes (single-process term)")
    record["used"] = use
    return (FeedbackTerm(groups, processor, weight) if use else None), record
