"""The hit confidence per query kind (`core.confidence.QUERY_KINDS`): `evaluate` fits text queries
and image queries apart, each with carsearch.evaluation.calibration's held-out protocol; the other
kinds (text + image, negatives, plate, sightings) get no fit, so they show no confidence.

Image queries (image -> image, the query itself never a hit): each labelled test image queries the
others; a hit matches when it is the same vehicle (`model_id`, else make + model) or has the same
`eval.calibration.image_match` attributes (colour and body type by default). Eval sets' images
query each other the same way. Car-less frames (`null_frames` street scenes drawn here: road, sky,
buildings, trees, no vehicle) query the test images too: none of their hits matches, so the fit
learns what a query with nothing to find looks like (source `null:street`, judged held out like
the others: its `confident_coverage` is the share of car-less hits marked confident).
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np

from carsearch.core.confidence import calibration_doc
from carsearch.core.schema import Calibration
from carsearch.evaluation.calibration import NULL_PREFIX, calibrate
from carsearch.sources.labels import model_key

FITTED = ("text", "image")  # the kinds evaluate fits; every other kind shows no confidence


def image_source(img: np.ndarray, labels: list[dict], match: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Image queries over one labelled set as (scores, rel): every image judged (a vehicle key or
    every `match` attribute labelled) queries the other judged images; -inf elsewhere."""
    keys = [model_key(lab) for lab in labels]
    attrs = [tuple(lab.get(a) for a in match) if match and all(lab.get(a) for a in match) else None for lab in labels]
    judged = np.array([k is not None or a is not None for k, a in zip(keys, attrs)])
    n = len(labels)
    rel = np.zeros((n, n), bool)
    for i in np.flatnonzero(judged):
        rel[i] = [
            (keys[i] is not None and keys[j] == keys[i]) or (attrs[i] is not None and attrs[j] == attrs[i])
            for j in range(n)
        ]
    s = np.asarray(img, np.float32) @ np.asarray(img, np.float32).T
    s = np.where(judged[None, :] & judged[:, None], s, -np.inf)
    np.fill_diagonal(s, -np.inf)
    np.fill_diagonal(rel, False)
    keep = judged
    return s[keep], rel[keep]


def null_source(null_img: np.ndarray, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Car-less frames querying the images: every hit is a non-match."""
    s = np.asarray(null_img, np.float32) @ np.asarray(img, np.float32).T
    return s, np.zeros(s.shape, bool)


def _shade(rgb, f):
    return tuple(max(0, min(255, int(c * f))) for c in rgb)


def _street(rng: random.Random, size: int):
    from PIL import Image, ImageDraw, ImageFilter

    S = size * 2
    img = Image.new("RGB", (S, S), _shade((150, 185, 220), rng.uniform(0.5, 1.15)))
    d = ImageDraw.Draw(img)
    horizon = int(S * rng.uniform(0.3, 0.6))
    kind = rng.random()
    ground = (95, 95, 100) if kind < 0.75 else (70, 120, 60)
    d.rectangle([0, horizon, S, S], fill=_shade(ground, rng.uniform(0.6, 1.25)))
    if kind < 0.75:  # a road with lane markings towards a vanishing point
        vx = S * rng.uniform(0.3, 0.7)
        for k in range(-rng.randint(1, 3), rng.randint(2, 4)):
            d.line(
                [(vx + k * S * 0.04, horizon), (vx + k * S * rng.uniform(0.3, 0.5), S)],
                fill=(230, 230, 215),
                width=max(2, S // 100),
            )
    for _ in range(rng.randint(0, 6)):  # buildings and trees along the road
        x = rng.uniform(0, S)
        w, h = S * rng.uniform(0.08, 0.3), S * rng.uniform(0.1, 0.45)
        if rng.random() < 0.5:
            d.rectangle([x, horizon - h, x + w, horizon + 2], fill=_shade((150, 130, 115), rng.uniform(0.5, 1.3)))
        else:
            d.ellipse([x, horizon - h, x + w, horizon + h * 0.2], fill=_shade((40, 100, 45), rng.uniform(0.6, 1.3)))
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    arr = np.asarray(img, np.float32) + np.random.default_rng(rng.getrandbits(32)).normal(
        0, rng.uniform(1, 8), (size, size, 3)
    )
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def null_frames(n: int, size: int = 224, seed: int = 0) -> list:
    """`n` car-less street frames (PIL RGB, `size` px), the same for a seed."""
    rng = random.Random(seed)
    return [_street(rng, size) for _ in range(n)]


def fit_kinds(
    text_sources: dict,
    img: np.ndarray,
    labels: list[dict],
    kept: dict,
    model: str,
    ccfg: Calibration,
    encode_image: Callable,
) -> tuple[dict, dict]:
    """(calibration document {"kinds": {kind: fit}}, report {"kinds": {kind: report}}) of one
    model: text queries from `text_sources`; image queries from the test split (`img`, `labels`),
    each eval set of this model (`kept`: {(set, model): (img, labels)}) and `ccfg.null_frames`
    car-less frames (`encode_image`: PIL images -> vectors)."""
    match = list(ccfg.image_match)
    image_sources = {"test_split": image_source(img, labels, match)}
    for (set_name, mname), (simg, slabels) in sorted(kept.items()):
        if mname == model:
            image_sources[f"set:{set_name}"] = image_source(simg, slabels, match)
    if int(ccfg.null_frames):
        image_sources[f"{NULL_PREFIX}street"] = null_source(encode_image(null_frames(int(ccfg.null_frames))), img)
    fits, reports = {}, {}
    for kind, sources in (("text", text_sources), ("image", image_sources)):
        fit, reports[kind] = calibrate(sources, ccfg)
        if fit:
            fits[kind] = fit
    return calibration_doc(fits), {"kinds": reports}


def report_lines(name: str, rep: dict) -> list[str]:
    """evaluate's lines for one model's calibration report (per kind, per source, held out)."""
    out = []
    for kind, r in (rep.get("kinds") or {}).items():
        if r.get("skipped"):
            out.append(
                f"evaluate[{name}, calibration, {kind}]: no fit ({r['skipped']}): {kind} queries show no confidence"
            )
            continue
        if r.get("held_out") and not r["target_reached"]:
            out.append(
                f"evaluate[{name}, calibration, {kind}]: NO {kind} hit will be marked confident: no confidence level "
                f"reached the precision target {r['target_precision']:g} over >= the minimum of held-out hits"
            )
        for src, h in r.get("held_out", {}).items():
            cp, rc = h["confident_precision"], h["confident_recall"]
            out.append(
                f"evaluate[{name}, calibration, {kind}, {src}]: held-out ECE {h['ece']:.3f}; confident (target precision "
                f"{r['target_precision']:g}, threshold chosen per fold) precision {'-' if cp is None else f'{cp:.3f}'}"
                f" coverage {h['confident_coverage']:.3f} recall {'-' if rc is None else f'{rc:.3f}'} "
                f"over {h['queries']} queries ({h['hits']} hits, {h['base_rate']:.2f} match)"
            )
    return out


def flat_metrics(name: str, rep: dict) -> dict[str, float]:
    """MLflow metrics of one model's calibration report: `<model>.calibration.<kind>.<source>.<figure>`."""
    flat = {}
    for kind, r in (rep.get("kinds") or {}).items():
        for src, h in r.get("held_out", {}).items():
            for k in ("ece", "confident_precision", "confident_coverage", "confident_recall"):
                if isinstance(h.get(k), (int, float)):
                    flat[f"{name}.calibration.{kind}.{src.replace(':', '.')}.{k}"] = h[k]
    return flat


def reliability_inputs(rep: dict) -> dict[str, dict]:
    """The reliability plot's lines: each kind's held-out sources ("text test_split", "image null:street", ...)."""
    return {
        f"{kind} {src}": h
        for kind, r in (rep.get("kinds") or {}).items()
        for src, h in r.get("held_out", {}).items()
        if src != "all"
    }
