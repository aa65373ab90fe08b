"""What `evaluate` adds for the promotion gate and the hit confidence:
- the calibration of each model per query kind (carsearch.evaluation.kinds): text queries of the
  test split (every combination of the attributes) and every eval set's, image queries of both and
  car-less frames;
- WiSE-FT candidates (carsearch.model.wiseft) at `index.wise_ft.alphas`: each scored like the
  base and fine-tuned models (test split, every eval set) and calibrated, so the gate
  (stages/build_index) can index the best one on its deciding set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from carsearch.core.schema import Calibration, Eval, WiseFT
from carsearch.evaluation.calibration import set_source, split_source
from carsearch.evaluation.evalsets import Limits, evaluate_sets
from carsearch.evaluation.kinds import fit_kinds
from carsearch.evaluation.protocol import attribute_queries, combos_for, embed_texts, full_report, labelled_for
from carsearch.model.wiseft import candidate_name, interpolate


def model_calibration(
    name: str,
    img: np.ndarray,
    q: dict,
    labels: list[dict],
    attrs,
    kept: dict,
    set_attrs,
    ccfg: Calibration,
    encode_text,
    encode_image: Callable,
) -> tuple[dict, dict]:
    """(calibration document, report), per query kind, of one model from its test-split queries
    (`q`: full_report's query data), its eval-set embeddings (`kept`: {(set, model): (img,
    labels)}) and car-less frames (`encode_image`: PIL images -> vectors)."""
    # every combination of the attributes ("a red car", "a red sedan", "a red sedan seen from the
    # front"): queries as specific as users type, from ~1 in 8 images relevant down to 1 in 200
    parts = [split_source(img, q["txt"], q["rel"], labelled_for(labels, attrs))]
    for combo in combos_for(attrs)[:-1]:
        texts, rel = attribute_queries(labels, combo)
        if texts:
            parts.append(split_source(img, encode_text(texts), rel, labelled_for(labels, combo)))
    sources = {"test_split": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))}
    for (set_name, mname), (simg, slabels) in sorted(kept.items()):
        if mname == name:
            sources[f"set:{set_name}"] = set_source(simg, slabels, encode_text, set_attrs)
    return fit_kinds(sources, img, labels, kept, name, ccfg, encode_image)


def wise_ft_alphas(w: WiseFT, model_kind: str) -> list[float]:
    """The interpolations of `index.wise_ft` to score for a `model.kind` (alpha strictly between 0
    and 1: 0 and 1 are base and fine-tuned)."""
    if w.only_pretrained and model_kind != "pretrained":
        return []
    return sorted({a for a in w.alphas if 0.0 < a < 1.0})


def wise_ft_candidates(
    models: dict,
    paths: list[Path],
    labels: list[dict],
    cfg: Eval,
    alphas: list[float],
    limits: Limits,
    root: Path,
    trained: dict,
    encode_images: Callable,
    log=print,
) -> tuple[dict, dict, dict, dict]:
    """Score every WiSE-FT alpha (`wise_ft_alphas`): (figures {candidate: {text_to_image,
    image_to_image}}, set reports {set: {candidate: report}}, calibrations {candidate: calib},
    calibration reports). `limits`: the eval sets' (data.max_pixels, data.max_edge)."""
    (base, proc), (ft, _) = models["base"], models["finetuned"]
    figures, sets, calibs, creports = {}, {}, {}, {}
    for a in alphas:
        name = candidate_name(a)
        model = interpolate(base, ft, a)
        enc_t = lambda t, m_=model: embed_texts(m_, proc, t)  # noqa: E731
        img = encode_images(model, proc, paths)
        m, _, q = full_report(img, labels, enc_t, cfg.model_copy(update={"by_combo": False, "zero_shot": []}))
        figures[name] = {"alpha": a, **{d: m[d] for d in ("text_to_image", "image_to_image")}}
        kept: dict = {}
        if cfg.sets:
            rep = evaluate_sets(
                list(cfg.sets),
                root,
                {name: (model, proc)},
                {name: (lambda ps, m_=model: encode_images(m_, proc, ps), enc_t)},
                trained,
                cfg,
                limits,
                log=lambda *_: None,
                keep=kept,
            )
            for s, r in rep.items():
                sets.setdefault(s, {})[name] = r[name]
        calibs[name], creports[name] = model_calibration(
            name,
            img,
            q,
            labels,
            m["attributes"],
            kept,
            list(cfg.set_attributes),
            cfg.calibration,
            enc_t,
            lambda ims, m_=model: encode_images(m_, proc, ims),
        )
        key = f"precision@{cfg.set_k}"
        log(
            f"evaluate[{name}]: text->image R@5 {m['text_to_image'].get('recall@5', 0):.3f}"
            + "".join(f" | set {s} P@{cfg.set_k} {sets[s][name]['text_to_image'][key]:.3f}" for s in sets)
        )
    return figures, sets, calibs, creports
