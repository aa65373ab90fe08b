"""Stage evaluate: what users experience when they search, untrained base model vs fine-tuned.

Writes metrics/eval.json (text->image on attribute queries, image->image same model, recall@k
(hit rate), mAP@k, MRR, a by-combination and a zero-shot per-attribute breakdown, and the gain of
the fine-tuned model), recall@k curves (CSV for `dvc plots`, PNG) and a PNG grid of example
queries with their top-5. Fits each model's hit confidence on the held-out labelled queries
(metrics/calibration.json, ECE and confident precision/coverage in eval.json, reliability.png) and
scores the WiSE-FT candidates (`index.wise_ft`) for the gate. Logs it all into the fine-tuning
MLflow run and tags the registered model version with the metrics.

The work is `carsearch.evaluation.run.run(cfg, root)`; this module loads the config, calls it,
writes (`carsearch.evaluation.outputs`), logs to MLflow and prints.
"""

from __future__ import annotations

import os

from carsearch.core.params import load_config, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.provenance import provenance
from carsearch.evaluation import outputs
from carsearch.evaluation.run import run
from carsearch.experiments import tracking


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cfg, root = load_config(), repo_root()
    res = run(cfg, root)
    metrics_dir, plots_dir = resolve(cfg.paths.metrics_dir, root), resolve(cfg.paths.plots_dir, root)
    outputs.write(res, metrics_dir, plots_dir, provenance(root))
    tracking.log_evaluation(
        res.model_dir / "carsearch_run.json",
        cfg.mlflow,
        outputs.mlflow_metrics(res.results, res.creports),
        [metrics_dir / "eval.json", metrics_dir / "calibration.json"],
        [plots_dir / f for f in outputs.PLOTS],
        outputs.model_tags(res.results),
    )
    for line in outputs.summary_lines(res):
        print(line)


if __name__ == "__main__":
    run_stage(main)
