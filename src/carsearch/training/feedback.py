"""The judgment term of fine-tuning (issue 34, `train.feedback_weight`): for a few judged queries
per step (`train.feedback_queries_per_step`), each query's text is pulled towards its ✓ hits
(extra positives) and pushed from its ✗ hits (hard negatives) and from the other queries' hits
(in-batch negatives), over a few of each query's judged images drawn per step
(`train.feedback_images_per_query`): multi-positive InfoNCE, text to image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carsearch.core.schema import EvalSet, Train
from carsearch.feedback.pairs import training_groups
from carsearch.model.clip import pixel_tensor


class FeedbackTerm:
    """The judgment term: `queries` judged queries per step (they cycle in a fixed order), each with
    up to `images` of its judged images (about half ✓, the rest ✗, drawn from a generator seeded by
    (seed, step)), so a step costs a few images more, not every judged crop."""

    def __init__(self, groups: list[dict], processor, weight: float, queries: int, images: int, seed: int):
        self.weight, self.per_step, self.images, self.seed = float(weight), int(queries), int(images), int(seed)
        files = sorted({f for g in groups for f in g["pos"] + g["neg"]})
        at = {f: i for i, f in enumerate(files)}
        self.pix = pixel_tensor(processor, files)
        self.groups = [([at[f] for f in g["pos"]], [at[f] for f in g["neg"]]) for g in groups]
        self.tok = processor.tokenizer([g["text"] for g in groups], padding=True, truncation=True, return_tensors="pt")

    def draw(self, q: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
        """(✓, ✗) images of query `q` for one step: at most `images`, at least one ✓, ✗ filling the rest."""
        pos, neg = self.groups[q]
        n_pos = min(len(pos), max(1, self.images - min(len(neg), self.images // 2)))
        n_neg = min(len(neg), self.images - n_pos)
        pick = lambda xs, k: [xs[i] for i in torch.randperm(len(xs), generator=gen)[:k].tolist()]  # noqa: E731
        return pick(pos, n_pos), pick(neg, n_neg)

    def embed(self, model, qs: list[int], imgs: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised embeddings of judged images `imgs` and query texts `qs` (indices)."""
        img = model.get_image_features(pixel_values=self.pix[imgs].to(device))
        txt = model.get_text_features(
            input_ids=self.tok["input_ids"][qs].to(device), attention_mask=self.tok["attention_mask"][qs].to(device)
        )
        img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
        return F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)

    def __call__(self, model, step: int, device) -> torch.Tensor:
        """weight x the loss of the step's judged queries over their drawn images (and each other's)."""
        n = len(self.groups)
        qs = [(step * self.per_step + i) % n for i in range(min(self.per_step, n))]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        drawn = [self.draw(q, gen) for q in qs]
        imgs = sorted({i for ps, ns in drawn for i in ps + ns})
        col = {i: c for c, i in enumerate(imgs)}
        img, txt = self.embed(model, qs, imgs, device)
        logits = model.logit_scale.exp().clamp(max=100) * txt @ img.t()
        pos = torch.zeros_like(logits)
        for r, q in enumerate(qs):
            for i in self.groups[q][0]:  # every ✓ of the query that was drawn for any query
                if i in col:
                    pos[r, col[i]] = 1.0
        loss = -(F.log_softmax(logits, 1) * (pos / pos.sum(1, keepdim=True))).sum(1).mean()
        return self.weight * loss


def feedback_term(path, root, sets: list[EvalSet], processor, cfg: Train, world: int = 1, log=print):
    """(the term to add to train_clip's loss or None, the record for metrics/train.json): the
    judged queries kept for training (carsearch.feedback.pairs), `cfg.feedback_*` settings. None
    when the weight is 0, no query is left, or training runs on several processes (the term is
    single-process)."""
    groups, record = training_groups(path, root, sets, log)
    weight = float(cfg.feedback_weight)
    record["weight"] = weight
    use = bool(groups) and weight > 0 and world == 1
    if groups and world > 1:
        log(f"finetune_clip: note: the judgments are not used with {world} processes (single-process term)")
    record["used"] = use
    if not use:
        return None, record
    term = FeedbackTerm(
        groups, processor, weight, cfg.feedback_queries_per_step, cfg.feedback_images_per_query, cfg.seed
    )
    return term, record
