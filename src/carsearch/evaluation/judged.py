"""The eval set of judged queries (`eval.sets` item of kind `judgments`, issue 34).

For each held-out text query (carsearch.feedback.split), every model scores the query's judged
hits (their crops, embedded again) and ranks them:
- precision@k: the share of ✓ among the k best-scored judged hits (k = eval.set_k, or fewer judged);
- pairwise: the share of the query's (✓, ✗) pairs the model scores ✓ above ✗ (a tie counts half);
  queries without both a ✓ and a ✗ have no pair and are left out of it.
Means over queries with percentile bootstrap intervals (eval.bootstrap), and the fine-tuned minus
base gain with a paired interval. Image and upload queries are counted, not scored (their query
picture is not kept with the judgment); hits whose file is gone are left out and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from carsearch.core.paths import resolve
from carsearch.core.schema import Eval, EvalSet
from carsearch.evaluation.stats import bootstrap_ci, bootstrap_settings, paired_bootstrap
from carsearch.feedback import split, store


def judged_queries(spec: EvalSet, root: Path, log=print) -> tuple[list[dict], dict]:
    """The held-out text queries with their judged hits ({"id", "text", "hits": [(path, verdict)]})
    and the counts of what was left out (and why)."""
    path = resolve(spec.path, root)
    if not path.is_file():
        raise FileNotFoundError(f"eval.sets[{spec.name}].path: judgments file not found: {path}")
    loaded = store.read(path)
    for p in loaded.problems:
        log(f"evaluate: set {spec.name!r}: {p}")
    parts = split.split(loaded.judgments, float(spec.eval_fraction))
    held = set(parts["eval"])
    out, skipped = [], {"image_queries": 0, "missing_files": 0, "bad_lines": len(loaded.problems)}
    for qid, by_hit in split.latest(loaded.judgments).items():
        if qid not in held:
            continue
        q = next(iter(by_hit.values())).query
        if q.kind != "text":
            skipped["image_queries"] += 1
            continue
        hits = []
        for j in by_hit.values():
            f = resolve(j.hit.path, root) if j.hit.path else None
            if f is None or not f.is_file():
                skipped["missing_files"] += 1
                continue
            hits.append((f, j.verdict))
        if hits:
            out.append({"id": qid, "text": q.text, "hits": hits})
    return out, {"split": {k: len(v) for k, v in parts.items()}, "skipped": skipped, "eval_queries": parts["eval"]}


def query_values(queries: list[dict], enc_img, enc_txt, k: int) -> dict[str, np.ndarray]:
    """Per-query precision@k (every query) and pairwise order (NaN where a query has no ✓/✗ pair)."""
    if not queries:
        return {f"precision@{k}": np.zeros(0), "pairwise": np.zeros(0)}
    txt = np.asarray(enc_txt([q["text"] for q in queries]), np.float64)
    paths = [p for q in queries for p, _ in q["hits"]]
    img = np.asarray(enc_img(paths), np.float64)
    prec, pair, at = [], [], 0
    for qi, q in enumerate(queries):
        n = len(q["hits"])
        s = np.array([float(np.dot(img[at + i], txt[qi])) for i in range(n)])  # no BLAS: same order everywhere
        at += n
        v = np.array([ok for _, ok in q["hits"]], bool)
        top = np.argsort(-s, kind="stable")[: min(k, n)]
        prec.append(float(v[top].mean()))
        pos, neg = s[v], s[~v]
        if len(pos) and len(neg):
            d = pos[:, None] - neg[None, :]
            pair.append(float(((d > 0) + 0.5 * (d == 0)).mean()))
        else:
            pair.append(np.nan)
    return {f"precision@{k}": np.array(prec), "pairwise": np.array(pair)}


def _summary(vals: dict[str, np.ndarray], boot: dict) -> dict:
    out = {"queries": int(len(vals["pairwise"])), "pair_queries": int(np.sum(~np.isnan(vals["pairwise"])))}
    for name, v in vals.items():
        v = v[~np.isnan(v)]
        out[name] = float(v.mean()) if len(v) else 0.0
        ci = bootstrap_ci({name: v}, boot["n"], boot["seed"], boot["confidence"]) if len(v) else {}
        out[f"{name}_ci"] = [round(x, 4) for x in ci.get(name, (0.0, 0.0))]
    return out


def judged_report(spec: EvalSet, root: Path, models, encoders: dict, cfg: Eval, log=print) -> dict:
    """{"kind": "judgments", model: {"text_to_image": {...}, "image_to_image": {}}, "gain", "split"}."""
    k, boot = int(cfg.set_k), bootstrap_settings(cfg.bootstrap)
    queries, info = judged_queries(spec, root, log)
    res: dict = {"kind": "judgments", "images": sum(len(q["hits"]) for q in queries), **info}
    values = {}
    for name in models:
        enc_img, enc_txt = encoders[name]
        values[name] = query_values(queries, enc_img, enc_txt, k)
        res[name] = {"text_to_image": _summary(values[name], boot), "image_to_image": {f"precision@{k}": 0.0}}
    if {"base", "finetuned"} <= set(values):
        res["gain"] = {"text_to_image": {}, "image_to_image": {f"precision@{k}": 0.0}}
        for m in (f"precision@{k}", "pairwise"):
            b, f = values["base"][m], values["finetuned"][m]
            keep = ~(np.isnan(b) | np.isnan(f))
            pb = paired_bootstrap(b[keep], f[keep], boot["n"], boot["seed"], boot["confidence"]) if keep.any() else {}
            res["gain"]["text_to_image"][m] = round(float(np.mean(f[keep] - b[keep])) if keep.any() else 0.0, 4)
            res["gain"]["text_to_image"][f"{m}_ci"] = [round(float(x), 4) for x in pb.get("ci", (0.0, 0.0))]
    log(
        f"evaluate[set {spec.name}]: {len(queries)} judged queries held out ({res['images']} judged hits); "
        + " | ".join(f"{n} P@{k} {res[n]['text_to_image'][f'precision@{k}']:.3f} pairwise "
                     f"{res[n]['text_to_image']['pairwise']:.3f}" for n in models)
    )  # fmt: skip
    return res
