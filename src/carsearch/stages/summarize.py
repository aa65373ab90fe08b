"""Stage summarize: metrics/summary.json, the one declared metric: what changed against conf/'s
defaults and the headline figures of the other stages (see carsearch.experiments.headline)."""

from __future__ import annotations

from carsearch.core.io import write_json
from carsearch.core.params import load_config, load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.experiments.headline import default_params, summary


def main() -> None:
    root = repo_root()
    metrics_dir = resolve(load_config().paths.metrics_dir, root)  # validated: a bad params.yaml is one line here too
    raw = load_params(validate=False)  # compared as composed, before the schema fills anything in
    s = summary(metrics_dir, raw, default_params(root / "conf"))
    write_json(metrics_dir / "summary.json", s, sort_keys=False)  # column order
    print("summarize: " + ", ".join(f"{k} {v}" for k, v in s.items()))


if __name__ == "__main__":
    run_stage(main)
