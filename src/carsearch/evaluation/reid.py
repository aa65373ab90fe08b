"""Vehicle re-identification as the field measures it (VeRi-776), and plate search's first hit.

Re-ID on the split's rows with a ground-truth `identity`: each row is a query; its gallery is every
row at another camera (same-camera rows excluded: VeRi-776's rule); relevant = the same identity.
A query with no relevant row in its gallery is not counted. Per query: average precision over the
whole gallery and CMC (rank-k: a relevant row in the first k); reported as mAP, rank-1 and rank-5
with percentile bootstrap intervals over queries (`eval.bootstrap`), for each `core.sightings`
variant: `appearance` (the cosine of the model's vectors), `plate` (+ plate similarity where both
rows have a read plate: the captions' `plate`, OCR misreads included) and `network` (+ the camera
network's travel-time windows, learned from the train and val splits' identities). A fused variant
ranks by the linear score of a fit made without the query's identity (GroupKFold over identities),
so no query is ranked by a fit that saw it. The `network` fit on every query, with its threshold
(`eval.calibration`), is the sightings calibration build_index ships (kind "sightings").

Plate search: the split's read plates are the gallery (`core.plate_match.PlateMatcher`, the
index's matcher, `index.plate_search` settings); each identity whose plate was read is asked for with
0, 1 and 2 OCR-style errors (a look-alike swap, a dropped or an extra character) and with a `*`
wildcard; precision and recall of the first hit (the right identity first).
"""

from __future__ import annotations

import random

import numpy as np

from carsearch.core.confidence import linear
from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.plate_match import CONFUSIONS, PlateMatcher, normal
from carsearch.core.sightings import FEATURES, SIGNS, VARIANTS, Network, columns, learn_windows, pair_features
from carsearch.core.when import label_time
from carsearch.detection.motion import cameras
from carsearch.evaluation.calibration import fit, fit_with_threshold
from carsearch.evaluation.per_class import average_precision
from carsearch.evaluation.stats import bootstrap_ci, bootstrap_settings

KS = (1, 5)
FIT_TOP = 50  # a fusion is fitted on each query's top rows by appearance: what a sightings query sees
_LOOK = {a: b for p in CONFUSIONS for a, b in (p, p[::-1])}
_CHARS = "ABCDEFGHJKLMNPRTUVWXY0123456789"


def sighting(row: dict, tz: str = "UTC") -> dict:
    """A split row as a sighting: identity, camera, unix time, read plate (the caption's)."""
    lab = row.get("labels") or {}
    return {
        "identity": lab.get("identity"),
        "camera": row.get("camera") or lab.get("camera"),
        "time": label_time(row.get("time", lab.get("time")), tz),
        "plate": (row.get("attributes") or {}).get("plate"),
        "true_plate": lab.get("plate"),
    }


def network_from(rows: list[dict], cameras, tz: str = "UTC") -> Network:
    """The camera network learned from labelled rows (`cameras`: conf/cameras.yaml, typed)."""
    fixed = cameras.fixed_windows()
    if cameras.travel is None:
        return Network(fixed)
    t = cameras.travel
    seen = [(s["identity"], s["camera"], s["time"]) for s in map(lambda r: sighting(r, tz), rows)]
    return learn_windows(seen, t.margin_s, t.min_identities, t.coverage, fixed, t.max_pass_s)


def side_features(items: list[dict], network: Network, cost: float) -> np.ndarray:
    """[Q, G, F-1]: the features of every pair but appearance (the same under every model)."""
    zero = np.zeros(len(items))
    return np.stack([pair_features(zero, items[i], items, network, cost)[:, 1:] for i in range(len(items))])


def _pairs(img: np.ndarray, items: list[dict], side: np.ndarray):
    """(features [Q, G, F], relevant [Q, G], valid [Q, G]) of every query against every row."""
    cos = np.asarray(img, np.float64) @ np.asarray(img, np.float64).T
    feats = np.concatenate([cos[..., None], side], axis=2)
    ident = np.array([str(s["identity"]) for s in items])
    cams = np.array([str(s["camera"]) for s in items])
    rel = ident[:, None] == ident[None, :]
    valid = cams[:, None] != cams[None, :]  # the gallery of a query: the other cameras
    return feats, rel & valid, valid


def _top(feats: np.ndarray, valid: np.ndarray, n: int = FIT_TOP) -> np.ndarray:
    """[Q, G]: a query's `n` best gallery rows by appearance (the candidates a search returns)."""
    s = np.where(valid, feats[..., 0], -np.inf)
    rank = np.argsort(np.argsort(-s, axis=1, kind="stable"), axis=1, kind="stable")
    return valid & (rank < n)


def _ranked(scores: np.ndarray, rel: np.ndarray, valid: np.ndarray, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Per query: AP and rank-k hits over its gallery."""
    ap, hits = [], {k: [] for k in KS}
    for q in queries:
        s, r = scores[q][valid[q]], rel[q][valid[q]]
        ap.append(float(average_precision(s, r)[0]))
        first = int(np.argmax(r[np.argsort(-s, kind="stable")]))
        for k in KS:
            hits[k].append(float(first < k))
    return {"map": np.array(ap), **{f"rank{k}": np.array(v) for k, v in hits.items()}}


def _oof_scores(feats, rel, valid, queries, groups, variant: str, folds: int) -> np.ndarray:
    """Fused scores [Q, G] of a variant, each query's from a fit without its identity."""
    from sklearn.model_selection import GroupKFold

    cols = columns(variant)
    kw = {"features": VARIANTS[variant], "signs": {f: SIGNS[f] for f in VARIANTS[variant]}}
    scores = np.full(rel.shape, -np.inf)
    qs, top = np.asarray(queries), _top(feats, valid)
    for tr, te in GroupKFold(n_splits=min(folds, len(set(groups)))).split(qs, groups=groups):
        m = top[qs[tr]]
        calib = fit(feats[qs[tr]][m][:, cols], rel[qs[tr]][m].astype(np.float64), **kw)
        for q in qs[te]:
            scores[q] = linear(calib, feats[q][:, cols])
    return scores


def reid_report(img: np.ndarray, items: list[dict], side: np.ndarray, boot: dict, folds: int) -> dict:
    """{variant: {map, rank1, rank5 (+ _ci), queries, gallery}} (see the module doc); `side`: `_side`."""
    boot = bootstrap_settings(boot)
    feats, rel, valid = _pairs(img, items, side)
    queries = np.flatnonzero(rel.any(axis=1))
    if len(queries) < 2 or len({items[q]["identity"] for q in queries}) < 2:
        return {"skipped": f"{len(queries)} queries seen at another camera (need >= 2 identities)"}
    groups = np.array([str(items[q]["identity"]) for q in queries])
    out = {}
    for variant in VARIANTS:
        scores = (
            feats[..., 0]
            if variant == "appearance"
            else _oof_scores(feats, rel, valid, queries, groups, variant, folds)
        )
        per_q = _ranked(scores, rel, valid, queries)
        ci = bootstrap_ci(per_q, boot["n"], boot["seed"], boot["confidence"])
        out[variant] = {k: float(v.mean()) for k, v in per_q.items()} | {
            f"{k}_ci": [round(lo, 4), round(hi, 4)] for k, (lo, hi) in ci.items()
        }
        out[variant]["queries"] = int(len(queries))
    out["gallery"] = int(len(items))
    out["identities"] = int(len(set(groups)))
    return out


def sightings_fit(img, items: list[dict], side, network: Network, cost: float, ccfg: dict) -> dict | None:
    """The sightings calibration (all `FEATURES`, threshold for `ccfg["target_precision"]`, and the
    network it was fitted with), from every query's gallery; None without queries."""
    feats, rel, valid = _pairs(img, items, side)
    queries = np.flatnonzero(rel.any(axis=1))
    if len(queries) < 2:
        return None
    top = _top(feats, valid)
    x = np.concatenate([feats[q][top[q]] for q in queries])
    y = np.concatenate([rel[q][top[q]] for q in queries]).astype(np.float64)
    g = np.concatenate([np.full(int(top[q].sum()), str(items[q]["identity"])) for q in queries])
    calib = fit_with_threshold(x, y, g, dict(ccfg), features=FEATURES, signs=SIGNS)
    return {**calib, "windows": network.as_dict(), "confusion_cost": cost}


def _garble(plate: str, n: int, rng: random.Random) -> str:
    """`plate` with `n` OCR-style errors at distinct places (a look-alike swap where the character
    has one, else another character; a dropped or an extra character)."""
    chars = list(plate)
    for i in sorted(rng.sample(range(len(chars)), min(n, len(chars))), reverse=True):
        kind = rng.random()
        if kind < 0.6:
            chars[i] = _LOOK.get(chars[i]) or rng.choice([c for c in _CHARS if c != chars[i]])
        elif kind < 0.8 and len(chars) > 3:
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def plate_report(items: list[dict], settings, seed: int) -> dict:
    """{errors: {queries, precision, recall}} of plate search's first hit (see the module doc)."""
    gallery = [(normal(s["plate"]), s["identity"]) for s in items if s.get("plate") and s.get("identity")]
    if not gallery:
        return {"skipped": "no read plate in the split"}
    owner: dict[str, str] = {}
    for p, ident in gallery:
        owner.setdefault(p, ident)
    matcher = PlateMatcher([p for p, _ in gallery], settings.max_distance, settings.confusion_cost)
    truth = sorted({(normal(s["true_plate"]), s["identity"]) for s in items if s.get("plate") and s.get("true_plate")})
    rng = random.Random(seed)
    asks = {
        "errors_0": lambda p: p,
        "errors_1": lambda p: _garble(p, 1, rng),
        "errors_2": lambda p: _garble(p, 2, rng),
        "wildcard": lambda p: p[:3] + "*" + p[-2:],
    }
    out = {}
    for name, make in asks.items():
        answered = right = 0
        for plate, ident in truth:
            found = matcher.match(make(plate))
            if found:
                answered += 1
                right += owner.get(normal(next(iter(found))), None) == ident
        out[name] = {
            "queries": len(truth),
            "precision": right / answered if answered else 0.0,
            "recall": right / len(truth) if truth else 0.0,
        }
    out["gallery_plates"] = len(owner)
    return out


def reid_section(rows: list[dict], imgs: dict, results: dict, calibs: dict, cfg, root, log, cams=None) -> None:
    """evaluate's part: `results[model]["reid"]` per model, `results["plates"]`, and the sightings
    fit into each model's calibration document (`calibs[model]["kinds"]["sightings"]`); `cams`:
    the typed conf/cameras.yaml (default: the repo's)."""
    tz = cfg.data.capture.timezone
    keep = [i for i, r in enumerate(rows) if (r.get("labels") or {}).get("identity")]
    if len(keep) < 2:
        log("evaluate: re-ID skipped: the split has no identity labels")
        return
    items = [sighting(rows[i], tz) for i in keep]
    pairs_dir = resolve(cfg.paths.pairs_dir, root)
    labelled = [
        r
        for s in ("train", "val")
        if (pairs_dir / f"{s}.jsonl").is_file()
        for r in read_jsonl(pairs_dir / f"{s}.jsonl")
    ]
    network = network_from(labelled, cams if cams is not None else cameras(root), tz)
    ps, ccfg = cfg.index.plate_search, cfg.eval.calibration
    ccfg = ccfg.model_dump() if hasattr(ccfg, "model_dump") else dict(ccfg)
    boot = cfg.eval.bootstrap
    boot = boot.model_dump() if hasattr(boot, "model_dump") else dict(boot)
    side = side_features(items, network, ps.confusion_cost)
    for name, img in imgs.items():
        img = np.asarray(img)[keep]
        results[name]["reid"] = rep = reid_report(img, items, side, boot, int(ccfg["folds"]))
        for v in VARIANTS:
            if v in rep:
                r = rep[v]
                log(
                    f"evaluate[{name}, re-ID {v}]: mAP {r['map']:.3f} {r['map_ci']} rank-1 {r['rank1']:.3f} "
                    f"{r['rank1_ci']} rank-5 {r['rank5']:.3f} ({r['queries']} queries)"
                )
        sf = sightings_fit(img, items, side, network, ps.confusion_cost, ccfg)
        if sf is not None and isinstance(calibs.get(name), dict):
            calibs[name].setdefault("kinds", {})["sightings"] = sf
    results["plates"] = plate_report(items, ps, boot["seed"])
    results["network"] = {"windows": network.as_dict()}
