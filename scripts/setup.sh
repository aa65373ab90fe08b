#!/usr/bin/env bash
# One-step setup: .venv with uv from the locked requirements (CPU torch, never torchvision),
# the package itself (editable), and the TORCS car models for the rendered demo set.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
UV="uv"; command -v uv >/dev/null 2>&1 || UV="python3 -m uv"

# torch==2.13.0+cpu: a local wheel folder (pip's find-links here), else PyTorch's CPU index.
# ($PIP_FIND_LINKS first: no subprocess that can fail; a CI run once fell through to the index here)
FL=${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
EXTRA=()
if [ -n "$FL" ] && ls "$FL"/torch-2.13.0* >/dev/null 2>&1; then
  EXTRA+=(--find-links "$FL")
elif [ -n "${UV_FIND_LINKS:-}" ]; then
  :
else
  EXTRA+=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi

[ -x .venv/bin/python ] || $UV venv --quiet --python 3.11 .venv
# Bytecode compiled once per lock (stamp in .venv): where PYTHONDONTWRITEBYTECODE is set (it is on
# this project's machines) Python never writes .pyc itself, and every stage process compiled torch,
# transformers and mlflow from source again: ~25 s of a 30 s evaluate stage, most of `make test`.
STAMP=".venv/.bytecode-$(sha256sum requirements.lock | cut -c1-16)"
COMPILE=(); [ -f "$STAMP" ] || COMPILE=(--compile-bytecode)
$UV pip sync --quiet --python .venv/bin/python "${COMPILE[@]}" "${EXTRA[@]}" requirements.lock
$UV pip install --quiet --python .venv/bin/python --no-deps -e .
.venv/bin/python -m compileall -q -j 0 src >/dev/null
[ -f "$STAMP" ] || { rm -f .venv/.bytecode-*; touch "$STAMP"; }

# CARSEARCH_REQUIRE_ALL=1 (.ci/run): what the tests need must be there; without it they skip.
REQUIRE_ALL="${CARSEARCH_REQUIRE_ALL:-0}"
required() {  # one line naming what is missing; fails setup when everything is required
  echo "setup: $1"
  if [ "$REQUIRE_ALL" != "0" ]; then echo "setup: CARSEARCH_REQUIRE_ALL=$REQUIRE_ALL: failing"; exit 1; fi
}

# The browser tests drive the system Chromium (Playwright cannot download its own browser offline).
if ! command -v chromium >/dev/null 2>&1 && [ "${CARSEARCH_SKIP_BROWSER:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (Debian package) for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || required "could not install chromium; the browser tests will be skipped"
  else
    required "chromium not found (apt-get install chromium); the browser tests will be skipped"
  fi
fi

if [ -x scripts/fetch_torcs.sh ] && [ "${CARSEARCH_SKIP_TORCS:-0}" != "1" ]; then
  bash scripts/fetch_torcs.sh || echo "setup: TORCS car models unavailable; the toy demo set will be used"
  TORCS="${CARSEARCH_TORCS_DIR:-$HOME/.cache/carsearch/torcs}"
  [ -f "$TORCS/.complete" ] || required "no TORCS car models in $TORCS (scripts/fetch_torcs.sh); their tests will be skipped"
fi
echo "setup: ready (.venv: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
