"""What the evaluate stage writes and says, from `carsearch.evaluation.run.EvalResult`: the metric
files, the plots (recall curves, reliability, the example grid), the flat MLflow metrics, and the
summary lines."""

from __future__ import annotations

from pathlib import Path

from carsearch.core.io import write_json, write_text
from carsearch.evaluation.calibration import reliability_png
from carsearch.evaluation.kinds import flat_metrics as calibration_flat
from carsearch.evaluation.kinds import reliability_inputs, report_lines
from carsearch.evaluation.plots import recall_curves_png, results_grid_png
from carsearch.evaluation.run import HEADLINE, EvalResult
from carsearch.evaluation.stats import write_query_csv

PLOTS = ("recall_at_k.png", "examples.png", "recall_at_k.csv", "reliability.png")


def recall_csv(curves: dict) -> str:
    """recall@k per model and direction, one row per k (for `dvc plots`)."""
    curve_k = len(next(iter(curves["base"].values())))
    cols = [(m, d) for m in curves for d in curves[m]]
    lines = ["k," + ",".join(f"{m}_{d}" for m, d in cols)]
    lines += [f"{k}," + ",".join(f"{curves[m][d][k - 1]:.4f}" for m, d in cols) for k in range(1, curve_k + 1)]
    return "\n".join(lines) + "\n"


def write(res: EvalResult, metrics_dir: Path, plots_dir: Path, provenance: dict | None = None) -> None:
    """eval.json (with the run's `provenance`: core.provenance), calibration.json, eval_queries.csv;
    recall_at_k.csv/.png, reliability.png, examples.png."""
    write_json(metrics_dir / "eval.json", {**res.results, "provenance": provenance} if provenance else res.results)
    write_json(metrics_dir / "calibration.json", res.calibs)
    reliability_png(reliability_inputs(res.creports.get("finetuned", {})), plots_dir / "reliability.png")
    write_query_csv(metrics_dir / "eval_queries.csv", res.per_query)
    write_text(plots_dir / "recall_at_k.csv", recall_csv(res.curves))
    recall_curves_png(res.curves, plots_dir / "recall_at_k.png")
    results_grid_png(res.examples, plots_dir / "examples.png")


def _key(k: str) -> str:
    return k.replace("@", "_at_")


def mlflow_metrics(results: dict, creports: dict) -> dict[str, float]:
    """The numbers of eval.json as flat MLflow metric names (`finetuned.text_to_image.recall_at_5`)."""
    flat = {}
    for name in ("base", "finetuned"):
        for direction in ("text_to_image", "image_to_image"):
            for k, v in results[name][direction].items():
                if isinstance(v, (int, float)):
                    flat[f"{name}.{direction}.{_key(k)}"] = v
        for a, z in results[name]["zero_shot"].items():
            flat[f"{name}.zero_shot.{a}.accuracy"] = z["accuracy"]
        levels = {k: v for k, v in results[name].get("vehicles", {}).items() if isinstance(v, dict)}
        for level, m in levels.items():
            flat.update({f"{name}.vehicles.{level}.{_key(k)}": v for k, v in m.items()})
    for name, rep in creports.items():  # the calibration, held out, per query kind and source
        flat.update(calibration_flat(name, rep))
    for name, c in results.get("candidates", {}).items():  # every WiSE-FT candidate's figures
        for d in ("text_to_image", "image_to_image"):
            flat.update({f"{name}.{d}.{_key(k)}": v for k, v in c[d].items() if k in HEADLINE})
    return flat


def model_tags(results: dict) -> dict:
    """The headline figures the registered model version is tagged with."""
    return {
        f"{name}.{d}.{k}": results[name][d][k]
        for name in ("base", "finetuned")
        for d in ("text_to_image", "image_to_image")
        for k in HEADLINE
        if k in results[name][d]
    }


def summary_lines(res: EvalResult) -> list[str]:
    """What the stage prints at the end: vehicles, box recall, calibration, then the headline."""
    results, out = res.results, []
    for name in ("base", "finetuned") if "vehicles" in results["base"] else ():
        v = results[name]["vehicles"]
        out.append(
            f"evaluate[{name}, vehicles]: {v['vehicles']} vehicles in {v['frames']} frames; vehicle text->image "
            f"R@5 {v['vehicle'].get('recall@5', 0):.3f} MRR {v['vehicle'].get('mrr', 0):.3f} | frame R@5 "
            f"{v['frame'].get('recall@5', 0):.3f}"
        )
    for src, r in results.get("box_recall", {}).items():
        out.append(
            f"evaluate: box recall of {src} boxes at IoU >= {r['iou']}: {r['recall']:.3f} ({r['truth']} true boxes)"
        )
    out += [x for name, rep in res.creports.items() for x in report_lines(name, rep)]
    for name in ("base", "finetuned"):
        for a, pc in results[name].get("per_class", {}).items():
            out.append(
                f"evaluate[{name}, per class]: {a} zero-shot top-1 {pc['top1']:.3f} {pc['top1_ci']} over "
                f"{pc['classes']} classes (macro {pc['macro_top1']:.3f}, chance {pc['chance']:.3f})"
            )
        t, i = results[name]["text_to_image"], results[name]["image_to_image"]
        out.append(
            f"evaluate[{name}]: text->image R@1 {t.get('recall@1', 0):.3f} R@5 {t.get('recall@5', 0):.3f} "
            f"mAP@10 {t.get('map@10', 0):.3f} | image->image R@1 {i.get('recall@1', 0):.3f} "
            f"R@5 {i.get('recall@5', 0):.3f} mAP@10 {i.get('map@10', 0):.3f}"
        )
    return out
