#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml (run after changing dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
FL=$(python3 -m pip config get global.find-links 2>/dev/null || echo /opt/wheels)
uv pip compile pyproject.toml --extra test --find-links "$FL" --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --no-header -o requirements.lock
