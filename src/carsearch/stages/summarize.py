"""Stage summarize: metrics/summary.json, the one declared metric: what changed against conf/'s
defaults and the headline figures of the other stages (see carsearch.experiments.headline); and
the top-k grid of each README example query from the built index (carsearch.experiments.examples)."""

from __future__ import annotations

from carsearch.core.io import write_json
from carsearch.core.params import load_config, load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.experiments.examples import example_grids
from carsearch.experiments.headline import default_params, summary
from carsearch.index.search import CarSearch


def main() -> None:
    root = repo_root()
    cfg = load_config()  # validated: a bad params.yaml is one line here too
    metrics_dir = resolve(cfg.paths.metrics_dir, root)
    raw = load_params(validate=False)  # compared as composed, before the schema fills anything in
    s = summary(metrics_dir, raw, default_params(root / "conf"))
    write_json(metrics_dir / "summary.json", s, sort_keys=False)  # column order
    print("summarize: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    examples_dir = resolve(cfg.paths.examples_dir, root)
    examples_dir.mkdir(parents=True, exist_ok=True)  # the stage's out, even with no query or no index
    if cfg.examples.queries:
        try:
            search = CarSearch(root=root)
        except FileNotFoundError as e:
            print(f"summarize: no example grids ({e})")
            return
        out = example_grids(search, cfg.examples.queries, cfg.examples.k, examples_dir)
        print(f"summarize: {len(out)} example grids (top {cfg.examples.k}) -> {cfg.paths.examples_dir}")


if __name__ == "__main__":
    run_stage(main)
