"""Each GLUE task's official metric, named as Hugging Face's ``glue`` metric names them.

A task's function is named by the ``metric`` of its row in ``glue_processors.TASKS``. ``compute(task, labels, preds)``
takes class ids (or STS-B scores) and returns a flat dict, with ``combined_score`` (the mean) where a task
reports more than one number. Degenerate inputs (one class only, constant predictions) give a defined value and
a warning, never NaN.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from glue_processors import get_task


def accuracy(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    return {"accuracy": float((labels == preds).mean())}


def matthews_correlation(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    if len(np.unique(labels)) < 2 or len(np.unique(preds)) < 2:
        warnings.warn("Matthews correlation of a single class is undefined; reporting 0.0", RuntimeWarning)
        return {"matthews_correlation": 0.0}
    return {"matthews_correlation": float(matthews_corrcoef(labels, preds))}


def accuracy_and_f1(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    if not (labels == 1).any() and not (preds == 1).any():
        warnings.warn("F1 of the positive class is undefined with no positive labels or predictions; reporting 0.0",
                      RuntimeWarning)
    return {**accuracy(labels, preds), "f1": float(f1_score(labels, preds, zero_division=0.0))}


def correlations(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    if np.ptp(labels) == 0 or np.ptp(preds) == 0:
        warnings.warn("correlation with a constant series is undefined; reporting 0.0", RuntimeWarning)
        return {"pearson": 0.0, "spearmanr": 0.0}
    return {"pearson": float(pearsonr(preds, labels)[0]), "spearmanr": float(spearmanr(preds, labels)[0])}


# by the names the task table uses (a row's ``metric``)
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    metric.__name__: metric for metric in (accuracy, matthews_correlation, accuracy_and_f1, correlations)}


def compute(task: str, labels: Sequence[float] | np.ndarray, preds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The official metric(s) of ``task`` for gold ``labels`` and predictions ``preds`` (same length)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.shape != preds.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got labels {labels.shape} and preds {preds.shape}")
    result = METRICS[get_task(task).metric](labels, preds)
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result
