"""Each GLUE task's official metric, named as Hugging Face's ``glue`` metric names them.

A task's function is the ``metric`` of its row in ``glue_processors.TASKS``. ``compute(task, labels, preds)``
takes class ids (or STS-B scores) and returns a flat dict, with ``combined_score`` (the mean) where a task
reports more than one number. Degenerate inputs (one class only, constant predictions) give a defined value and
a warning, never NaN.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

# scikit-learn and scipy are imported inside the functions that use them: the task table names these functions,
# and the commands that only read the table (download_glue.py, the scoreboard, dry runs, --help) must start
# without loading them.


def accuracy(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    return {"accuracy": float((labels == preds).mean())}


def matthews_correlation(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    if len(np.unique(labels)) < 2 or len(np.unique(preds)) < 2:
        warnings.warn("Matthews correlation of a single class is undefined; reporting 0.0", RuntimeWarning)
        return {"matthews_correlation": 0.0}
    return {"matthews_correlation": float(matthews_corrcoef(labels, preds))}


def accuracy_and_f1(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    if not (labels == 1).any() and not (preds == 1).any():
        warnings.warn("F1 of the positive class is undefined with no positive labels or predictions; reporting 0.0",
                      RuntimeWarning)
    return {**accuracy(labels, preds), "f1": float(f1_score(labels, preds, zero_division=0.0))}


def correlations(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    if np.ptp(labels) == 0 or np.ptp(preds) == 0:
        warnings.warn("correlation with a constant series is undefined; reporting 0.0", RuntimeWarning)
        return {"pearson": 0.0, "spearmanr": 0.0}
    return {"pearson": float(pearsonr(preds, labels)[0]), "spearmanr": float(spearmanr(preds, labels)[0])}


def compute(task: str, labels: Sequence[float] | np.ndarray, preds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The official metric(s) of ``task`` for gold ``labels`` and predictions ``preds`` (same length)."""
    # imported here, not at the top: glue_processors imports this module for its rows' functions
    from glue_processors import get_task

    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.shape != preds.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got labels {labels.shape} and preds {preds.shape}")
    result = get_task(task).metric(labels, preds)
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result
