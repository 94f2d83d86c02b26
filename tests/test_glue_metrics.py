"""glue_metrics agrees with scikit-learn and scipy, stays defined on degenerate input, and gives a task's GLUE score
by one rule: the mean of its official metrics on each dev file, then over its dev files (MNLI's matched and
mismatched)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import glue_metrics
from glue_processors import TASKS, get_task

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


LAST = {"loss": 0.7, "epoch": 3, "step": 30, "examples": 10}  # a validation's bookkeeping, beside its metrics


def test_the_glue_score_of_each_kind_of_task():
    """The mean of the official metrics where GLUE reports two; MNLI the mean of matched and mismatched accuracy."""
    assert glue_metrics.glue_score("MNLI", {"task": "MNLI", "dev_matched.tsv": {"accuracy": 0.8, **LAST},
                                            "dev_mismatched.tsv": {"accuracy": 0.6, **LAST}, "data": {}}
                                   ) == pytest.approx(0.7)
    assert glue_metrics.glue_score("MRPC", {"dev.tsv": {"accuracy": 0.8, "f1": 0.9, "combined_score": 0.85, **LAST}}
                                   ) == pytest.approx(0.85)
    assert glue_metrics.glue_score("STS-B", {"dev.tsv": {"pearson": 0.5, "spearmanr": 0.7, **LAST}}
                                   ) == pytest.approx(0.6)
    assert glue_metrics.glue_score("CoLA", {"dev.tsv": {"matthews_correlation": -0.1, **LAST}}) == -0.1
    assert [get_task(task).scored_files for task in ("MNLI", "RTE")] == [
        ("dev_matched.tsv", "dev_mismatched.tsv"), ("dev.tsv",)]


def test_a_missing_file_or_metric_is_named():
    with pytest.raises(ValueError, match="no MNLI validation of dev_matched.tsv to take its GLUE score on"):
        glue_metrics.glue_score("MNLI", {"dev_mismatched.tsv": {"accuracy": 0.6, **LAST}})
    with pytest.raises(ValueError, match=r"no f1 among the metrics of a MRPC validation \(accuracy, loss, epoch"):
        glue_metrics.glue_score("MRPC", {"dev.tsv": {"accuracy": 0.8, **LAST}})


@pytest.mark.parametrize("task", sorted({spec.name for spec in TASKS.values() if spec.dev_set_types}))
def test_the_glue_score_reads_the_numbers_each_metric_reports(task):
    labels, preds = ([0.0, 1.0, 2.5, 4.0], [0.5, 1.0, 2.0, 3.0]) if get_task(task).is_regression else ([0, 1, 1, 0],
                                                                                                      [0, 1, 0, 0])
    reported = glue_metrics.compute(task, labels, preds)
    assert list(glue_metrics.official(task, reported)) == [key for key in reported if key != "combined_score"]
    assert glue_metrics.glue_score(task, {name: reported for name in get_task(task).scored_files}) == pytest.approx(
        reported.get("combined_score", next(iter(reported.values()))))
