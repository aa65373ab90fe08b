"""Stage caption_batch: answer data/jsonl/*.jsonl -> data/captions/*.jsonl.out with the configured
backend (offline | bedrock | openai), plus metrics/caption.json (records, tokens, estimated cost).

Records answered before (same image, model, prompts and settings) are replayed from the caption
cache (`caption.cache.dir`, `.carsearch/caption_cache` in the original repo) and only the rest go
to the backend; the outputs still hold every record. Tokens and `estimated_usd` count what was
sent. The work is `carsearch.captioning.run.run(cfg, root, out_dir)`."""

from __future__ import annotations

from carsearch.captioning.run import run, summary_line
from carsearch.core.io import atomic_dir, write_json
from carsearch.core.params import load_config, run_stage
from carsearch.core.paths import repo_root, resolve


def main() -> None:
    cfg, root = load_config(), repo_root()
    with atomic_dir(resolve(cfg.paths.captions_dir, root)) as tmp:  # answers swapped in complete
        m = run(cfg, root, tmp)
    write_json(resolve(cfg.paths.metrics_dir, root) / "caption.json", m)
    print(summary_line(m, cfg.caption.backend, cfg.paths.captions_dir))


if __name__ == "__main__":
    run_stage(main)
