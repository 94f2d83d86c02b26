"""The record of a finished benchmark run (``RunRecord``), read from its folder in one place (``read_run``).

A run lies in ``runs/<Task>/<cell>/seed<N>/``, the cell named by its settings (``benchmark_plan.cell_name``): a
run whose recorded settings name another folder, or whose results.json lacks what train.py records, is refused.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

from glue_metrics import glue_score
from glue_support.benchmark_plan import RUN_RECORD, read_record, recorded_cell


def read_json(path: str) -> Optional[Any]:
    """The content of the JSON file at ``path``; None where there is none."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


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

    @property
    def best_epoch(self) -> Optional[int]:
        """The epoch of its best validation, where train.py kept one."""
        return self.results["best"]["epoch"] if "best" in self.results else None


def read_run(folder: str) -> Optional[RunRecord]:
    """The run in ``folder`` (``<output_dir>/runs/<Task>/<cell>/seed<N>``) once it has finished, else None; refused,
    in one line naming the folder or file, where its record, results or history do not hold what benchmark.py and
    train.py write."""
    record = read_record(folder)
    if record is None or record["status"] != "done":
        return None
    settings = record["settings"]
    task, cell, seed = os.path.normpath(folder).split(os.sep)[-3:]
    recorded = os.path.join(settings["task"], recorded_cell(settings), f"seed{settings['seed']}")
    if os.path.join(task, cell, seed) != recorded:
        raise ValueError(f"{folder}: its {RUN_RECORD} records the settings of runs/{recorded}, not of this folder; "
                         "move the run there, or delete it")
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
    return RunRecord(folder, task, cell, settings["seed"], settings, record["wall_s"], results, history, scored, score,
                     last_score)


def finished_runs(output_dir: str, task: str) -> list[RunRecord]:
    """The finished runs of ``task`` in ``output_dir``, by folder."""
    folders = sorted(os.path.dirname(path)
                     for path in glob.glob(os.path.join(output_dir, "runs", task, "*", "seed*", RUN_RECORD)))
    return [run for run in map(read_run, folders) if run is not None]
