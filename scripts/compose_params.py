"""Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own hydra helper).
Usage: python scripts/compose_params.py [override ...]   e.g. lr=1e-4 model=clip_vit_b32"""

import sys
from pathlib import Path

from dvc.utils.hydra import compose_and_dump

root = Path(__file__).resolve().parents[1]
compose_and_dump(root / "params.yaml", str(root / "conf"), None, "config", str(root), sys.argv[1:])
print(f"wrote {root / 'params.yaml'}")
