"""benchmark.py's finished runs -> ``results.json``, ``results.md`` and ``results.png`` in its output folder.

Per task, its selection (``glue_support/selection.py``): the chosen cell's GLUE scores x100 over its seeds with
each file's metrics, every cell of its grid with the runs that diverged, the degenerate runs named against the task's
trivial baseline (and those a restart replaced), the files and library versions the runs were made from, and the
published references; the GLUE average is the mean of the scores of the tasks that have
one. The model is the one the runs recorded (``run_record.recorded_model``). Only a scoreboard's own files are
replaced (``Report.require_own_files``).
"""
from __future__ import annotations

import glob
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from glue_metrics import file_score, official  # noqa: E402
from glue_processors import get_task  # noqa: E402
from glue_support.atomic_write import atomic_path, write_json  # noqa: E402
from glue_support.run_record import RunRecord, describe_model, read_json, recorded_model  # noqa: E402
from glue_support.selection import Cell, Selection, Spread, select  # noqa: E402

CELL_KEYS = {"max_lr": "lr", "batch_size": "batch", "epochs": "epochs", "max_seq_len": "length"}  # a cell's settings


@dataclass(frozen=True)
class Reference:
    """A published set of dev scores (glue_references.json): by task, a score or a score per metric."""

    model: str
    about: str
    source: str
    scores: dict[str, Any]

    def score(self, task: str) -> float:
        """Its score on ``task`` x100: the mean of its metrics where it gives several."""
        scores = self.scores[task]
        return statistics.fmean(scores.values()) if isinstance(scores, dict) else float(scores)


@dataclass(frozen=True)
class WallTime:
    featurize: float  # building the features the task's runs read
    train: float  # every run of the task, every cell
    per_run: float


@dataclass(frozen=True)
class TaskSummary:
    """One task on the scoreboard: its selection, the chosen cell's metrics over its seeds (x100, by
    ``<file>/<metric>``), the files its runs were made from, the time spent, and the published scores by model.
    A task whose every run diverged has no chosen cell, hence no score, metrics or files."""

    selection: Selection
    metrics: dict[str, Spread]
    data: dict[str, dict[str, Any]]
    wall_s: WallTime
    references: dict[str, float]

    @property
    def cell(self) -> Optional[Cell]:
        return self.selection.cell

    @property
    def metric(self) -> str:
        return get_task(self.selection.task).metric_label

    @property
    def best_checkpoint(self) -> bool:
        """Whether train.py kept a best validation, which scores the runs, in the chosen cell."""
        return self.cell is not None and any("best" in run.results for run in self.cell.runs)

    def to_json(self) -> dict[str, Any]:
        """The task's entry in results.json (its score and chosen settings None where every run diverged)."""
        cell, baseline = self.cell, self.selection.baseline
        return {"metric": self.metric, "score": spread_json(cell.score if cell else None),
                "baseline": baseline.to_json() if baseline else None, "restarted": len(self.selection.restarted),
                "metrics": {key: spread.to_json() for key, spread in self.metrics.items()},
                "last_epoch": spread_json(cell.last_epoch if cell else None), "best_checkpoint": self.best_checkpoint,
                "seeds": [run.seed for run in cell.runs] if cell else [], "settings": cell.settings if cell else None,
                "data": self.data, "wall_s": asdict(self.wall_s), "references": self.references,
                "selected": cell.name if cell else None, "cells": [cell_json(cell) for cell in self.selection.cells]}


def spread_json(spread: Optional[Spread]) -> Optional[dict[str, Any]]:
    return spread.to_json() if spread else None


def run_json(run: RunRecord) -> dict[str, Any]:
    """A finished run in results.json: its seed, score, last-validation score, the epoch of its best validation
    where it kept one, why it is degenerate (None where it is not, or kept no predictions to judge) and the seed it
    restarts (None for a planned run)."""
    return {"seed": run.seed, "score": 100 * run.score, "last_epoch": 100 * run.last_score,
            "best_epoch": run.best_epoch, "degenerate": run.degenerate, "restart_of": run.restart_of}


def cell_json(cell: Cell) -> dict[str, Any]:
    """A cell in results.json: its settings, each counted run (``run_json``), their spread (None where every run
    diverged), where each run that diverged did, and each degenerate run a restart replaced with its restart's
    seed."""
    return {"name": cell.name, "settings": cell.settings, "runs": [run_json(run) for run in cell.runs],
            "score": spread_json(cell.score), "last_epoch": spread_json(cell.last_epoch),
            "diverged": [run.to_json() for run in cell.diverged],
            "restarted": [{**run_json(run), "restarted_as": cell.restarted_as(run)} for run in cell.restarted]}


@dataclass(frozen=True)
class VersionGroup:
    """One set of library versions and the runs made with it (named by task, cell where a task has several, and
    seed)."""

    versions: dict[str, Optional[str]]
    runs: list[str]


@dataclass(frozen=True)
class Summary:
    """The scoreboard: the model the runs were made by (its name and identity, ``run_record.recorded_model``),
    each task's summary, the references and the library versions of the runs."""

    model: dict[str, Any]
    select: str  # bench.select: "mean", "median" or "best"
    tasks: dict[str, TaskSummary]
    references: tuple[Reference, ...]
    versions: tuple[VersionGroup, ...]

    @property
    def scored(self) -> dict[str, TaskSummary]:
        """The tasks with a score: those with a finished run that did not diverge."""
        return {task: entry for task, entry in self.tasks.items() if entry.cell is not None}

    @property
    def glue_average(self) -> float:
        """The mean of the scored tasks' scores (mean or median over their seeds)."""
        return statistics.fmean(getattr(entry.cell.score, self.select) for entry in self.scored.values())

    def to_json(self) -> dict[str, Any]:
        """results.json."""
        return {"model": self.model["name"], "model_identity": self.model["identity"], "select": self.select,
                "tasks": {task: entry.to_json() for task, entry in self.tasks.items()},
                "restarted": sum(len(entry.selection.restarted) for entry in self.tasks.values()),
                "references": [{"model": reference.model, "about": reference.about, "source": reference.source}
                               for reference in self.references],
                "versions": [asdict(group) for group in self.versions],
                **({"glue_average": self.glue_average} if self.scored else {})}


def featurize_seconds(output_dir: str, task: str, max_seq_len: int) -> float:
    """Time spent building the features of ``task`` at ``max_seq_len`` the runs read (0 if none was recorded)."""
    return sum(sum(read_json(path).values()) for path in glob.glob(
        os.path.join(output_dir, "features", task, f"*-len{max_seq_len}", "featurize_seconds.json")))


def summarize_task(output_dir: str, chosen: Selection, references: tuple[Reference, ...]) -> TaskSummary:
    """One task's summary from its selection; its data is the chosen cell's first run's (benchmark.py refuses to
    mix data in one output folder, so the seeds share their data). The time spent counts the runs that diverged and
    those a restart replaced."""
    task, runs = chosen.task, chosen.cell.runs if chosen.cell else ()
    metrics = {f"{file}/{name}": Spread.of([100 * run.scored[file][name] for run in runs])
               for file in get_task(task).scored_files for name in official(task, runs[0].scored[file])} if runs else {}
    ended = [*chosen.runs, *chosen.restarted, *chosen.diverged]
    train = sum(run.wall_s for run in ended)
    lengths = {cell.settings["max_seq_len"] for cell in chosen.cells}
    return TaskSummary(
        chosen, metrics,
        {name: file for files in runs[0].results["data"].values() for name, file in files.items()} if runs else {},
        WallTime(sum(featurize_seconds(output_dir, task, length) for length in lengths), train, train / len(ended)),
        {reference.model: reference.score(task) for reference in references if task in reference.scores})


def versions_used(selections: list[Selection]) -> tuple[VersionGroup, ...]:
    """Each set of library versions the runs were made with, with the runs that used it: one set, unless an output
    folder was resumed after an upgrade."""
    groups: list[VersionGroup] = []
    for chosen in selections:
        several = len(chosen.cells) > 1
        for run in (*chosen.runs, *chosen.restarted):
            group = next((known for known in groups if known.versions == run.results["versions"]), None)
            if group is None:
                group = VersionGroup(run.results["versions"], [])
                groups.append(group)
            group.runs.append(f"{chosen.task} {run.cell + ' ' if several else ''}seed {run.seed}")
    return tuple(groups)


def summarize(output_dir: str, selections: dict[str, Optional[Selection]], model: dict[str, Any],
              references_path: str, rule: str = "mean") -> Summary:
    """The scoreboard of the tasks' selections (None: a task with no ended run, left out) made by ``model``
    (``run_record.recorded_model``)."""
    references = tuple(Reference(**reference)
                       for reference in (read_json(references_path) or {"references": []})["references"])
    chosen = [entry for entry in selections.values() if entry is not None]
    return Summary(model, rule, {entry.task: summarize_task(output_dir, entry, references) for entry in chosen},
                   references, versions_used(chosen))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _reported(score: Spread, rule: str) -> str:
    """A task's or a cell's score as reported: mean ± std, or the median with the mean ± std beside it."""
    if rule in ("median", "best"):
        return f"**{getattr(score, rule):.1f}** ({rule}; mean {score.plus_minus()})"
    return f"**{score.plus_minus()}**"


def markdown(summary: Summary) -> str:
    references = [reference.model for reference in summary.references]
    rule = summary.select
    lines = [f"# GLUE dev scores: {describe_model(summary.model)}", "",
             (f"Scores x100: {'median over seeds' if rule == 'median' else 'the best seed'}, with the mean ± "
              "standard deviation beside it" if rule != "mean" else "Scores x100: mean ± standard deviation over seeds")
             + "; a task with two metrics scores their mean (GLUE's rule), MNLI the mean of matched and mismatched.",
             "",
             "| task | metric | score | metrics | seeds | " + "".join(f"{name} | " for name in references)
             + "epochs | lr | batch | wall time (features + training) |",
             "|---" * (9 + len(references)) + "|"]
    for task, entry in summary.tasks.items():
        metrics = "<br>".join(f"{key.replace('.tsv', '').replace('dev/', '')} {value.plus_minus()}"
                              for key, value in entry.metrics.items()) if len(entry.metrics) > 1 else ""
        several = len(entry.selection.cells) > 1
        diverged = "".join(f"<br>{run.describe()}" + (f" ({run.cell})" if several else "")
                           for run in entry.selection.diverged)
        wall = entry.wall_s
        if entry.cell is None:
            reported, seeds, settings = "**no score**: every run diverged", f"0{diverged}", "– | – | –"
        else:
            score = entry.cell.score
            last = f"<br>last epoch {entry.cell.last_epoch.plus_minus()}" if entry.best_checkpoint else ""
            baseline = entry.selection.baseline
            reported = f"{_reported(score, rule)}{last}" + (f"<br>baseline ({baseline.kind}) "
                                                            f"{100 * baseline.score:.1f}" if baseline else "")
            seeds = f"{len(entry.cell.runs)}: {', '.join(f'{value:.1f}' for value in score.values)}{diverged}"
            chosen = entry.cell.settings
            settings = f"{chosen['epochs']} | {chosen['max_lr']:g} | {chosen['batch_size']}"
        lines.append(
            f"| {task} | {entry.metric} | {reported} | {metrics} | {seeds} | "
            + "".join(f"{entry.references[name]:.1f} | " if name in entry.references else "– | "
                      for name in references)
            + f"{settings} | {_duration(wall.featurize + wall.train)} ({_duration(wall.per_run)} a run) |")
    scored, unscored = summary.scored, [task for task in summary.tasks if task not in summary.scored]
    if scored:
        line = f"**GLUE average over {len(scored)} tasks ({', '.join(scored)}): {summary.glue_average:.1f}**"
        for name in references:
            published = [entry.references[name] for entry in scored.values() if name in entry.references]
            if len(published) == len(scored):
                line += f"; {name} on the same tasks: {statistics.fmean(published):.1f}"
        lines += ["", line]
    if unscored:
        lines += ["", f"No score for {', '.join(unscored)}: every run diverged (left out of the GLUE average)."]
    lines += grid_tables(summary)
    lines += degenerate_runs(summary)
    lines += provenance_table(summary)
    lines += ["", "References (published dev results, other training setups):"]
    lines += [f"- **{reference.model}**: {reference.about} Source: {reference.source}"
              for reference in summary.references]
    return "\n".join(lines) + "\n"


def _cell_settings(settings: dict[str, Any]) -> str:
    """``lr 5e-05, batch 16, 5 epochs, length 128``."""
    return (f"lr {settings['max_lr']:g}, batch {settings['batch_size']}, {settings['epochs']} "
            f"epoch{'s' if settings['epochs'] != 1 else ''}, length {settings['max_seq_len']}")


def grid_tables(summary: Summary) -> list[str]:
    """results.md's account of the choice: how a task's cell was chosen, the settings chosen, and per task a
    table of every cell of its grid (settings, each seed's dev score, mean ± std, median, last-epoch mean)."""
    if not summary.tasks:
        return []
    entries = summary.tasks.values()
    best = any(entry.best_checkpoint for entry in entries)
    chose = best or any(len(entry.selection.cells) > 1 for entry in entries)
    diverged = any(entry.selection.diverged for entry in entries)
    lines = ["", "## Settings chosen on dev", "",
             f"Each task's score is the cell of its grid (one per combination of the settings given, each over the "
             f"seeds) with the best {summary.select} dev score over its seeds"
             + ("; a run's dev score is its best validation (train.py's best checkpoint, epoch in brackets) where it "
                "kept one, else its last" if best else "") + "."
             + (" Choosing on the dev set that then scores the choice is optimistic (BERT chose its learning rates "
                "so, RoBERTa its reported dev scores): the last-epoch scores beside them are those of the same runs "
                "without choosing a checkpoint; on unseen data the chosen settings can be expected to score lower."
                if chose else "")
             + (" A run whose training diverged (a loss or weights not finite: train.py stopped it) is shown where it "
                "diverged and never scored: it counts in no mean, std or median, and a cell whose runs all diverged "
                "cannot be chosen." if diverged else ""),
             ""]
    lines += [f"- {task}: {_cell_settings(entry.cell.settings) if entry.cell else 'none, every run diverged'} "
              f"(of {len(entry.selection.cells)} {'cells' if len(entry.selection.cells) > 1 else 'cell'})"
              for task, entry in summary.tasks.items()]
    for task, entry in summary.tasks.items():
        lines += ["", f"| {task} cell | {' | '.join(CELL_KEYS.values())} | seeds: {entry.metric} | mean ± std | "
                  "median | last epoch |", "|---" * (len(CELL_KEYS) + 5) + "|"]
        for cell in entry.selection.cells:
            settings = cell.settings
            seeds = {run.seed: f"{run.seed}: {100 * run.score:.1f}"
                     + (f" ({run.best_epoch})" if run.best_epoch is not None else "") + _marks(cell, run)
                     for run in cell.finished}
            seeds.update({run.seed: f"{run.seed}: diverged at step {run.step}" for run in cell.diverged})
            name = f"**{cell.name}** (chosen)" if cell is entry.cell else cell.name
            spread = (f"{cell.score.plus_minus()} | {cell.score.median:.1f} | {cell.last_epoch.plus_minus()}"
                      if cell.score else "– | – | –")
            lines.append(f"| {name} | {settings['max_lr']:g} | {settings['batch_size']} | {settings['epochs']} | "
                         f"{settings['max_seq_len']} | {', '.join(seeds[seed] for seed in sorted(seeds))} | "
                         f"{spread} |")
    return lines


def _marks(cell: Cell, run: RunRecord) -> str:
    """What the grid table says of a run besides its score, in brackets: `` [restart of 43, degenerate: one class,
    restarted as seed 46]``; "" for a run it says nothing of."""
    restarted_as = cell.restarted_as(run)
    marks = [*([f"restart of {run.restart_of}"] if run.restart_of is not None else []),
             *([f"degenerate: {run.degenerate}"] if run.degenerate else []),
             *([f"restarted as seed {restarted_as}"] if restarted_as is not None else [])]
    return f" [{', '.join(marks)}]" if marks else ""


def degenerate_runs(summary: Summary) -> list[str]:
    """results.md's account of the degenerate runs, where a run kept the dev predictions to judge them: the rule,
    each task's trivial baseline with its degenerate runs named, and the runs restarted per task and in all."""
    judged = {task: entry for task, entry in summary.tasks.items() if entry.selection.baseline}
    if not judged:
        return []
    lines = ["", "## Degenerate runs", "",
             "A run is degenerate when its dev predictions (those of the validation it is scored by) are one class "
             "(STS-B: one value) on each dev file, or when its score is not above its task's trivial baseline: the "
             "best score one constant prediction gets on the same dev labels (the majority class for accuracy; "
             "STS-B's constant has no correlation, scored 0). A degenerate run is named and counts in its cell's "
             "mean, unless it was restarted (--restarts): its restart, the cell run again with the next unused "
             "seed, then counts in its place.", ""]
    for task, entry in judged.items():
        several = len(entry.selection.cells) > 1
        cells = {run.folder: cell for cell in entry.selection.cells for run in cell.finished}
        named = [f"seed {run.seed}" + (f" ({run.cell})" if several else "") + f" {run.degenerate}"
                 + (f", restarted as seed {cells[run.folder].restarted_as(run)}" if run in entry.selection.restarted
                    else "") for run in entry.selection.degenerate]
        lines.append(f"- {task} (baseline: {entry.selection.baseline.describe()}): {'; '.join(named) or 'none'}")
    restarted = {task: len(entry.selection.restarted) for task, entry in summary.tasks.items()
                 if entry.selection.restarted}
    total = sum(restarted.values())
    lines += ["", f"{total} run{'s' if total != 1 else ''} restarted (BERT's random restarts: a degenerate run run "
                  "again with another seed and replaced by it, an optimistic choice among seeds): "
                  + ", ".join(f"{task} {count}" for task, count in restarted.items()) + "."
              if total else "No run was restarted."]
    return lines


def provenance_table(summary: Summary) -> list[str]:
    """results.md's account of what the scores were made from: each task's files with their examples and SHA-256,
    and the library versions (with the runs of each set, when they differ)."""
    if not summary.tasks:
        return []
    # each file by its task folder and name: where it lay on the machine that ran is in results.json, and a
    # results.md shared or committed shows no machine's paths
    lines = ["", "Data: the files the features were made from (their folders and sizes in results.json):", "",
             "| task | file | examples | SHA-256 |", "|---|---|---|---|"]
    for task, entry in summary.tasks.items():
        for file in entry.data.values():
            folder, name = os.path.split(file["source"])
            lines.append(f"| {task} | {os.path.basename(folder)}/{name} | {file['examples']} | `{file['sha256']}` |")
    made = [(", ".join(f"{name} {version}" for name, version in group.versions.items()), group.runs)
            for group in summary.versions]
    if len(made) == 1:
        return [*lines, "", f"Made with {made[0][0]}."]
    return [*lines, "", "Made with different versions:",
            *(f"- {versions}: {', '.join(runs)}" for versions, runs in made)]


def chart(summary: Summary, path: str) -> None:
    """Scores per task (bar: mean or median, dots: seeds, marks: references), then per task the training-loss
    curves and the dev score after each epoch of the chosen cell's runs, one line per seed, and every cell of its
    grid (``grid_panel``); the tasks with a score only."""
    tasks = list(summary.scored)
    rule = summary.select
    figure = plt.figure(figsize=(max(8, 3.2 * len(tasks)), 13), layout="constrained")
    grid = figure.add_gridspec(4, len(tasks), height_ratios=[1.3, 1, 1, 1])
    scores = figure.add_subplot(grid[0, :])
    means = [getattr(summary.tasks[task].cell.score, rule) for task in tasks]
    errors = [summary.tasks[task].cell.score.std or 0.0 for task in tasks]
    bars = scores.bar(range(len(tasks)), means, yerr=errors, capsize=4, color="#7aa6d6",
                      label=f"{rule} ± std over seeds" if rule == "mean" else f"{rule} over seeds (± std)")
    scores.bar_label(bars, labels=[f"{mean:.1f}" for mean in means], label_type="center")
    baselined = degenerated = False
    for position, task in enumerate(tasks):
        cell, baseline = summary.tasks[task].cell, summary.tasks[task].selection.baseline
        values = [100 * run.score for run in cell.runs if not run.degenerate]
        scores.scatter([position] * len(values), values, color="black", s=12, zorder=3,
                       label="one seed" if position == 0 else None)
        collapsed = [100 * run.score for run in cell.finished if run.degenerate]
        if collapsed:
            scores.scatter([position] * len(collapsed), collapsed, color="red", marker="x", s=40, zorder=4,
                           label=None if degenerated else "degenerate seed")
            degenerated = True
        if baseline:
            scores.hlines(100 * baseline.score, position - 0.4, position + 0.4, colors="dimgray", linestyles="--",
                          zorder=3, label=None if baselined else "trivial baseline (a constant prediction)")
            baselined = True
    for number, reference in enumerate(summary.references):
        marked = [(position, summary.tasks[task].references[reference.model])
                  for position, task in enumerate(tasks) if reference.model in summary.tasks[task].references]
        if marked:
            scores.scatter(*zip(*marked), marker=["_", "x", "+"][number % 3], s=400 if number % 3 == 0 else 60,
                           color=f"C{number + 1}", zorder=4, label=f"{reference.model} (published)")
    scores.set_xticks(range(len(tasks)), [f"{task}\n{summary.tasks[task].metric}" for task in tasks])
    scores.set_ylabel("dev score x100")
    scores.set_title(f"{summary.model['name']}: GLUE dev (average {summary.glue_average:.1f})")
    scores.set_ylim(min(0.0, *means) - 5, 105)
    scores.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for column, task in enumerate(tasks):
        entry = summary.tasks[task]
        loss = figure.add_subplot(grid[1, column])
        dev = figure.add_subplot(grid[2, column])
        grid_panel(figure.add_subplot(grid[3, column]), entry, rule)
        for run in entry.cell.runs:
            points = run.history["train"]
            loss.plot([point["step"] for point in points], [point["loss"] for point in points], linewidth=0.8,
                      label=f"seed {run.seed}")
            for key in get_task(task).scored_files:
                validations = run.history[key]
                dev.plot([point["epoch"] for point in validations],
                         [100 * file_score(task, point) for point in validations], marker="o", markersize=3,
                         label=f"seed {run.seed}" + (f" {key.replace('.tsv', '')}" if key != "dev.tsv" else ""))
        loss.set_title(f"{task}: training loss" + (" (chosen cell)" if len(entry.selection.cells) > 1 else ""),
                       fontsize="medium")
        loss.set_xlabel("optimizer step")
        dev.set_title(f"{task}: dev {entry.metric} x100", fontsize="medium")
        dev.set_xlabel("epoch")
        dev.set_xticks(range(1, entry.cell.settings["epochs"] + 1))
        dev.legend(fontsize="x-small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def grid_panel(axes: Any, entry: TaskSummary, rule: str) -> None:
    """Every cell of a task's grid with a score: its score (mean or median) against its learning rate, one line per
    combination of the other settings, a dot per seed, the chosen cell ringed; the cells whose runs all diverged
    counted in the title."""
    scored = [cell for cell in entry.selection.cells if cell.score is not None]
    lines: dict[tuple[Any, ...], list[Cell]] = {}
    for cell in scored:
        lines.setdefault(tuple(cell.settings[key] for key in ("batch_size", "epochs", "max_seq_len")), []).append(cell)
    for number, ((batch, epochs, length), cells) in enumerate(lines.items()):
        cells = sorted(cells, key=lambda cell: cell.settings["max_lr"])
        axes.plot([cell.settings["max_lr"] for cell in cells], [getattr(cell.score, rule) for cell in cells],
                  marker="o", color=f"C{number}", label=f"batch {batch}, {epochs} ep, len {length}")
        for cell in cells:
            values = cell.score.values
            axes.scatter([cell.settings["max_lr"]] * len(values), values, color=f"C{number}", s=10, alpha=0.5)
    axes.scatter([entry.cell.settings["max_lr"]], [getattr(entry.cell.score, rule)], s=160, facecolors="none",
                 edgecolors="black", zorder=4)
    rates = sorted({cell.settings["max_lr"] for cell in scored})
    if len(rates) > 1:
        axes.set_xscale("log")
    axes.set_xticks(rates, [f"{rate:g}" for rate in rates], fontsize="x-small")
    axes.minorticks_off()
    axes.set_xlabel("peak learning rate")
    axes.set_ylabel(f"{rule} dev x100 (dots: seeds)", fontsize="small")
    count = len(entry.selection.cells)
    diverged = f", {count - len(scored)} diverged" if len(scored) < count else ""
    axes.set_title(f"{entry.selection.task}: {count} {'cells' if count > 1 else 'cell'}{diverged}, chosen ringed",
                   fontsize="medium")
    if len(lines) > 1:
        axes.legend(fontsize="x-small")


@dataclass(frozen=True)
class Report:
    """A report's files in a folder, ``<stem>.json``, ``.md`` and ``.png``, and how its own are told from others':
    the JSON's keys and the markdown's first line. The benchmark replaces only its own (``require_own_files``)."""

    stem: str
    keys: frozenset[str]
    title: str  # the markdown's first line begins so
    what: str
    option: str  # the option naming the folder

    def paths(self, folder: str) -> dict[str, str]:
        return {kind: os.path.join(folder, f"{self.stem}.{kind}") for kind in ("json", "md", "png")}

    def require_own_files(self, folder: str) -> None:
        """The report's files in ``folder`` are replaced only where they are its own: refused, in one line naming
        the file, where one is not (a train.py run's results.json, a markdown file of the user's, a chart without
        the report's JSON beside it). Before any work: nothing else is read that way."""
        found = {kind: path for kind, path in self.paths(folder).items() if os.path.lexists(path)}
        for kind, path in found.items():
            if not os.path.isfile(path):
                why = "not a file"
            elif kind == "json":
                why = self._not_own_json(path)
            elif kind == "md":
                with open(path, "rb") as stream:
                    title = self.title.encode()
                    why = None if stream.read(len(title)) == title else f"no {self.title.strip()!r} title"
            else:
                why = None if "json" in found else f"no {self.what}'s {self.stem}.json beside it"
            if why:
                raise ValueError(f"{path}: not a {self.what}'s ({why}), and benchmark.py replaces only its own "
                                 f"files: choose another {self.option}, or move that file away")

    def _not_own_json(self, path: str) -> Optional[str]:
        """Why the JSON file at ``path`` is not one this report wrote; None if it is one."""
        try:
            content = read_json(path)
        except ValueError:  # not UTF-8, not JSON, or JSON with NaN
            return "not strict JSON"
        if isinstance(content, dict) and self.keys <= content.keys():
            return None
        if isinstance(content, dict) and "task" in content:
            return f"a train.py run's results, of {content['task']}"
        return f"no {', '.join(sorted(self.keys))}"


SCOREBOARD = Report("results", frozenset({"model", "select", "tasks", "references", "versions"}),
                    "# GLUE dev scores: ", "benchmark scoreboard", "--bench.output_dir")


def folder_summary(output_dir: str, tasks: list[str], references_path: str, rule: str = "mean") -> Summary:
    """The scoreboard of ``tasks`` in ``output_dir`` (``summarize``), titled with the model its runs recorded
    (``run_record.recorded_model``); refused, in one line, where no run was recorded there."""
    model = recorded_model(output_dir)
    if model is None:
        raise ValueError(f"{output_dir}: no benchmark run recorded there (runs/<Task>/<cell>/seed<N>/), nothing to "
                         "score")
    return summarize(output_dir, {task: select(output_dir, task, rule) for task in tasks}, model, references_path,
                     rule)


def write(output_dir: str, summary: Summary) -> dict[str, str]:
    """Write results.json, results.md and results.png (when a task has a score) of ``summary`` into ``output_dir``;
    their paths. Refused, in one line, where a results file there is not a scoreboard's
    (``Report.require_own_files``)."""
    SCOREBOARD.require_own_files(output_dir)
    paths = SCOREBOARD.paths(output_dir)
    write_json(paths["json"], summary.to_json())
    with atomic_path(paths["md"]) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(markdown(summary))
    if summary.scored:
        chart(summary, paths["png"])
    else:  # an earlier chart (require_own_files: the scoreboard's) would show scores this one has not
        if os.path.exists(paths["png"]):
            os.remove(paths["png"])
        paths.pop("png")
    return paths
