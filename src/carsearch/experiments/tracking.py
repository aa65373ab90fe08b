"""MLflow tracking: a sqlite store and artifact folder in the original repo root, so runs from
queued experiments (which execute in .dvc/tmp/exps/...) are not lost."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from carsearch.core.params import changed_keys, flatten
from carsearch.core.paths import mlflow_uri, shared_root
from carsearch.core.schema import MLflow


def setup(cfg: MLflow):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri(cfg.tracking_uri))
    name = cfg.experiment
    if mlflow.get_experiment_by_name(name) is None:
        artifacts = shared_root() / "mlartifacts"
        with contextlib.suppress(Exception):  # a concurrent experiment may have created it
            mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    exp = mlflow.set_experiment(name)
    if (exp.tags or {}).get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        with contextlib.suppress(Exception):  # the UI then opens it in the model-training view
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return mlflow


def register_model(mlflow, run_id: str, cfg: MLflow, content_hash: str, tags: dict | None = None) -> dict:
    """Register the run's `model` artifact folder (a `save_pretrained` dir) as a new version of
    `cfg.registered_model` (default "carsearch-clip"), tagged with its content hash.
    Returns {"name", "version", "source"}; {} when registration is disabled (registered_model: null)."""
    name = cfg.registered_model
    if not name:
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with contextlib.suppress(Exception):  # already exists (or created concurrently)
        client.create_registered_model(name, description="carsearch fine-tuned CLIP (save_pretrained dir)")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={"content_hash": content_hash, **{k: str(v) for k, v in (tags or {}).items()}},
    )
    return {"name": name, "version": int(mv.version), "source": source, "content_hash": content_hash}


def tag_model_version(reg: dict, tags: dict) -> None:
    """Attach (evaluation) metrics to a registered version, e.g. {"finetuned.text_to_image.recall@5": 0.9}
    (MLflow names cannot hold "@": it is written "_at_")."""
    if not reg or not reg.get("name"):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(reg["name"], str(reg["version"]), k.replace("@", "_at_"), str(v))


def find_model_version(reg: dict) -> dict | None:
    """The registry's view of a registered version (None if the registry does not know it)."""
    if not reg or not reg.get("name"):
        return None
    from mlflow.tracking import MlflowClient

    try:
        mv = MlflowClient().get_model_version(reg["name"], str(reg["version"]))
    except Exception:  # noqa: BLE001 - a missing registry entry is reported, not fatal
        return None
    return {
        "name": mv.name,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "tags": dict(mv.tags or {}),
    }


# ----------------------------------------------------------------- DVC <-> MLflow identity
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # opens in the model-training view
CHAMPION = "champion"  # registry alias of the version the live index was built with


def _git(args: list[str], cwd) -> str | None:
    import subprocess

    try:
        p = subprocess.run(
            ["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def changed_params(params: dict, root, base_rev: str | None) -> dict:
    """Flattened params that differ from params.yaml at `base_rev` (the experiment's baseline)."""
    import yaml

    old = _git(["show", f"{base_rev or 'HEAD'}:params.yaml"], root)
    if old is None:
        return {}
    try:
        before = yaml.safe_load(old) or {}
    except yaml.YAMLError:
        return {}
    now = flatten(params)
    return {k: now[k] for k in changed_keys(params, before) if k in now}


def run_identity(params: dict, root, stage: str) -> tuple[str, dict]:
    """(run name, tags) that tell runs apart: the DVC experiment name (DVC exports DVC_EXP_NAME
    to stages of `dvc exp run`), the git revision (the baseline for an experiment) and dirty flag,
    and the params that differ from that revision."""
    exp = os.environ.get("DVC_EXP_NAME")
    rev = os.environ.get("DVC_EXP_BASELINE_REV") or _git(["rev-parse", "HEAD"], root)
    dirty = bool(
        _git(["status", "--porcelain", "--untracked-files=no", "--", "params.yaml", "src", "conf", "dvc.yaml"], root)
    )
    changed = changed_params(params, root, rev)
    short = ", ".join(f"{k}={v}" for k, v in sorted(changed.items())[:3]) if changed else ""
    name = exp or f"{stage}@{(rev or 'norev')[:7]}{'-dirty' if dirty else ''}"
    if short:
        name += f" ({short}{', …' if len(changed) > 3 else ''})"
    tags = {
        "dvc.stage": stage,
        "dvc.exp_name": exp or "",
        "git.revision": rev or "",
        "git.dirty": str(dirty).lower(),
        "dvc.changed_params": ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "(none)",
    }
    return name[:250], tags


def log_pair_datasets(mlflow, pairs_dir, dvc_hash: str | None) -> dict:
    """`mlflow.log_input` for the train/val/test pairs: name, DVC content hash (digest) and rows."""
    import json
    from pathlib import Path

    import pandas as pd

    out = {}
    for split in ("train", "val", "test"):
        f = Path(pairs_dir) / f"{split}.jsonl"
        if not f.is_file():
            continue
        rows = [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines() if l.strip()]
        df = pd.DataFrame({"id": [r["id"] for r in rows], "caption": [r.get("caption", "") for r in rows]})
        import warnings

        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local file, either way
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=str(f), name=f"pairs-{split}", digest=(dvc_hash or "")[:36] or None)
        mlflow.log_input(ds, context=split)
        out[split] = len(rows)
    return out


def set_champion(reg: dict, content_hash: str | None = None) -> str | None:
    """Point the registry alias @champion at the version the index was built with; returns the
    version it pointed at before (None if none)."""
    if not reg or not reg.get("name") or not reg.get("version"):
        return None
    from mlflow.tracking import MlflowClient

    c = MlflowClient()
    before = None
    with contextlib.suppress(Exception):
        before = c.get_model_version_by_alias(reg["name"], CHAMPION).version
    c.set_registered_model_alias(reg["name"], CHAMPION, str(reg["version"]))
    return before


def log_evaluation(run_file: Path, cfg, metrics: dict, files: list[Path], plots: list[Path], tags: dict) -> bool:
    """Log an evaluation into the fine-tuning run `run_file` (carsearch_run.json) names: the flat
    metrics, the metric files, the plots (under `plots/`); tag the registered version with `tags`.
    False (nothing logged) when the model came with no run file."""
    if not run_file.is_file():
        return False
    info = json.loads(run_file.read_text())
    mlflow = setup(cfg)
    with mlflow.start_run(run_id=info["mlflow_run_id"]):
        mlflow.log_metrics(metrics)
        for f in files:
            mlflow.log_artifact(str(f))
        for f in plots:
            mlflow.log_artifact(str(f), artifact_path="plots")
    tag_model_version(info.get("registered_model") or {}, tags)
    return True
