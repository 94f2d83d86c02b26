"""The best validation and early stopping (``glue_support.model_selection.BestValidation``) on their own: given
validations and a score, which one is best, which weights are kept, when patience is spent, and what a checkpoint
brings back."""
from __future__ import annotations

import torch

from glue_support.model_selection import BestValidation


def by_accuracy(results: dict) -> float:
    return results["dev.tsv"]["accuracy"]


def validation(accuracy: float) -> dict:
    return {"dev.tsv": {"accuracy": accuracy, "loss": 1 - accuracy}}


class Weights:
    """A model's ``state_dict`` as the Recipe hands it over: counts the calls, returns tensors it goes on changing."""

    def __init__(self) -> None:
        self.tensor = torch.zeros(2)
        self.calls = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"w": self.tensor}


def test_a_higher_score_replaces_the_best_and_a_tie_does_not():
    best = BestValidation(by_accuracy, keep_weights=False, patience=None)
    for step, accuracy in ((2, 0.5), (4, 0.7), (6, 0.7), (8, 0.6)):
        assert best.record(validation(accuracy), epoch=step // 4 + 1, step=step, weights=Weights()) == accuracy
    assert best.result == {"score": 0.7, "epoch": 2, "step": 4, **validation(0.7)}
    assert best.since_best == 2


def test_the_weights_are_a_copy_taken_only_with_keep_weights():
    weights = Weights()
    kept = BestValidation(by_accuracy, keep_weights=True, patience=None)
    kept.record(validation(0.5), 1, 2, weights)
    weights.tensor += 1  # training goes on
    kept.record(validation(0.4), 1, 4, weights)  # not better: not copied
    assert torch.equal(kept.weights["w"], torch.zeros(2)) and weights.calls == 1
    kept.record(validation(0.9), 1, 6, weights)
    assert torch.equal(kept.weights["w"], torch.ones(2)) and kept.weights["w"] is not weights.tensor

    weights = Weights()
    reported = BestValidation(by_accuracy, keep_weights=False, patience=None)
    reported.record(validation(0.5), 1, 2, weights)
    assert reported.weights is None and weights.calls == 0


def test_patience_counts_validations_without_improvement_since_the_best():
    best = BestValidation(by_accuracy, keep_weights=False, patience=2)
    spent = []
    for accuracy in (0.5, 0.4, 0.6, 0.6, 0.5):
        best.record(validation(accuracy), 1, 0, Weights())
        spent.append(best.patience_spent())
    assert spent == [False, False, False, False, True]
    never = BestValidation(by_accuracy, keep_weights=False, patience=None)
    for _ in range(5):
        never.record(validation(0.5), 1, 0, Weights())
    assert never.since_best == 4 and not never.patience_spent()


def test_its_state_brings_back_the_best_its_weights_and_the_count():
    weights = Weights()
    before = BestValidation(by_accuracy, keep_weights=True, patience=3)
    for accuracy in (0.6, 0.5, 0.4):
        before.record(validation(accuracy), 1, 0, weights)
    after = BestValidation(by_accuracy, keep_weights=True, patience=3)
    after.restore(before.state())
    assert (after.result, after.since_best) == (before.result, 2) and torch.equal(after.weights["w"], torch.zeros(2))
    after.record(validation(0.3), 2, 8, weights)
    assert after.patience_spent()
