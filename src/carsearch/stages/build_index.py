"""Stage build_index: embed every image of the corpus (by default every ingested image; or a
folder / S3 prefix of your own photos: `index.corpus`) into LanceDB with the promoted model.
Embeddings are cached per (image hash, model hash): a rebuild embeds only new images. The new
index is published atomically beside the old one (see carsearch.index).

Promotion gate (carsearch.index.promotion): the fine-tuned model (or the best WiSE-FT candidate)
is used only if it beats the base model on `index.promote.metric` (from metrics/eval.json, e.g.
`text_to_image.recall@5`) by more than `index.promote.min_gain`; otherwise the base model. The model is copied into the index version,
so search never depends on `models/finetuned` (which fine-tuning rewrites). metrics/index.json
says which model, why, and which registered MLflow version and content hash built the index.

The work is `carsearch.index.build.run(cfg, root, registry)`; this module loads the config, calls
it, writes metrics/index.json and prints.
"""

from __future__ import annotations

import os

from carsearch.core.io import write_json
from carsearch.core.params import load_config, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.core.provenance import stamped
from carsearch.experiments import tracking
from carsearch.index.alerts import after_build, summary_line
from carsearch.index.build import run
from carsearch.index.build_report import index_metrics, summary_lines


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cfg, root = load_config(), repo_root()
    built = run(cfg, root, registry=tracking)
    write_json(resolve(cfg.paths.metrics_dir, root) / "index.json", stamped(index_metrics(built), root))
    for line in summary_lines(built, cfg):
        print(line)
    if watched := after_build(
        root, resolve(cfg.paths.index_dir, root), built.new_ids, cfg.index.plate_search
    ):  # conf/watchlists.yaml
        print(summary_line("build_index", watched))


if __name__ == "__main__":
    run_stage(main)
