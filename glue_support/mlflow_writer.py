"""A pymarlin writer that logs metrics to MLflow: inside an Azure ML job, the run's metrics store.

Azure ML (SDK v2) jobs track metrics with MLflow and set ``MLFLOW_TRACKING_URI`` in the job's environment;
``train.py`` then adds this writer to ``trainer.writers`` by itself (``mlflow`` in the list adds it anywhere
else). Only the main process has one: train.py builds it on rank 0 alone.
"""
from __future__ import annotations

import os
import re
from typing import Any

from glue_support.marlin import Writer, getlogger

logger = getlogger(__name__)


def in_tracked_run() -> bool:
    """True inside an MLflow-tracked run (an Azure ML job sets the tracking URI)."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


class MLflowWriter(Writer):
    """Scalars (losses, learning rate, validation metrics) to ``mlflow.log_metric``, one series per name."""

    def __init__(self) -> None:
        super().__init__(logger)
        try:
            import mlflow
        except ImportError:
            raise SystemExit("the mlflow writer needs mlflow (Azure ML: azureml-mlflow): pip install mlflow") from None
        self.mlflow = mlflow
        logger.info(f"Logging metrics to MLflow ({mlflow.get_tracking_uri()})")

    @staticmethod
    def metric_name(name: str) -> str:
        """MLflow accepts letters, digits, ``_-./`` and spaces in names; anything else becomes ``_``."""
        return re.sub(r"[^\w\-./ ]", "_", name)

    def log_scalar(self, k: str, v: Any, step: int) -> None:
        self.mlflow.log_metric(self.metric_name(k), float(v), step=int(step))

    def log_multi(self, k: str, v: dict[str, Any], step: int) -> None:
        for name, value in v.items():
            self.log_scalar(f"{k}/{name}", value, step)
