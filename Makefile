# The two commands of the README: `make repro` (set up, then run the pipeline on the embedded
# demo set) and `make test` (set up, then run the tests).
SHELL := /bin/bash
VENV := .venv/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TQDM_MININTERVAL ?= 10

.PHONY: setup repro lint test bench lock clean
setup:
	bash scripts/setup.sh

repro: setup
	PATH="$(CURDIR)/$(VENV):$$PATH" dvc repro

lint: setup
	$(VENV)/ruff format --check src tests benchmarks scripts
	$(VENV)/ruff check src tests benchmarks scripts

test: setup
	PATH="$(CURDIR)/$(VENV):$$PATH" python -m pytest -q -n 2 --dist loadfile --durations=15

bench: setup
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_pipeline.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_serve.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_index.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_embed.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_cold.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_feedback.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_watches.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_motion.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_tracks.py
	PATH="$(CURDIR)/$(VENV):$$PATH" python benchmarks/bench_dashcam.py

lock:
	bash scripts/lock.sh
