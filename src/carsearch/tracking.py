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
