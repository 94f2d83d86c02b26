"""The best validation of a training run and early stopping: which validation scored best, its predictions, its
weights with ``tmod.keep_best``, and how many validations since it have not beaten it
(``tmod.early_stopping_patience``)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch


class BestValidation:
    """The best of the validations ``record`` is given, by ``score`` (a validation's results -> a number, higher is
    better; a tie does not replace the best). ``keep_weights``: also keep a CPU copy of its weights. ``patience``:
    validations without improvement that end training (None: never)."""

    def __init__(self, score: Callable[[dict[str, Any]], float], keep_weights: bool, patience: Optional[int]):
        self.score = score
        self.keep_weights = keep_weights
        self.patience = patience
        self.result: Optional[dict[str, Any]] = None  # {score, epoch, step, <validation file>: its results, ...}
        self.predictions: dict[str, dict[str, list]] = {}  # its predictions, by validation file
        self.weights: Optional[dict[str, torch.Tensor]] = None
        self.since_best = 0  # validations since the best

    def record(self, results: dict[str, Any], epoch: int, step: int, weights: Callable[[], dict[str, torch.Tensor]],
               predictions: Optional[dict[str, dict[str, list]]] = None) -> float:
        """One validation of every file (its results, and its predictions by file where given): the new best if it
        scores higher, ``weights()`` copied with ``keep_weights``; else one more validation without improvement.
        Its score."""
        score = self.score(results)
        if self.result is None or score > self.result["score"]:
            self.result = {"score": score, "epoch": epoch, "step": step, **results}
            self.predictions = dict(predictions or {})
            self.since_best = 0
            if self.keep_weights:
                self.weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights().items()}
        else:
            self.since_best += 1
        return score

    def patience_spent(self) -> bool:
        """Whether ``patience`` validations in a row have not beaten the best: training ends."""
        return bool(self.patience) and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of it."""
        return {"result": self.result, "predictions": self.predictions, "weights": self.weights,
                "since_best": self.since_best}

    def restore(self, state: dict[str, Any]) -> None:
        """Back to what ``state()`` returned."""
        self.result, self.weights, self.since_best = state["result"], state["weights"], state["since_best"]
        # a checkpoint written before runs kept their predictions has none: the run then keeps none of its best
        self.predictions = state.get("predictions", {})
