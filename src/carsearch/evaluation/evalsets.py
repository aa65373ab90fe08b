"""Labelled evaluation sets of the user's own photos: never trained on, never captioned.

A set is a folder or S3 prefix labelled like a data source (labels.csv and/or sub-folder names;
partial labels are fine), read with ingest's reader (same normalisation, same content ids). Per set
and model, what the labels support:
- text->image, per attribute present: one query per value in several phrasings ("a red car",
  "a photo of a red car", ...); precision@k = share of the top k (among images labelled for that
  attribute) that have the value; reported per phrasing, per value, and averaged (the phrasing
  swing is large, so no single template decides);
- image->image, per attribute: each labelled image queries the others; precision@k = share of
  the top k with the same value.
`text_to_image.precision@k` / `image_to_image.precision@k` are the means over attributes: the
headline numbers a promotion gate can use (`index.promote.set`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from carsearch.core.errors import CarsearchError
from carsearch.core.paths import resolve
from carsearch.core.schema import Eval, EvalSet
from carsearch.core.vocab import known
from carsearch.curation import corpus
from carsearch.evaluation.judged import judged_report
from carsearch.evaluation.plots import results_grid_png
from carsearch.evaluation.protocol import embed_pixels, embed_texts
from carsearch.model.clip import load_images
from carsearch.sources import files as data

PHRASINGS = {
    "color": ("a {v} car", "a photo of a {v} car", "{v}"),
    "body_type": ("a {v}", "a photo of a {v}", "a {v} on the road"),
    "view": ("a car seen from the {v}", "a photo of the {v} of a car", "{v} view of a car"),
    "make": ("a {v} car", "a photo of a {v}", "{v}"),
}


class EvalSetError(CarsearchError, ValueError):
    pass


Limits = tuple[Optional[int], Optional[int]]  # (data.max_pixels, data.max_edge): what ingest applies


def load_set(spec: EvalSet, root: Path, work: Path, limits: Limits) -> tuple[list[dict], list[dict]]:
    """(rows {id, path, labels, origin}, rejects) of one set, images normalised into `work` with
    ingest's checks and `limits`."""
    name, kind, path = spec.name, spec.source, spec.path  # validated, filled from eval.set_defaults

    where = str(path) if kind == "s3" else str(resolve(path, root))
    if kind == "folder" and not Path(where).is_dir():
        raise EvalSetError(f"eval.sets[{name}].path: folder not found: {where}")
    items = corpus.source_items(kind, where, spec)
    rows, rejects = data.ingest_items(items, work / name, work, f"evalset:{name}", *limits)
    out = [
        {"id": r["id"], "path": str(work / r["path"]), "labels": known(r.get("labels")), "origin": r.get("origin")}
        for r in rows
    ]
    return out, [{"path": x.path, "reason": x.reason} for x in rejects]


def check_overlap(name: str, rows: list[dict], trained: dict[str, str]) -> None:
    """Fail (one line) when an image of the set is also a training pair (same content id)."""
    both = [r for r in rows if r["id"] in trained]
    if both:
        ex = both[0]
        raise EvalSetError(
            f"eval set {name!r}: {len(both)} image(s) are also in the training pairs "
            f"(e.g. {ex['origin']} = {trained[ex['id']]}); an eval set must be held out"
        )


def _precision_at(scores: np.ndarray, hit: np.ndarray, k: int) -> np.ndarray:
    """Per query: share of the top k (scores -inf = not in the gallery) that are hits."""
    out = []
    for s, h in zip(scores, hit):
        gallery = np.isfinite(s)
        kk = min(k, int(gallery.sum()))
        if kk == 0:
            out.append(np.nan)
            continue
        top = np.argsort(-s, kind="stable")[:kk]
        out.append(float(h[top].mean()))
    return np.array(out)


def set_report(
    img: np.ndarray,
    labels: list[dict],
    encode_text: Callable[[list[str]], np.ndarray],
    attrs: Sequence[str],
    k: int = 5,
) -> dict:
    """Everything one model scores on one set (see the module doc)."""
    key = f"precision@{k}"
    t2i, i2i, skipped = {}, {}, {}
    for a in attrs:
        vals = [lab.get(a) for lab in labels]
        have = np.array([v is not None for v in vals])
        values = sorted({v for v in vals if v})
        if not values:
            skipped[a] = f"no image of the set has a {a} label"
            continue
        if len(values) < 2:  # every query would find only relevant images: precision 1 says nothing
            skipped[a] = f"every labelled image has the same {a} ({values[0]}): nothing to tell apart"
            continue
        phr = PHRASINGS.get(a, ("a {v} car", "a photo of a {v} car", "{v}"))
        by_phrasing, by_value = {}, {v: [] for v in values}
        for p in phr:
            emb = encode_text([p.format(v=v) for v in values])
            s = np.where(have[None, :], emb @ img.T, -np.inf)
            hit = np.array([[x == v for x in vals] for v in values])
            prec = _precision_at(s, hit, k)
            by_phrasing[p] = float(np.nanmean(prec))
            for v, pv in zip(values, prec):
                by_value[v].append(pv)
        t2i[a] = {
            key: float(np.mean(list(by_phrasing.values()))),
            "by_phrasing": by_phrasing,
            "by_value": {v: float(np.nanmean(ps)) for v, ps in by_value.items()},
            "images": int(have.sum()),
            "values": len(values),
        }
        if have.sum() >= 2 and len(values) >= 1:
            idx = np.flatnonzero(have)
            s = img[idx] @ img[idx].T
            np.fill_diagonal(s, -np.inf)
            v_arr = np.array([vals[i] for i in idx], dtype=object)
            hit = v_arr[:, None] == v_arr[None, :]
            i2i[a] = {key: float(np.nanmean(_precision_at(s, hit, k))), "queries": int(len(idx))}
    res = {
        "images": len(labels),
        "attributes": list(t2i),
        "skipped": skipped,
        "text_to_image": {key: float(np.mean([m[key] for m in t2i.values()])) if t2i else 0.0, "by_attribute": t2i},
        "image_to_image": {key: float(np.mean([m[key] for m in i2i.values()])) if i2i else 0.0, "by_attribute": i2i},
    }
    return res


def evaluate_sets(
    specs: list[EvalSet],
    root: Path,
    models: dict,
    encoders: dict,
    trained: dict[str, str],
    cfg: Eval,
    limits: Limits,
    plot_dir: Path | None = None,
    log=print,
    keep: dict | None = None,
) -> dict:
    """{set name: {"base": report, "finetuned": report, "rejected": n}} for every configured set.
    `models`: name -> (model, processor); `encoders`: name -> (encode_images(paths), encode_text(texts)).
    `keep`: filled with {(set, model): (image vectors, labels)} (the calibration fits on them)."""
    out = {}
    k, attrs = cfg.set_k, list(cfg.set_attributes)
    with tempfile.TemporaryDirectory(prefix="carsearch-evalsets-") as tmp:
        for spec in specs:
            if spec.kind == "judgments":  # judged queries (carsearch.feedback): their own protocol
                out[spec.name] = judged_report(spec, root, models, encoders, cfg, log)
                continue
            rows, rejects = load_set(spec, root, Path(tmp), limits)
            name = spec.name
            check_overlap(name, rows, trained)
            labels = [r["labels"] for r in rows]
            if len(rows) < 2 or not any(labels):
                raise EvalSetError(
                    f"eval set {name!r}: {len(rows)} usable image(s), {sum(1 for l in labels if l)} labelled; "
                    "need at least 2 labelled images"
                )
            res = {"rejected": len(rejects)}
            for mname in models:
                enc_img, enc_txt = encoders[mname]
                img = enc_img([Path(r["path"]) for r in rows])
                res[mname] = set_report(img, labels, enc_txt, attrs, k)
                if keep is not None:
                    keep[(name, mname)] = (img, labels)
                if plot_dir is not None and mname == "finetuned":
                    _examples_png(name, rows, img, labels, enc_txt, res[mname], k, plot_dir / f"examples_{name}.png")
            res["gain"] = (
                {
                    d: round(res["finetuned"][d][f"precision@{k}"] - res["base"][d][f"precision@{k}"], 4)
                    for d in ("text_to_image", "image_to_image")
                }
                if {"base", "finetuned"} <= set(models)
                else {}
            )
            for a, why in res[next(iter(models))]["skipped"].items():
                log(f"evaluate: set {name!r}: skipped {a} queries: {why}")
            out[name] = res
    return out


def _examples_png(name, rows, img, labels, enc_txt, rep, k, out_png: Path) -> None:
    examples = []
    for a in rep["attributes"]:
        for v in list(rep["text_to_image"]["by_attribute"][a]["by_value"])[:3]:
            q = PHRASINGS.get(a, ("a {v} car",))[0].format(v=v)
            s = enc_txt([q])[0] @ img.T
            s = np.where([lab.get(a) is not None for lab in labels], s, -np.inf)
            top = np.argsort(-s, kind="stable")[:k]
            examples.append(
                (f'{name}: "{q}"', [(Path(rows[i]["path"]), float(s[i]), labels[i].get(a) == v) for i in top])
            )
    if examples:
        results_grid_png(examples, out_png)


def set_validation_fn(spec: EvalSet, root: Path, processor, cfg: Eval, trained: dict[str, str], limits: Limits):
    """`validate(model) -> {"<set>_t2i_precision@k", "<set>_i2i_precision@k", "<set>_precision@k"}` on a
    labelled eval set (images preprocessed once), for best-epoch selection / early stopping by the
    photos users search (`train.early_stopping.set`)."""
    k, attrs = cfg.set_k, list(cfg.set_attributes)
    with tempfile.TemporaryDirectory(prefix="carsearch-valset-") as tmp:
        rows, _ = load_set(spec, root, Path(tmp), limits)
        check_overlap(spec.name, rows, trained)
        pix = processor.image_processor(images=load_images([r["path"] for r in rows]), return_tensors="pt")[
            "pixel_values"
        ]
    labels = [r["labels"] for r in rows]

    def validate(model) -> dict:
        rep = set_report(embed_pixels(model, pix), labels, lambda t: embed_texts(model, processor, t), attrs, k)
        t, i = rep["text_to_image"][f"precision@{k}"], rep["image_to_image"][f"precision@{k}"]
        n = spec.name
        return {f"{n}_t2i_precision@{k}": t, f"{n}_i2i_precision@{k}": i, f"{n}_precision@{k}": (t + i) / 2}

    return validate


def with_val_sets(
    validate, names: list[str], cfg: Eval, limits: Limits, root: Path, processor, trained_pairs: list[dict]
):
    """Add the eval sets `names` (`train.val_sets`: the user's labelled photos) to the per-epoch
    validation `validate`, so best epoch / early stopping can follow the photos users search
    (`train.early_stopping.metric: <set>_precision@5`)."""
    if not names:
        return validate
    specs = {s.name: s for s in cfg.sets}
    missing = [n for n in names if n not in specs]
    if missing:
        raise EvalSetError(f"train.val_sets: {missing} not in eval.sets ({sorted(specs) or 'none configured'})")
    trained = {data.content_id((root / p["path"]).read_bytes()): p["path"] for p in trained_pairs}
    fns = [set_validation_fn(specs[n], root, processor, cfg, trained, limits) for n in names]

    def validate_all(model) -> dict:
        out = dict(validate(model)) if validate else {}
        for f in fns:
            out.update(f(model))
        return out

    return validate_all
