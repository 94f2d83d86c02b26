"""glue_metrics agrees with scikit-learn and scipy, and stays defined on degenerate input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import glue_metrics

LABELS = np.array([0, 1, 1, 0, 1, 1, 0, 1, 0, 0])
PREDS = np.array([0, 1, 0, 0, 1, 1, 1, 1, 0, 1])


@pytest.mark.parametrize("task", ["SST-2", "MNLI", "QNLI", "RTE", "WNLI"])
def test_accuracy_tasks(task):
    labels, preds = (LABELS, PREDS) if task != "MNLI" else (LABELS + PREDS, np.roll(LABELS + PREDS, 1))
    assert glue_metrics.compute(task, labels, preds) == {"accuracy": pytest.approx(accuracy_score(labels, preds))}


def test_cola_is_matthews_correlation():
    assert glue_metrics.compute("CoLA", LABELS, PREDS)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(LABELS, PREDS))


@pytest.mark.parametrize("task", ["MRPC", "QQP"])
def test_mrpc_and_qqp_report_accuracy_f1_and_their_mean(task):
    result = glue_metrics.compute(task, LABELS, PREDS)
    assert set(result) == {"accuracy", "f1", "combined_score"}
    assert result["accuracy"] == pytest.approx(accuracy_score(LABELS, PREDS))
    assert result["f1"] == pytest.approx(f1_score(LABELS, PREDS))
    assert result["combined_score"] == pytest.approx((result["f1"] + result["accuracy"]) / 2)


def test_stsb_reports_pearson_and_spearman():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 50)
    pred = gold + rng.normal(0, 1, 50)
    result = glue_metrics.compute("STS-B", gold, pred)
    assert result["pearson"] == pytest.approx(pearsonr(pred, gold)[0])
    assert result["spearmanr"] == pytest.approx(spearmanr(pred, gold)[0])


def test_degenerate_inputs_give_a_value_and_a_warning():
    with pytest.warns(RuntimeWarning):
        assert glue_metrics.compute("CoLA", LABELS, np.ones_like(LABELS)) == {"matthews_correlation": 0.0}
    with pytest.warns(RuntimeWarning):
        assert glue_metrics.compute("STS-B", np.arange(5.0), np.full(5, 2.5))["pearson"] == 0.0
    with pytest.warns(RuntimeWarning):
        assert glue_metrics.compute("STS-B", np.full(5, 3.0), np.arange(5.0))["spearmanr"] == 0.0
    with pytest.warns(RuntimeWarning):
        assert glue_metrics.compute("MRPC", np.zeros(4), np.zeros(4)) == {"accuracy": 1.0, "f1": 0.0,
                                                                          "combined_score": 0.5}


def test_constant_predictions_that_are_well_defined_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert glue_metrics.compute("MRPC", LABELS, np.zeros_like(LABELS))["f1"] == 0.0
        assert glue_metrics.compute("SST-2", LABELS, np.ones_like(LABELS))["accuracy"] == pytest.approx(0.5)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="equal-length"):
        glue_metrics.compute("RTE", LABELS, PREDS[:-1])
