"""MLflow tracking: a sqlite store and artifact folder in the original repo root, so runs from
queued experiments (which execute in .dvc/tmp/exps/...) are not lost."""

from __future__ import annotations

import contextlib
import logging
import os

from .paths import mlflow_uri, shared_root


def setup(cfg: dict):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri(cfg.get("tracking_uri")))
    name = cfg.get("experiment", "carsearch")
    if mlflow.get_experiment_by_name(name) is None:
        artifacts = shared_root() / "mlartifacts"
        with contextlib.suppress(Exception):  # a concurrent experiment may have created it
            mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(name)
    return mlflow


def register_model(mlflow, run_id: str, cfg: dict, content_hash: str, tags: dict | None = None) -> dict:
    """Register the run's `model` artifact folder (a `save_pretrained` dir) as a new version of
    `cfg["registered_model"]` (default "carsearch-clip"), tagged with its content hash.
    Returns {"name", "version", "source"}; {} when registration is disabled (registered_model: null)."""
    name = cfg.get("registered_model", "carsearch-clip")
    if not name:
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with contextlib.suppress(Exception):  # already exists (or created concurrently)
        client.create_registered_model(name, description="carsearch fine-tuned CLIP (save_pretrained dir)")
    source = f"{mlflow.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source=source, run_id=run_id,
                                     tags={"content_hash": content_hash, **{k: str(v) for k, v in (tags or {}).items()}})
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
    return {"name": mv.name, "version": int(mv.version), "run_id": mv.run_id, "source": mv.source, "tags": dict(mv.tags or {})}
