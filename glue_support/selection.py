"""A task's selection among its ended runs, computed in one place (``select``): the cells of its grid with their
scores over the seeds, the cell with the best mean (or median, or best single) score, and in it the run with the
best score. Runs that diverged are shown with their cell but never scored: a cell whose runs all diverged cannot be
selected, and a task whose runs all diverged has no selected cell. The scoreboard reports it; the selected run
predicts the test sets and is the one other tasks start from.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from glue_support.benchmark_plan import GRID_KEYS
from glue_support.run_record import Baseline, DivergedRun, RunRecord, ended_runs


@dataclass(frozen=True)
class Spread:
    """Scores x100 over seeds: their mean, sample standard deviation (None for one seed), median, and each one."""

    mean: float
    std: Optional[float]
    median: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                   statistics.median(values), tuple(values))

    @property
    def best(self) -> float:
        """The best seed's score: what ``bench.select best`` ranks cells by, as BERT kept the best run on dev."""
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "median": self.median, "values": list(self.values)}

    def plus_minus(self) -> str:
        """``58.1 ± 2.3``; the mean alone for one seed."""
        return f"{self.mean:.1f}" + (f" ± {self.std:.1f}" if self.std is not None else "")


@dataclass(frozen=True)
class Cell:
    """One cell of a task's grid: its folder's name, its settings (its runs' recorded settings but the task, the
    seed, the data and the model's identity) and its runs by seed: those that finished and count in its scores,
    those that diverged, and the degenerate ones a finished restart replaced (``restarted``)."""

    name: str
    settings: dict[str, Any]
    runs: tuple[RunRecord, ...]
    diverged: tuple[DivergedRun, ...] = ()
    restarted: tuple[RunRecord, ...] = ()

    @property
    def finished(self) -> tuple[RunRecord, ...]:
        """Every finished run, counted or replaced, by seed."""
        return tuple(sorted((*self.runs, *self.restarted), key=lambda run: run.seed))

    @property
    def degenerate(self) -> tuple[RunRecord, ...]:
        """Its counted runs that are degenerate (``run_record.judge``): not restarted, so in its scores."""
        return tuple(run for run in self.runs if run.degenerate)

    def restarted_as(self, run: RunRecord) -> Optional[int]:
        """The seed of the run that replaced ``run``, one of ``restarted``; None for another run."""
        return next((other.seed for other in self.runs if other.restart_of == run.seed), None) \
            if run in self.restarted else None

    @property
    def score(self) -> Optional[Spread]:
        """Its finished runs' GLUE scores x100, each at the validation it is scored by: what the cell is ranked by;
        None where every run diverged."""
        return Spread.of([100 * run.score for run in self.runs]) if self.runs else None

    @property
    def last_epoch(self) -> Optional[Spread]:
        """Its finished runs' GLUE scores x100 at their last validation; None where every run diverged."""
        return Spread.of([100 * run.last_score for run in self.runs]) if self.runs else None


@dataclass(frozen=True)
class Selection:
    """A task's cells, the selected one (the best by the rule among those with a finished run; the first of
    equals) and its selected run (the seed with the best score; the first of equals); both None where every run
    of the task diverged."""

    task: str
    rule: str
    cells: tuple[Cell, ...]
    cell: Optional[Cell]
    run: Optional[RunRecord]

    @property
    def runs(self) -> tuple[RunRecord, ...]:
        """Every finished run of the task, cell by cell."""
        return tuple(run for cell in self.cells for run in cell.runs)

    @property
    def diverged(self) -> tuple[DivergedRun, ...]:
        """Every run of the task that diverged, cell by cell."""
        return tuple(run for cell in self.cells for run in cell.diverged)

    @property
    def restarted(self) -> tuple[RunRecord, ...]:
        """Every degenerate run of the task a restart replaced, cell by cell."""
        return tuple(run for cell in self.cells for run in cell.restarted)

    @property
    def degenerate(self) -> tuple[RunRecord, ...]:
        """Every degenerate run of the task, counted or replaced, cell by cell and by seed."""
        return tuple(run for cell in self.cells for run in cell.finished if run.degenerate)

    @property
    def baseline(self) -> Optional[Baseline]:
        """The task's trivial baseline on its dev labels (the same for every run of one dev data, which a benchmark
        folder holds); None where no run kept its predictions."""
        return next((run.baseline for cell in self.cells for run in cell.finished if run.baseline), None)


def cell_settings(run: RunRecord | DivergedRun) -> dict[str, Any]:
    return {key: value for key, value in run.settings.items() if key not in ("task", "seed", "data", "model_identity")}


def cells_of(runs: Sequence[RunRecord], diverged: Sequence[DivergedRun] = ()) -> tuple[Cell, ...]:
    """``runs`` and ``diverged`` by cell (a degenerate run a finished restart replaced apart), ordered by their
    settings; refused, in one line naming both folders, where two runs of one cell were made with other settings
    (benchmark.py refuses to mix them; copied by hand, they could be)."""
    by_name: dict[str, list[RunRecord | DivergedRun]] = {}
    for run in [*runs, *diverged]:
        by_name.setdefault(run.cell, []).append(run)
    cells = []
    for name, members in by_name.items():
        members.sort(key=lambda run: run.seed)
        settings = cell_settings(members[0])
        for other in members[1:]:
            if (found := cell_settings(other)) != settings:
                changed = ", ".join(f"{key} {settings.get(key)!r} -> {found.get(key)!r}"
                                    for key in dict.fromkeys([*settings, *found])
                                    if settings.get(key) != found.get(key))
                raise ValueError(f"{other.folder}: made with other settings than {members[0].folder} ({changed}); "
                                 "the seeds of a cell must be one experiment: move or delete one of them")
        finished = [run for run in members if isinstance(run, RunRecord)]
        # a degenerate run is replaced by a finished run recording it as the run it restarts
        replaced = {run.restart_of for run in finished} & {run.seed for run in finished if run.degenerate}
        cells.append(Cell(name, settings, tuple(run for run in finished if run.seed not in replaced),
                          tuple(run for run in members if isinstance(run, DivergedRun)),
                          tuple(run for run in finished if run.seed in replaced)))
    return tuple(sorted(cells, key=lambda cell: (*(cell.settings[key] for key in GRID_KEYS), cell.name)))


def best_cell(cells: tuple[Cell, ...], rule: str = "mean") -> Optional[Cell]:
    """The cell with the best mean (``rule="median"``: median; ``"best"``: best single run) score over its seeds;
    the first of equals. Only a cell with a finished run can be chosen: None where there is none."""
    scored = [cell for cell in cells if cell.score is not None]
    return max(scored, key=lambda cell: getattr(cell.score, rule)) if scored else None


def select(output_dir: str, task: str, rule: str = "mean") -> Optional[Selection]:
    """``task``'s selection among its ended runs in ``output_dir``; None while none has ended."""
    runs, diverged = ended_runs(output_dir, task)
    if not runs and not diverged:
        return None
    cells = cells_of(runs, diverged)
    cell = best_cell(cells, rule)
    if cell is None:
        return Selection(task, rule, cells, None, None)
    scores = cell.score.values
    return Selection(task, rule, cells, cell, cell.runs[scores.index(max(scores))])
