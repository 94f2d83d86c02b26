"""Each GLUE task's official metrics, and the one rule that makes them a task's GLUE score.

``compute(task, labels, preds)`` gives the metrics of one validation file (named as Hugging Face's ``glue`` metric
names them, with ``combined_score`` where a task reports two); ``glue_score(task, results)`` gives the task's
score from its validation files' metrics; ``trivial_baseline`` the score of the best constant prediction. Degenerate
inputs give a defined value and a warning, never NaN.
"""
from __future__ import annotations

import collections
import statistics
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from glue_processors import get_task

# scikit-learn and scipy are imported where a metric is computed: the scoreboard scores runs with this module and
# starts without them


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


# by the names the task table uses (a row's ``metric``)
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    metric.__name__: metric for metric in (accuracy, matthews_correlation, accuracy_and_f1, correlations)}

# the numbers each metric function reports, in its order, each with the name tables show it by
REPORTS: dict[str, dict[str, str]] = {
    "accuracy": {"accuracy": "acc"},
    "matthews_correlation": {"matthews_correlation": "MCC"},
    "accuracy_and_f1": {"accuracy": "acc", "f1": "F1"},
    "correlations": {"pearson": "Pearson", "spearmanr": "Spearman"},
}


def compute(task: str, labels: Sequence[float] | np.ndarray, preds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The official metric(s) of ``task`` for gold ``labels`` and predictions ``preds`` (same length)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.shape != preds.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got labels {labels.shape} and preds {preds.shape}")
    result = METRICS[get_task(task).metric](labels, preds)
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def official(task: str, result: Mapping[str, Any]) -> dict[str, float]:
    """The official metrics of one validation file's result (as ``compute`` gives them), without its loss, epoch
    and other bookkeeping."""
    keys = REPORTS[get_task(task).metric]
    missing = [key for key in keys if key not in result]
    if missing:
        raise ValueError(f"no {', '.join(missing)} among the metrics of a {get_task(task).name} validation "
                         f"({', '.join(result)})")
    return {key: result[key] for key in keys}


def file_score(task: str, result: Mapping[str, Any]) -> float:
    """One validation file's score, 0-1: the mean of the task's official metrics on it."""
    return statistics.fmean(official(task, result).values())


def glue_score(task: str, results: Mapping[str, Any]) -> float:
    """The task's GLUE score, 0-1, from validation results keyed by file (a results.json, or its ``best``): on each
    dev file the mean of the official metrics (two where GLUE reports two: MRPC, QQP, STS-B), then the mean over
    the dev files, so MNLI scores the mean of matched and mismatched accuracy. GLUE's rule: a task's metrics are
    averaged, MNLI's being matched/mismatched acc. (Wang et al., ICLR 2019, arXiv:1804.07461, Table 1 and 3.4)."""
    files = get_task(task).scored_files
    missing = [file for file in files if file not in results]
    if missing:
        raise ValueError(f"no {get_task(task).name} validation of {', '.join(missing)} to take its GLUE score on")
    return statistics.fmean(file_score(task, results[file]) for file in files)


def trivial_baseline(task: str, labels: Mapping[str, Sequence[float]]) -> tuple[float, str]:
    """The best GLUE score (0-1) a constant prediction gets on the gold ``labels`` of the task's scored dev files
    (by file; MNLI: the same constant on both), with what that constant is: every class is tried, the most frequent
    first, so the majority class wins among equals (``"majority class"``, else ``"constant <label>"``); a
    regression's constant has no correlation, scored as ``correlations`` scores it: 0 (``"constant"``)."""
    spec = get_task(task)
    files = spec.scored_files
    counts = collections.Counter(label for file in files for label in labels[file])
    candidates = [value for value, _ in counts.most_common()] if not spec.is_regression else \
        [statistics.fmean(counts.elements())]
    with warnings.catch_warnings():  # a constant is a single class, which the metrics warn of: expected here
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = [glue_score(task, {file: compute(task, labels[file], [value] * len(labels[file])) for file in files})
                  for value in candidates]
    best = scores.index(max(scores))
    if spec.is_regression:
        return scores[best], "constant"
    return scores[best], "majority class" if best == 0 else f"constant {spec.labels[int(candidates[best])]}"
