"""A training run's result files in its output folder: ``results.json`` (per validation file the last validation,
under ``best`` the best one, and what the numbers were made from; for a run that diverged, where it did instead of
any validation), ``history.json`` (the curves) and ``dev_predictions.json`` (the predictions of the validation the
run is scored by, its SHA-256 in results.json). Written by the main process only, each atomically."""
from __future__ import annotations

import os
from typing import Any, Optional

from glue_support.atomic_write import write_json
from glue_support.provenance import features_data, file_identity, versions

PREDICTIONS_FILE = "dev_predictions.json"


def provenance_record(files: dict[str, list[str]], metadata: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a run's numbers are made from: per option (``trainpath``, ...) its features files' sources, checksums
    and examples (``files``: the files of each option; ``metadata``: each file's, by path), and the versions."""
    data = {option: features_data({file: metadata[file] for file in paths}) for option, paths in files.items()}
    return {"data": data, "versions": versions()}


class ResultFiles:
    """The result files of a run of ``model`` on ``task`` into ``output_dir``, with its ``provenance_record``. On
    processes other than the main one, writing does nothing."""

    def __init__(self, output_dir: str, task: str, model: str, provenance: dict[str, Any], is_main_process: bool):
        self.output_dir = output_dir
        self.head = {"task": task, "model": model}
        self.provenance = provenance
        self.is_main_process = is_main_process

    @property
    def results_path(self) -> str:
        return os.path.join(self.output_dir, "results.json")

    def write_results(self, results: dict[str, dict[str, Any]], best: Optional[dict[str, Any]],
                      predictions: dict[str, dict[str, list]]) -> None:
        """``results``: each validation file's last validation; ``best``: the best validation, if one is kept;
        ``predictions``: those of the validation the run is scored by (the best, else the last), by validation
        file: ``{"index": [...], "label": [...], "prediction": [...]}`` in index order, written to
        ``dev_predictions.json``, whose name and SHA-256 results.json records under ``predictions``."""
        if self.is_main_process:
            path = os.path.join(self.output_dir, PREDICTIONS_FILE)
            write_json(path, predictions)
            kept = {"file": PREDICTIONS_FILE, "sha256": file_identity(path)["sha256"]}
            write_json(self.results_path, {**self.head, **results, **({"best": best} if best else {}),
                                           **self.provenance, "predictions": kept})

    def write_diverged(self, step: int, epoch: int, loss: float) -> None:
        """A run whose training diverged at optimizer ``step`` of ``epoch``, with that step's ``loss`` (written as
        text: ``nan``, ``inf``): results.json says so under ``diverged``, with no validation, so nothing scores it."""
        if self.is_main_process:
            write_json(self.results_path, {**self.head, "diverged": {"step": step, "epoch": epoch, "loss": str(loss)},
                                           **self.provenance})

    def write_history(self, history: dict[str, list[dict[str, Any]]]) -> None:
        """``history``: the training-loss curve (``train``) and every validation, by validation file."""
        if self.is_main_process:
            write_json(os.path.join(self.output_dir, "history.json"), {**self.head, **history})
