"""The record of an ended benchmark run, read from its folder in one place: a finished run (``RunRecord``,
``read_run``), judged against its task's trivial baseline where it kept its dev predictions (``kept_predictions``,
``judge``), or one whose training diverged (``DivergedRun``, ``read_diverged``); and the model a folder's runs were
made by (``recorded_model``).

A run lies in ``runs/<Task>/<cell>/seed<N>/``, the cell named by its settings (``benchmark_plan.cell_name``): a
run whose recorded settings name another folder, or whose results.json lacks what train.py records, is refused.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from glue_metrics import glue_score, trivial_baseline
from glue_processors import get_task
from glue_support.benchmark_plan import RUN_RECORD, read_json, read_record, recorded_cell, short_identity
from glue_support.provenance import file_identity


@dataclass(frozen=True)
class Baseline:
    """A task's trivial baseline on the dev labels a run kept: the best GLUE score (0-1) one constant prediction
    gets there, and which constant (``glue_metrics.trivial_baseline``)."""

    score: float
    kind: str  # "majority class", "constant <label>" or, for a regression, "constant"

    def describe(self) -> str:
        """``majority class 52.7``."""
        return f"{self.kind} {100 * self.score:.1f}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "score": 100 * self.score}


@dataclass(frozen=True)
class RunRecord:
    """A finished run: where it lies, its recorded settings (its identity: ``benchmark_plan.run_identity``), its
    training's wall time, train.py's ``results.json`` and ``history.json``, and its GLUE scores (0-1)."""

    folder: str
    task: str
    cell: str  # its cell's folder name
    seed: int
    settings: dict[str, Any]
    wall_s: float
    results: dict[str, Any]
    history: dict[str, list[dict[str, Any]]]
    # the validation it is scored by: its best (``best``: train.py's best checkpoint, whose model it kept) where
    # train.py kept one, else its last (the results' own files)
    scored: dict[str, Any]
    score: float  # its GLUE score, 0-1, at that validation
    last_score: float  # at its last validation
    restart_of: Optional[int] = None  # the seed of its cell's degenerate run it was run to replace (--restarts)
    # its task's trivial baseline on its kept dev labels, and why it is degenerate (``judge``); both None for a run
    # that kept no predictions (made before runs kept them), which is not judged
    baseline: Optional[Baseline] = None
    degenerate: Optional[str] = None
    # its kept dev predictions (``read_predictions``), read once here for judging and comparing; None where it kept none
    predictions: Optional[dict[str, dict[str, list]]] = field(default=None, repr=False)

    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch of its best validation, where train.py kept one."""
        return self.results["best"]["epoch"] if "best" in self.results else None


@dataclass(frozen=True)
class DivergedRun:
    """A run whose training loss or weights stopped being finite: train.py stopped it and recorded where
    (``diverged`` in its results.json). A result, shown as such: never scored, selected or retried."""

    folder: str
    task: str
    cell: str
    seed: int
    settings: dict[str, Any]
    wall_s: float
    step: int  # the optimizer step it diverged at
    epoch: int
    loss: str  # the training loss then, as train.py wrote it ("nan", "inf")

    def describe(self) -> str:
        """``seed 43 diverged at step 37``."""
        return f"seed {self.seed} diverged at step {self.step}"

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step, "epoch": self.epoch, "loss": self.loss}


def located_record(folder: str, status: str) -> Optional[tuple[dict[str, Any], str, str]]:
    """The record of the run in ``folder``, with its task and cell (from the folder), where its status is ``status``,
    else None; refused, in one line, where its recorded settings name another folder than ``folder``."""
    record = read_record(folder)
    if record is None or record["status"] != status:
        return None
    settings = record["settings"]
    task, cell, seed = os.path.normpath(folder).split(os.sep)[-3:]
    recorded = os.path.join(settings["task"], recorded_cell(settings), f"seed{settings['seed']}")
    if os.path.join(task, cell, seed) != recorded:
        raise ValueError(f"{folder}: its {RUN_RECORD} records the settings of runs/{recorded}, not of this folder; "
                         "move the run there, or delete it")
    return record, task, cell


def read_run(folder: str) -> Optional[RunRecord]:
    """The run in ``folder`` (``<output_dir>/runs/<Task>/<cell>/seed<N>``) once it has finished, else None; refused,
    in one line naming the folder or file, where its record, results or history do not hold what benchmark.py and
    train.py write."""
    located = located_record(folder, "done")
    if located is None:
        return None
    record, task, cell = located
    settings = record["settings"]
    results_path = os.path.join(folder, "results.json")
    results = read_json(results_path)
    if results is None or results.get("task") != task:
        raise FileNotFoundError(f"{folder}: no results.json of a {task} run")
    missing = [key for key in ("data", "versions") if key not in results]
    if missing:
        raise ValueError(f"{results_path}: no {' or '.join(missing)} recorded (written by an earlier train.py); "
                         f"delete {folder} to run it again")
    history = read_json(os.path.join(folder, "history.json"))
    if history is None:
        raise FileNotFoundError(f"{folder}: no history.json of a finished run")
    scored = results.get("best") or results
    try:
        score, last_score = glue_score(task, scored), glue_score(task, results)
    except ValueError as error:
        raise ValueError(f"{results_path}: {error}") from None
    if not (math.isfinite(score) and math.isfinite(last_score)):
        raise ValueError(f"{results_path}: a {task} score of {score} at its best validation and {last_score} at its "
                         f"last, not numbers a scoreboard can average; delete {folder} to run it again")
    predictions = read_predictions(folder, task, results) if "predictions" in results else None
    baseline, degenerate = judge(task, predictions, score) if predictions else (None, None)
    return RunRecord(folder, task, cell, settings["seed"], settings, record["wall_s"], results, history, scored, score,
                     last_score, record.get("restart_of"), baseline, degenerate, predictions)


def read_predictions(folder: str, task: str, results: dict[str, Any]) -> dict[str, dict[str, list]]:
    """The dev predictions the run in ``folder`` kept (train.py's ``dev_predictions.json``), checked against the
    SHA-256 its ``results`` record (under ``predictions``); refused in one line where that record or the file is
    not what train.py writes."""
    kept = results["predictions"]
    if not isinstance(kept, dict) or not {"file", "sha256"} <= set(kept):
        raise ValueError(f"{folder}: its results.json records its dev predictions without their file and SHA-256; "
                         "run it again")
    path = os.path.join(folder, kept["file"])
    if not os.path.exists(path) or file_identity(path)["sha256"] != kept["sha256"]:
        raise ValueError(f"{path}: missing, or not the predictions its results.json records (SHA-256 "
                         f"{kept['sha256'][:12]}); run it again")
    predictions = read_json(path)
    for file in get_task(task).scored_files:
        found = predictions.get(file) if isinstance(predictions, dict) else None
        columns = [found.get(key) for key in ("index", "label", "prediction")] if isinstance(found, dict) else []
        if not (columns and all(isinstance(column, list) for column in columns) and len(set(map(len, columns))) == 1):
            raise ValueError(f"{path}: no predictions of {file} (index, label, prediction of equal length)")
    return predictions


def kept_predictions(run: RunRecord) -> dict[str, dict[str, list]]:
    """The dev predictions ``run`` kept, read with it (``read_run``); refused in one line for a run that kept none
    (made before runs kept them)."""
    if run.predictions is None:
        raise ValueError(f"{run.folder}: no dev predictions kept (a run made before runs kept them): a comparison "
                         "needs them; run it again with this version")
    return run.predictions


def judge(task: str, predictions: dict[str, dict[str, list]], score: float) -> tuple[Baseline, Optional[str]]:
    """The task's trivial baseline on the gold labels of ``predictions`` (a run's kept dev predictions), and why
    the run is degenerate, None where it is not: its predictions are one class (a regression's one value) on each
    scored dev file, or its GLUE ``score`` (0-1) is not above that baseline."""
    files = get_task(task).scored_files
    baseline = Baseline(*trivial_baseline(task, {file: predictions[file]["label"] for file in files}))
    if all(len(set(predictions[file]["prediction"])) == 1 for file in files):
        return baseline, "one value" if get_task(task).is_regression else "one class"
    if score <= baseline.score:
        return baseline, f"not above the baseline {100 * baseline.score:.1f}"
    return baseline, None


def read_diverged(folder: str) -> Optional[DivergedRun]:
    """The run in ``folder`` where its training diverged, else None; refused, in one line naming the file, where its
    results.json does not say where (``diverged``: step, epoch and loss, as train.py writes it)."""
    located = located_record(folder, "diverged")
    if located is None:
        return None
    record, task, cell = located
    settings = record["settings"]
    results_path = os.path.join(folder, "results.json")
    found = (read_json(results_path) or {}).get("diverged")
    if not (isinstance(found, dict) and isinstance(found.get("step"), int) and isinstance(found.get("epoch"), int)
            and isinstance(found.get("loss"), str)):
        raise ValueError(f"{results_path}: no record of where the run diverged (\"diverged\": its step, epoch and "
                         f"loss), though {RUN_RECORD} says it did; delete {folder} to run it again")
    return DivergedRun(folder, task, cell, settings["seed"], settings, record["wall_s"], found["step"],
                       found["epoch"], found["loss"])


def record_folders(output_dir: str, task: str = "*") -> list[str]:
    """The folders of the runs recorded in ``output_dir`` (of ``task``, or of every task), in order."""
    return sorted(os.path.dirname(path)
                  for path in glob.glob(os.path.join(output_dir, "runs", task, "*", "seed*", RUN_RECORD)))


def ended_runs(output_dir: str, task: str) -> tuple[list[RunRecord], list[DivergedRun]]:
    """The runs of ``task`` in ``output_dir`` that finished and those that diverged, by folder."""
    folders = record_folders(output_dir, task)
    return ([run for run in map(read_run, folders) if run is not None],
            [run for run in map(read_diverged, folders) if run is not None])


def describe_model(model: dict[str, Any]) -> str:
    """A model as ``recorded_model`` gives it, in a message: ``<name> (sha256 <first 12 digits>)``."""
    return f"{model['name']} (sha256 {short_identity(model['identity'])})"


def recorded_model(output_dir: str) -> Optional[dict[str, Any]]:
    """The model the runs in ``output_dir`` were made by, as they recorded it: its name and identity
    (``provenance.model_identity``); None where no run was recorded there. Refused, in one line, where a run
    recorded no identity (recorded before runs did) or the runs were made by more than one model."""
    found: Optional[dict[str, Any]] = None
    first = ""
    for folder in record_folders(output_dir):
        settings = read_record(folder)["settings"]
        if "model_identity" not in settings:
            raise ValueError(f"{folder}: a run recorded without its model's identity (a fingerprint of the model's "
                             "config and weights, recorded since); delete that folder to run it again, or choose "
                             "another --bench.output_dir")
        model = {"name": settings["model"], "identity": settings["model_identity"]}
        if found is None:
            found, first = model, folder
        elif model != found:
            raise ValueError(f"{output_dir}: runs of two models, {first} of {describe_model(found)} and {folder} of "
                             f"{describe_model(model)}; a benchmark folder holds the runs of one model: move or "
                             "delete one of them")
    return found
