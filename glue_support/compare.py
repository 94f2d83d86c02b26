"""``benchmark.py --compare A,B,...``: is each model better than the baseline ``A`` on each GLUE task, and overall?

Each folder's tasks are read through the one selection (``selection.select``); a task's score is its selected cell's,
and the difference is recomputed from the dev predictions its runs kept (train.py's ``dev_predictions.json``).
The interval is a percentile bootstrap (scipy.stats.bootstrap) of three independent samples: each side's seeds, and
the dev examples, drawn once for both sides (paired); the task's metric is recomputed on every resample.
"""
from __future__ import annotations

import os
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import glue_metrics
from glue_processors import TASKS, get_task
from glue_support.atomic_write import atomic_path, write_json
from glue_support.exit_codes import ConfigError
from glue_support.path_checks import require_folder
from glue_support.run_record import RunRecord, describe_model, kept_predictions, record_folders, recorded_model
from glue_support.scoreboard import Report, plt
from glue_support.selection import Cell, select

N_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Side:
    """One folder's selected cell of a task, with the dev predictions of each of its runs (by file)."""

    folder: str
    cell: Cell
    predictions: tuple[dict[str, dict[str, list]], ...]


@dataclass(frozen=True)
class Difference:
    """A model's score minus the baseline's, x100, its interval, and the bootstrap distribution it came from."""

    value: float
    low: float
    high: float
    distribution: np.ndarray

    @property
    def verdict(self) -> str:
        return "better" if self.low > 0 else "worse" if self.high < 0 else "cannot tell"


def dev_data(runs: tuple[RunRecord, ...]) -> dict[str, str]:
    """The dev files the runs validated on, by name, with their SHA-256; refused where two runs' differ."""
    found = {name: source["sha256"] for name, source in runs[0].results["data"]["valpath"].items()}
    for run in runs[1:]:
        if {name: source["sha256"] for name, source in run.results["data"]["valpath"].items()} != found:
            raise ValueError(f"{run.folder}: other dev data than {runs[0].folder}; a cell's runs validate on one")
    return found


def side(folder: str, task: str, rule: str) -> Optional[Side]:
    """``task``'s selected cell in ``folder`` with its runs' predictions; None where no run of it finished."""
    chosen = select(folder, task, rule)
    if chosen is None or chosen.cell is None:
        return None
    return Side(folder, chosen.cell, tuple(kept_predictions(run) for run in chosen.cell.runs))


def check_same_data(task: str, base: Side, other: Side) -> None:
    """Refused in one line where the two sides' dev data differ or have no dev file of the task in common."""
    ours, theirs = dev_data(base.cell.runs), dev_data(other.cell.runs)
    files = get_task(task).scored_files
    missing = [file for file in files if file not in ours or file not in theirs]
    if missing:
        raise ValueError(f"{other.folder}: no common {task} dev file {', '.join(missing)} with {base.folder}: "
                         "nothing to compare on")
    for file in files:
        if ours[file] != theirs[file]:
            raise ValueError(f"{other.folder}: other {task} dev data than {base.folder} ({file} sha256 "
                             f"{ours[file][:12]} -> {theirs[file][:12]}); a comparison needs the same examples")
    for predictions in (*base.predictions, *other.predictions):
        for file in files:
            if predictions[file]["index"] != base.predictions[0][file]["index"]:
                raise ValueError(f"{other.folder}: {task} {file} predictions of other examples than "
                                 f"{base.folder}'s; a comparison needs the same examples")


def difference(task: str, base: Side, other: Side, seed: int) -> Difference:
    """``other``'s GLUE score minus ``base``'s, x100, each the mean over its cell's runs, with a percentile bootstrap
    interval (scipy.stats.bootstrap): each side's runs and the dev examples (one draw for both sides) resampled
    independently, the task's metric recomputed on each resample. A side of one run adds no seed spread."""
    from scipy.stats import bootstrap  # here: the scoreboard and --help start without scipy

    files = get_task(task).scored_files
    labels = {file: np.asarray(base.predictions[0][file]["label"]) for file in files}
    preds = [{file: np.asarray([run[file]["prediction"] for run in found.predictions]) for file in files}
             for found in (base, other)]

    def mean_score(side_preds: dict[str, np.ndarray], runs: np.ndarray, examples: list[np.ndarray]) -> float:
        scores = {}
        for run in np.unique(runs):
            results = {file: glue_metrics.compute(task, labels[file][positions], side_preds[file][run][positions])
                       for file, positions in zip(files, examples)}
            scores[run] = glue_metrics.glue_score(task, results)
        return statistics.fmean(scores[run] for run in runs)

    run_samples = [np.arange(len(found.predictions)) for found in (base, other)]
    resampled = [index for index, runs in enumerate(run_samples) if len(runs) > 1]
    samples = [*(run_samples[index] for index in resampled), *(np.arange(len(labels[file])) for file in files)]

    def statistic(*drawn: np.ndarray) -> float:
        runs = list(run_samples)
        for index, draw in zip(resampled, drawn):
            runs[index] = draw
        examples = list(drawn[len(resampled):])
        with warnings.catch_warnings():  # a resample of one class: the metric's defined value, warned each time
            warnings.simplefilter("ignore", RuntimeWarning)
            return 100 * (mean_score(preds[1], runs[1], examples) - mean_score(preds[0], runs[0], examples))

    found = bootstrap(samples, statistic, n_resamples=N_RESAMPLES, vectorized=False, paired=False,
                      confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return Difference(statistic(*samples), float(found.confidence_interval.low),
                      float(found.confidence_interval.high), np.asarray(found.bootstrap_distribution))


def average(differences: list[Difference]) -> Difference:
    """The mean of independent tasks' differences: its bootstrap distribution is the mean of theirs, resample by
    resample (each task resampled with its own generator), and its interval that distribution's percentiles."""
    distribution = np.mean([found.distribution for found in differences], axis=0)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(distribution, [tail, 100 - tail])
    return Difference(statistics.fmean(found.value for found in differences), float(low), float(high), distribution)


def folder_tasks(folder: str) -> list[str]:
    """The tasks with a run recorded in ``folder``, in the task table's order."""
    found = {os.path.normpath(path).split(os.sep)[-3] for path in record_folders(folder)}
    return [spec.name for spec in TASKS.values() if spec.name in found]


def spread(cell: Cell) -> str:
    """``58.1 ± 2.3``, and how many of the cell's counted runs are degenerate (``run_record.judge``) where any is."""
    return cell.score.plus_minus() + (f" ({len(cell.degenerate)} of {len(cell.runs)} degenerate)"
                                      if cell.degenerate else "")


def trivial_baselines(found: dict[str, Any]) -> dict[str, str]:
    """Each compared task's trivial baseline on its dev labels (the same for every side: their dev data are one),
    described: ``majority class 52.7``."""
    return {row["task"]: row["base"].cell.runs[0].baseline.describe() for row in found["rows"]
            if row["base"].cell.runs[0].baseline is not None}


def compare(folders: list[str], rule: str = "mean") -> dict[str, Any]:
    """Every folder's tasks against the first's (the baseline): per task and model its selected score, its
    difference from the baseline with its interval and verdict; per model the GLUE average over the tasks it shares
    with the baseline; the tasks only some folders have. Refused in one line before any resampling where the dev
    data differ, or a run kept no predictions."""
    if len(folders) < 2:
        raise ConfigError(f"--bench.compare {','.join(folders)}: give two benchmark output folders or more, "
                          "comma-separated, the baseline first")
    for folder in folders:
        require_folder("--bench.compare", folder, "a benchmark's output folder, with its runs/")
    tasks = {folder: folder_tasks(folder) for folder in folders}
    common = {folder: [task for task in tasks[folders[0]] if task in tasks[folder]] for folder in folders[1:]}
    sides = {(folder, task): side(folder, task, rule) for folder in folders for task in tasks[folder]}
    for folder in folders[1:]:
        for task in common[folder]:
            if sides[folders[0], task] and sides[folder, task]:
                check_same_data(task, sides[folders[0], task], sides[folder, task])
    rows, averages = [], {}
    for number, folder in enumerate(folders[1:]):
        differences = []
        for task in common[folder]:
            base, other = sides[folders[0], task], sides[folder, task]
            if base is None or other is None:
                continue
            found = difference(task, base, other, seed=1000 * number + len(rows))
            differences.append(found)
            rows.append({"task": task, "folder": folder, "found": found, "base": base, "other": other})
        if differences:
            averages[folder] = (len(differences), average(differences))
    only = {task: [folder for folder in folders if task in tasks[folder]]
            for task in dict.fromkeys(task for folder in folders for task in tasks[folder])
            if not all(task in tasks[folder] for folder in folders)}
    return {"baseline": folders[0], "models": {folder: recorded_model(folder) for folder in folders}, "rows": rows,
            "averages": averages, "only": only}


def markdown(found: dict[str, Any]) -> str:
    """The comparison as markdown: which model each folder holds, a table of tasks x models, the GLUE averages and
    the tasks not compared."""
    baseline = found["baseline"]
    lines = [f"{COMPARISON.title}{', '.join(found['models'])}", "",
             *(f"- {folder}: {describe_model(model)}" + (" (the baseline)" if folder == baseline else "")
               for folder, model in found["models"].items()), "",
             f"Scores x100 at each task's selected cell: mean ± std over its seeds (last epoch beside it); difference "
             f"from the baseline with its {CONFIDENCE:.0%} bootstrap interval over the dev examples (paired) and the "
             "seeds: better or worse where the interval excludes 0. A degenerate run (one class, or not above the "
             "task's trivial baseline: the best constant prediction) counts in its mean, and is counted beside it.",
             "",
             "| task | model | score | last epoch | baseline | difference | interval | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for row in found["rows"]:
        base, other, difference = row["base"], row["other"], row["found"]
        lines.append(f"| {row['task']} | {row['folder']} | {spread(other.cell)} | {other.cell.last_epoch.mean:.1f} | "
                     f"{spread(base.cell)} | {difference.value:+.1f} | [{difference.low:+.1f}, {difference.high:+.1f}] "
                     f"| {difference.verdict} |")
    for folder, (count, difference) in found["averages"].items():
        lines.append(f"| GLUE average ({count} tasks) | {folder} | | | | {difference.value:+.1f} | "
                     f"[{difference.low:+.1f}, {difference.high:+.1f}] | {difference.verdict} |")
    baselines = trivial_baselines(found)
    if baselines:
        lines += ["", "Trivial baselines: " + "; ".join(f"{task} {text}" for task, text in baselines.items()) + "."]
    for task, folders in found["only"].items():
        lines.append(f"\n{task}: only in {', '.join(folders)}, not compared")
    return "\n".join(lines) + "\n"


def to_json(found: dict[str, Any]) -> dict[str, Any]:
    """The comparison as comparison.json records it (x100, as the table)."""

    def interval(difference: Difference) -> dict[str, Any]:
        return {"difference": difference.value, "low": difference.low, "high": difference.high,
                "verdict": difference.verdict}

    return {"baseline": found["baseline"], "models": found["models"], "confidence": CONFIDENCE,
            "resamples": N_RESAMPLES,
            "rows": [{"task": row["task"], "folder": row["folder"], "cell": row["other"].cell.name,
                      "score": row["other"].cell.score.to_json(), "last_epoch": row["other"].cell.last_epoch.to_json(),
                      "degenerate": [run.seed for run in row["other"].cell.degenerate],
                      "baseline_cell": row["base"].cell.name, "baseline_score": row["base"].cell.score.to_json(),
                      "baseline_degenerate": [run.seed for run in row["base"].cell.degenerate],
                      **interval(row["found"])}
                     for row in found["rows"]],
            "trivial_baselines": {task: row["base"].cell.runs[0].baseline.to_json() for task, row in
                                  {row["task"]: row for row in found["rows"]}.items()
                                  if row["base"].cell.runs[0].baseline is not None},
            "averages": {folder: {"tasks": count, **interval(difference)}
                         for folder, (count, difference) in found["averages"].items()},
            "only": found["only"]}


def chart(found: dict[str, Any], path: str) -> None:
    """Left, each task's selected score per model (a bar at the mean, a dot per seed, degenerate seeds a red x, the
    task's trivial baseline dashed); right, each model's difference from the baseline with its interval and
    verdict, per task and for the GLUE average, 0 marked."""
    folders, tasks = list(found["models"]), list(dict.fromkeys(row["task"] for row in found["rows"]))
    cells, differences = {}, {}
    for row in found["rows"]:
        cells[row["task"], found["baseline"]] = row["base"].cell
        cells[row["task"], row["folder"]] = row["other"].cell
        differences[row["task"], row["folder"]] = row["found"]
    for folder, (_, difference) in found["averages"].items():
        differences["GLUE average", folder] = difference
    width = 0.8 / len(folders)
    labels: set[str] = set()

    def once(label: str) -> Optional[str]:  # each legend entry once
        return None if label in labels or labels.add(label) else label

    def height(line: int, number: int) -> float:  # the first task on top, the models top to bottom within it
        return len(tasks) - 1 - line + ((len(folders) - 1) / 2 - number) * width

    figure, (left, right) = plt.subplots(1, 2, sharey=True, figsize=(13, 1.5 + 0.6 * (len(tasks) + 1) * len(folders)),
                                         layout="constrained")
    for number, folder in enumerate(folders):
        for line, task in enumerate(tasks):
            if (task, folder) not in cells:
                continue
            cell, y = cells[task, folder], height(line, number)
            left.barh([y], [cell.score.mean], height=width, color=f"C{number}", alpha=0.5,
                      label=once(folder + (" (baseline)" if not number else "")))
            for degenerate in (False, True):
                scores = [100 * run.score for run in cell.runs if bool(run.degenerate) == degenerate]
                left.scatter(scores, [y] * len(scores), zorder=3, **(
                    {"color": "red", "marker": "x", "s": 30, "label": once("degenerate seed") if scores else None}
                    if degenerate else {"color": f"C{number}", "s": 14}))
        for line, task in enumerate([*tasks, "GLUE average"]):
            difference = differences.get((task, folder))
            if difference is None:
                continue
            y = height(line, number)
            right.errorbar([difference.value], [y], xerr=[[difference.value - difference.low],
                           [difference.high - difference.value]], fmt="o", color=f"C{number}", capsize=4)
            right.annotate(difference.verdict, (difference.high, y), xytext=(6, -3), textcoords="offset points",
                           fontsize="small")
    for line, task in enumerate(tasks):
        baseline = cells[task, found["baseline"]].runs[0].baseline
        if baseline is not None:
            middle = len(tasks) - 1 - line
            left.vlines(100 * baseline.score, middle - 0.45, middle + 0.45, colors="black", linestyles="dashed",
                        label=once("trivial baseline"))
    left.set_yticks(range(-1, len(tasks)), ["GLUE average", *tasks[::-1]])
    left.set_xlabel("dev score x100 (bar: mean over seeds, dots: seeds)")
    left.legend(fontsize="small", loc="lower left")
    right.axvline(0, color="black", linewidth=0.8)
    right.margins(x=0.25)  # room for the verdicts
    right.set_xlabel(f"difference from the baseline x100, {CONFIDENCE:.0%} interval over dev examples and seeds")
    figure.suptitle(f"Model comparison, baseline {found['baseline']}")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


COMPARISON = Report("comparison", frozenset({"baseline", "models", "rows", "averages"}), "# Model comparison: ",
                    "model comparison", "--bench.compare_dir")


def write(found: dict[str, Any], folder: str) -> dict[str, str]:
    """comparison.md, comparison.json and comparison.png (where a task was compared) into ``folder``, replacing
    only an earlier comparison's (``Report.require_own_files``); their paths."""
    COMPARISON.require_own_files(folder)
    paths = COMPARISON.paths(folder)
    write_json(paths["json"], to_json(found))
    with atomic_path(paths["md"]) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(markdown(found))
    if found["rows"]:
        chart(found, paths["png"])
    else:  # an earlier chart would show differences this comparison has not
        if os.path.exists(paths["png"]):
            os.remove(paths["png"])
        paths.pop("png")
    return paths
