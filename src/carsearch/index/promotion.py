"""The promotion gate of build_index: which model the index is built with, from metrics/eval.json.

Candidates: the base model, the fine-tuned one and every WiSE-FT interpolation evaluate scored
(`index.wise_ft.alphas`, eval.json["candidates"]). The deciding figure is `index.promote.metric`
on the test split or on the eval set `index.promote.set`; the best candidate is indexed if it
beats the base by more than `index.promote.min_gain`, else the base. Every candidate's figure is
recorded (metrics/index.json["promotion"]["candidates"]).
"""

from __future__ import annotations

from carsearch.core.params import ParamsError


def promotion_decision(eval_metrics: dict, metric: str, min_gain: float = 0.0, set_name: str | None = None) -> dict:
    """{"use": "finetuned"|"base", "reason", "metric", "set", "finetuned", "base"} from eval.json
    content. `set_name`: an eval set (eval.json["sets"]) decides instead of the rendered split."""
    source = eval_metrics
    where = "the test split"
    if set_name:
        sets = eval_metrics.get("sets") or {}
        if set_name not in sets:
            raise ParamsError(
                f"index.promote.set: {set_name!r} is not an evaluated set (eval.json has "
                f"{sorted(sets) or 'no eval sets'}; configure it under eval.sets)"
            )
        source, where = sets[set_name], f"eval set {set_name!r}"

    def get(name: str) -> float:
        cur = source.get(name) if name in source else (eval_metrics.get("candidates") or {}).get(name, {})
        for part in metric.split("."):
            if not isinstance(cur, dict) or part not in cur:
                example = "text_to_image.precision@5" if set_name else "text_to_image.recall@5, image_to_image.map@10"
                raise ParamsError(
                    f"index.promote.metric: {metric!r} not in eval.json[{name!r}] of {where} (e.g. {example})"
                )
            cur = cur[part]
        return float(cur)

    ft, base = get("finetuned"), get("base")
    gain = ft - base
    use = "finetuned" if gain > min_gain else "base"
    cmp = ">" if use == "finetuned" else "<="
    reason = f"on {where}: fine-tuned {metric} {ft:.4f} {cmp} base {base:.4f} + min_gain {min_gain:g}" + (
        "" if use == "finetuned" else ": fine-tuning did not pay, indexing with the base model"
    )
    # WiSE-FT candidates (evaluate scored them): the best figure of all wins, if it beats the base by min_gain
    figures = {"base": base, "finetuned": ft}
    for name in sorted(eval_metrics.get("candidates") or {}):
        figures[name] = get(name)
    best = max(figures, key=lambda n: (figures[n], n == "finetuned"))  # a tie: the plain fine-tuned model
    if best not in ("base", "finetuned") and figures[best] - base > min_gain and figures[best] > ft:
        use = best
        reason = (
            f"on {where}: {best} {metric} {figures[best]:.4f} is the best candidate (fine-tuned {ft:.4f}, "
            f"base {base:.4f} + min_gain {min_gain:g})"
        )
    out = {
        "use": use,
        "reason": reason,
        "metric": metric,
        "set": set_name or "test split",
        "finetuned": round(ft, 4),
        "base": round(base, 4),
        "gain": round(gain, 4),
        "min_gain": min_gain,
        "candidates": {n: round(v, 4) for n, v in figures.items()},  # every candidate's deciding figure
    }
    if use.startswith("wise_ft_"):
        out["alpha"] = float(eval_metrics["candidates"][use]["alpha"])
    if eval_metrics.get("sets"):  # every set's headline numbers, whichever decided
        out["sets"] = {
            n: {
                m: {
                    d: {k: v for k, v in r[m][d].items() if k.startswith("precision@")}
                    for d in ("text_to_image", "image_to_image")
                }
                for m in ("base", "finetuned")
            }
            for n, r in eval_metrics["sets"].items()
        }
    return out
