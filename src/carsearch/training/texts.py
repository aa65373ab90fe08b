"""Texts a pair is trained on: its caption and the attribute queries its labels support
(`train.texts`), with the positive and unknown masks that make the contrastive loss multi-positive."""

from __future__ import annotations

import itertools

import torch

from carsearch.core.vocab import known, query_text

QUERY_ATTRS = ("color", "body_type", "view")


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


def positives(labels: list[dict], constraints: list[dict], owners: list[int] | None = None) -> torch.Tensor:
    """pos[i, j]: text j's constraints all hold for image i, or image i is text j's own (`owners[j]`;
    default text j is image j's: the diagonal)."""
    n = len(labels)
    pos = torch.zeros(n, len(constraints), dtype=torch.bool)
    for j, c in enumerate(constraints):
        for i, lab in enumerate(labels):
            pos[i, j] = bool(c) and all(lab.get(k) == v for k, v in c.items())
    own = list(range(n)) if owners is None else owners
    pos[torch.tensor(own, dtype=torch.long), torch.arange(len(own))] = True
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


def class_prompts(labels: list[dict]) -> tuple[list[str], dict[str, tuple[slice, torch.Tensor]]]:
    """The class prompts of a split (per `QUERY_ATTRS` attribute with two or more values among
    `labels`, one prompt per value, as zero-shot evaluation words it: "a sedan", "a red car") and,
    per attribute, (its rows of the prompts, each image's value index or -1 where unlabelled)."""
    prompts: list[str] = []
    targets = {}
    for a in QUERY_ATTRS:
        said = [known(lab).get(a) for lab in labels]
        values = sorted({str(v) for v in said if v is not None})
        if len(values) < 2:
            continue
        at = {v: k for k, v in enumerate(values)}
        rows = slice(len(prompts), len(prompts) + len(values))
        prompts += [query_text(**{a: v}) for v in values]
        targets[a] = (rows, torch.tensor([at.get(str(v), -1) for v in said], dtype=torch.long))
    return prompts, targets
