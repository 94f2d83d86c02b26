"""GLUE leaderboard files from a model's predictions on the test sets: ``<output_dir>/submission/<leaderboard
name>`` (``RTE.tsv``, ``MNLI-m.tsv``, ``AX.tsv``, ...), one ``index<TAB>prediction`` row per test example.

The writer is built with what the leaderboard needs to know of each test features file (its task, set type and
number of examples), so a prediction that missed examples is refused instead of written.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from glue_processors import TaskSpec, get_task
from glue_support.atomic_write import atomic_path
from glue_support.marlin import getlogger

logger = getlogger(__name__)


class SubmissionWriter:
    """Writes the submission file of each test features file from the model's outputs on it.

    ``spec`` is the task the model was fine-tuned for (AX is predicted by an MNLI model, with MNLI's labels);
    ``test_features`` holds each test file's metadata by file name. Under DDP every process predicts, and only
    the main process writes. ``written``: test file name -> submission file.
    """

    def __init__(self, spec: TaskSpec, test_features: dict[str, dict[str, Any]], output_dir: str,
                 is_main_process: bool):
        self.spec = spec
        self.test_features = test_features
        self.output_dir = output_dir
        self.is_main_process = is_main_process
        self.written: dict[str, str] = {}

    def write(self, key: str, logits: torch.Tensor, indexes: torch.Tensor) -> str:
        """The submission file of test file ``key``: one row per example in index order (``indexes`` sorted, each
        once); label names for classification, scores clipped to 0-5 for STS-B."""
        metadata = self.test_features[key]
        spec = get_task(metadata["task"])
        if len(indexes) != metadata["count"]:
            raise RuntimeError(f"{key}: {len(indexes)} of its {metadata['count']} examples were predicted "
                               "(trainer.max_val_steps_per_epoch limits prediction too); no submission written")
        logits = logits.float().cpu()
        if self.spec.is_regression:
            predictions = [f"{score:.3f}" for score in logits.squeeze(-1).clamp(0.0, 5.0).tolist()]
        else:
            predictions = [self.spec.labels[label] for label in logits.argmax(dim=-1).tolist()]
        path = os.path.join(self.output_dir, "submission", spec.submission_file(metadata["set_type"]))
        self.written[key] = path
        if not self.is_main_process:
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="\n") as stream:
            stream.write("index\tprediction\n")
            stream.writelines(f"{number}\t{prediction}\n" for number, prediction in zip(indexes.tolist(), predictions))
        logger.info(f"Wrote {len(predictions)} {spec.name} {metadata['set_type']} predictions to {path}")
        return path
