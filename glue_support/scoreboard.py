"""benchmark.py's finished runs -> ``results.json``, ``results.md`` and ``results.png`` in its output folder.

Scores are x100, as GLUE reports them. A task's score is its official metric; where GLUE reports two (MRPC and
QQP: F1 and accuracy; STS-B: Pearson and Spearman) it is their mean, as on the GLUE leaderboard, and a task with
several dev files (MNLI matched and mismatched) scores the mean over them. Each task shows the mean and sample
standard deviation over its seeds, and the GLUE average is the mean of the task means over the tasks run.

A task's runs form a grid: one cell per combination of settings (``runs/<Task>/<cell>/seed<N>/``), each over the
seeds. A run's dev score is its best validation where train.py kept one (``best`` in its results.json), else its
last; each task reports the cell with the best mean (``select="median"``: median, and the GLUE average of the
medians) of its runs' dev scores, and every cell beside it. Beside the scores stands what they were made from, as
the runs' results.json record it: each task's files (folder, SHA-256, examples) and the library versions.
"""
from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from glue_processors import get_task  # noqa: E402
from glue_support.atomic_write import atomic_path, write_json  # noqa: E402

CELL_KEYS = {"max_lr": "lr", "batch_size": "batch", "epochs": "epochs", "max_seq_len": "length"}  # a cell's settings
METRIC_NAMES = {"matthews_correlation": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson",
                "spearmanr": "Spearman"}


def read_json(path: str) -> Optional[dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def file_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The official metrics of one validation file's result (results.json), without loss and bookkeeping."""
    return {name: value for name, value in result.items() if name in METRIC_NAMES}


def file_score(result: dict[str, Any]) -> float:
    return statistics.fmean(file_metrics(result).values())


def dev_files(results: dict[str, Any]) -> list[str]:
    """The validation files of a run's results.json: its values that hold official metrics (``data`` and
    ``versions`` are dicts too, so being a dict is not enough)."""
    return sorted(key for key, value in results.items() if isinstance(value, dict) and file_metrics(value))


def run_score(folder: str, task: str) -> tuple[float, float]:
    """The task score of one finished run, 0-1 (mean over its dev files): at the validation it is scored by
    (``dev_score``: its best, where train.py kept one), and at its last."""
    results = read_json(os.path.join(folder, "results.json"))
    if results is None or results.get("task") != task:
        raise FileNotFoundError(f"{folder}: no results.json of a {task} run")
    return dev_score(results) / 100, last_score(results) / 100


def last_score(results: dict[str, Any]) -> float:
    """A run's task score x100 at its last validation (its results.json's dev files; or at ``best``, given it)."""
    return 100 * statistics.fmean(file_score(results[key]) for key in dev_files(results))


def scored(results: dict[str, Any]) -> dict[str, Any]:
    """The validation a run is scored by: its best (``best``: train.py's best checkpoint, with each dev file's
    metrics) where it kept one, else its last (the results' own dev files)."""
    best = results.get("best")
    return best if isinstance(best, dict) and dev_files(best) else results


def dev_score(results: dict[str, Any]) -> float:
    """A run's dev score x100, by which cells are chosen: the task score, by this module's rule, of its best
    validation where train.py kept one (``best`` always holds that validation's per-file metrics), else of its
    last."""
    return last_score(scored(results))


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "median": statistics.median(values), "values": values}


def collect(output_dir: str, task: str) -> list[dict[str, Any]]:
    """The finished runs of one task, by cell (its folder: ``runs/<Task>/<cell>/``) and seed: record, results and
    history."""
    runs = []
    for record_path in glob.glob(os.path.join(output_dir, "runs", task, "*", "seed*", "benchmark_run.json")):
        folder = os.path.dirname(record_path)
        record = read_json(record_path)
        if record["status"] != "done":
            continue
        runs.append({"cell": os.path.basename(os.path.dirname(folder)), "seed": record["settings"]["seed"],
                     "record": record, "results": read_json(os.path.join(folder, "results.json")),
                     "history": read_json(os.path.join(folder, "history.json")) or {"train": []}})
    return sorted(runs, key=lambda run: (*(run["record"]["settings"].get(key, 0) for key in CELL_KEYS), run["cell"],
                                         run["seed"]))


def cell_settings(run: dict[str, Any]) -> dict[str, Any]:
    """What makes runs one cell: their recorded settings but the task, the seed and the data (in ``data``)."""
    return {key: value for key, value in run["record"]["settings"].items() if key not in ("task", "seed", "data")}


def cell_groups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task's runs by cell, in ``collect``'s order: each with its name (the folder), settings and runs. Runs
    with other settings than their folder's (copied in by hand: benchmark.py refuses to mix) form a cell of their
    own, named with a number, rather than join it."""
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = json.dumps(cell_settings(run), sort_keys=True)
        if key not in groups:
            taken = sum(group["folder"] == run["cell"] for group in groups.values())
            groups[key] = {"name": run["cell"] + (f" #{taken + 1}" if taken else ""), "folder": run["cell"],
                           "settings": cell_settings(run), "runs": []}
        groups[key]["runs"].append(run)
    return list(groups.values())


def summarize_cell(group: dict[str, Any]) -> dict[str, Any]:
    """One cell in results.json: its settings, each run's dev score (and last-validation score, and the epoch of
    its best validation where it kept one), their mean, std and median."""
    runs = [{"seed": run["seed"], "score": dev_score(run["results"]), "last_epoch": last_score(run["results"]),
             "best_epoch": (run["results"].get("best") or {}).get("epoch")} for run in group["runs"]]
    return {"name": group["name"], "settings": group["settings"], "runs": runs,
            "score": mean_std([run["score"] for run in runs]),
            "last_epoch": mean_std([run["last_epoch"] for run in runs])}


def select_cell(cells: list[dict[str, Any]], select: str = "mean") -> dict[str, Any]:
    """The cell with the best mean (``select="median"``: median) dev score over its seeds; the first of equals."""
    return max(cells, key=lambda cell: cell["score"][select])


def collect_all(output_dir: str, tasks: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every task's finished runs, read once for both the tables and the chart."""
    return {task: collect(output_dir, task) for task in tasks}


def featurize_seconds(output_dir: str, task: str, settings: dict[str, Any]) -> float:
    """Time spent building the features the runs read (0 if none was recorded)."""
    total = 0.0
    for path in glob.glob(os.path.join(output_dir, "features", task, f"*-len{settings['max_seq_len']}",
                                       "featurize_seconds.json")):
        total += sum((read_json(path) or {}).values())
    return total


def task_data(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The files a task's runs were made from, by file (training first): source path, size, SHA-256 and examples,
    as results.json records them; None for runs from before it did. benchmark.py refuses to mix data in one
    output folder, so the seeds share their data and the first one's stands for all."""
    data = runs[0]["results"].get("data")
    return None if data is None else {name: file for files in data.values() for name, file in files.items()}


def versions_used(runs_by_task: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each set of library versions the runs were made with, with the runs that used it: one set, unless an output
    folder was resumed after an upgrade (``versions`` None: runs from before results.json recorded them). A run is
    named by its task and seed, and its cell where the task has several."""
    groups: list[dict[str, Any]] = []
    for task, runs in runs_by_task.items():
        several = len({run["cell"] for run in runs}) > 1
        for run in runs:
            versions = run["results"].get("versions")
            group = next((known for known in groups if known["versions"] == versions), None)
            if group is None:
                group = {"versions": versions, "runs": []}
                groups.append(group)
            group["runs"].append(f"{task} {run['cell'] + ' ' if several else ''}seed {run['seed']}")
    return groups


def reference_score(scores: Any) -> float:
    return statistics.fmean(scores.values()) if isinstance(scores, dict) else float(scores)


def summarize(output_dir: str, runs_by_task: dict[str, list[dict[str, Any]]], model: str,
              references_path: str, select: str = "mean") -> dict[str, Any]:
    """results.json's content: per task the chosen cell's (``select_cell``) seeds, scores and metrics, settings and
    data, every cell of the grid (``cells``, and the ``selected`` one's name), the wall time of all its runs,
    references; the library versions of the runs."""
    references = (read_json(references_path) or {"references": []})["references"]
    summary: dict[str, Any] = {"model": model, "select": select, "tasks": {}, "references": [
        {key: reference[key] for key in ("model", "about", "source")} for reference in references],
        "versions": versions_used(runs_by_task)}
    for task, all_runs in runs_by_task.items():
        if not all_runs:
            continue
        groups = cell_groups(all_runs)
        cells = [summarize_cell(group) for group in groups]
        chosen = select_cell(cells, select)
        runs = groups[cells.index(chosen)]["runs"]
        files = dev_files(scored(runs[0]["results"]))
        metrics = {f"{key}/{name}": mean_std([100 * scored(run["results"])[key][name] for run in runs])
                   for key in files for name in file_metrics(scored(runs[0]["results"])[key])}
        train_seconds = sum(run["record"]["wall_s"] for run in all_runs)
        lengths = {group["settings"]["max_seq_len"] for group in groups}
        summary["tasks"][task] = {
            "metric": get_task(task).metric_label, "score": chosen["score"], "metrics": metrics,
            "last_epoch": chosen["last_epoch"], "best_checkpoint": any("best" in run["results"] for run in runs),
            "seeds": [run["seed"] for run in runs], "settings": chosen["settings"], "data": task_data(runs),
            "wall_s": {"featurize": sum(featurize_seconds(output_dir, task, {"max_seq_len": length})
                                        for length in lengths), "train": train_seconds,
                       "per_run": train_seconds / len(all_runs)},
            "references": {reference["model"]: reference_score(reference["scores"][task])
                           for reference in references if task in reference["scores"]},
            "selected": chosen["name"], "cells": cells,
        }
    if summary["tasks"]:
        summary["glue_average"] = statistics.fmean(entry["score"][select] for entry in summary["tasks"].values())
    return summary


def _plus_minus(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry["std"] is not None else "")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _reported(score: dict[str, Any], select: str) -> str:
    """A task's or a cell's score as reported: mean ± std, or the median with the mean ± std beside it."""
    if select == "median":
        return f"**{score['median']:.1f}** (median; mean {_plus_minus(score)})"
    return f"**{_plus_minus(score)}**"


def markdown(summary: dict[str, Any]) -> str:
    references = [reference["model"] for reference in summary["references"]]
    select = summary["select"]
    lines = [f"# GLUE dev scores: {summary['model']}", "",
             ("Scores x100: median over seeds, with the mean ± standard deviation beside it" if select == "median"
              else "Scores x100: mean ± standard deviation over seeds")
             + "; a task with two metrics scores their mean (GLUE's rule), MNLI the mean of matched and mismatched.",
             "",
             "| task | metric | score | metrics | seeds | " + "".join(f"{name} | " for name in references)
             + "epochs | lr | batch | wall time (features + training) |",
             "|---" * (9 + len(references)) + "|"]
    for task, entry in summary["tasks"].items():
        metrics = "<br>".join(f"{key.replace('.tsv', '').replace('dev/', '')} {_plus_minus(value)}"
                              for key, value in entry["metrics"].items()) if len(entry["metrics"]) > 1 else ""
        per_seed = ", ".join(f"{value:.1f}" for value in entry["score"]["values"])
        settings = entry["settings"]
        wall = entry["wall_s"]
        last = f"<br>last epoch {_plus_minus(entry['last_epoch'])}" if entry["best_checkpoint"] else ""
        lines.append(
            f"| {task} | {entry['metric']} | {_reported(entry['score'], select)}{last} | {metrics} | "
            f"{len(entry['seeds'])}: {per_seed} | "
            + "".join(f"{entry['references'][name]:.1f} | " if name in entry["references"] else "– | "
                      for name in references)
            + f"{settings['epochs']} | {settings['max_lr']:g} | {settings['batch_size']} | "
            f"{_duration(wall['featurize'] + wall['train'])} ({_duration(wall['per_run'])} a run) |")
    if "glue_average" in summary:
        line = (f"**GLUE average over {len(summary['tasks'])} tasks ({', '.join(summary['tasks'])}): "
                f"{summary['glue_average']:.1f}**")
        for name in references:
            published = [entry["references"][name] for entry in summary["tasks"].values()
                         if name in entry["references"]]
            if len(published) == len(summary["tasks"]):
                line += f"; {name} on the same tasks: {statistics.fmean(published):.1f}"
        lines += ["", line]
    lines += grid_tables(summary)
    lines += made_from(summary)
    lines += ["", "References (published dev results, other training setups):"]
    lines += [f"- **{reference['model']}**: {reference['about']} Source: {reference['source']}"
              for reference in summary["references"]]
    return "\n".join(lines) + "\n"


def _cell_settings(settings: dict[str, Any]) -> str:
    """``lr 5e-05, batch 16, 5 epochs, length 128``."""
    return (f"lr {settings['max_lr']:g}, batch {settings['batch_size']}, {settings['epochs']} "
            f"epoch{'s' if settings['epochs'] != 1 else ''}, length {settings['max_seq_len']}")


def grid_tables(summary: dict[str, Any]) -> list[str]:
    """results.md's account of the choice: how a task's cell was chosen, the settings chosen, and per task a
    table of every cell of its grid (settings, each seed's dev score, mean ± std, median, last-epoch mean)."""
    if not summary["tasks"]:
        return []
    select = summary["select"]
    entries = summary["tasks"].values()
    best = any(entry["best_checkpoint"] for entry in entries)
    chose = best or any(len(entry["cells"]) > 1 for entry in entries)
    lines = ["", "## Settings chosen on dev", "",
             f"Each task's score is the cell of its grid (one per combination of the settings given, each over the "
             f"seeds) with the best {select} dev score over its seeds"
             + ("; a run's dev score is its best validation (train.py's best checkpoint, epoch in brackets) where it "
                "kept one, else its last" if best else "") + "."
             + (" Choosing on the dev set that then scores the choice is optimistic (BERT chose its learning rates "
                "so, RoBERTa its reported dev scores): the last-epoch scores beside them are those of the same runs "
                "without choosing a checkpoint; on unseen data the chosen settings can be expected to score lower."
                if chose else ""),
             ""]
    lines += [f"- {task}: {_cell_settings(entry['settings'])} (of {len(entry['cells'])} "
              f"{'cells' if len(entry['cells']) > 1 else 'cell'})" for task, entry in summary["tasks"].items()]
    for task, entry in summary["tasks"].items():
        lines += ["", f"| {task} cell | {' | '.join(CELL_KEYS.values())} | seeds: {entry['metric']} | mean ± std | "
                  "median | last epoch |", "|---" * (len(CELL_KEYS) + 5) + "|"]
        for cell in entry["cells"]:
            settings = cell["settings"]
            per_seed = ", ".join(f"{run['seed']}: {run['score']:.1f}"
                                 + (f" ({run['best_epoch']})" if run["best_epoch"] is not None else "")
                                 for run in cell["runs"])
            name = f"**{cell['name']}** (chosen)" if cell["name"] == entry["selected"] else cell["name"]
            lines.append(f"| {name} | {settings['max_lr']:g} | {settings['batch_size']} | {settings['epochs']} | "
                         f"{settings['max_seq_len']} | {per_seed} | {_plus_minus(cell['score'])} | "
                         f"{cell['score']['median']:.1f} | {_plus_minus(cell['last_epoch'])} |")
    return lines


def made_from(summary: dict[str, Any]) -> list[str]:
    """results.md's account of what the scores were made from: each task's files with their examples and SHA-256,
    and the library versions (with the runs of each set, when they differ)."""
    if not summary["tasks"]:
        return []
    # each file by its task folder and name: where it lay on the machine that ran is in results.json, and a
    # results.md shared or committed shows no machine's paths
    lines = ["", "Data: the files the features were made from (their folders and sizes in results.json):", "",
             "| task | file | examples | SHA-256 |", "|---|---|---|---|"]
    for task, entry in summary["tasks"].items():
        if entry["data"] is None:
            lines.append(f"| {task} | not recorded (runs from before results.json named their data) | | |")
        for file in (entry["data"] or {}).values():
            folder, name = os.path.split(file["source"])
            lines.append(f"| {task} | {os.path.basename(folder)}/{name} | {file['examples']} | `{file['sha256']}` |")
    made = [(", ".join(f"{name} {version}" for name, version in (group["versions"] or {}).items())
             or "versions not recorded", group["runs"]) for group in summary["versions"]]
    if len(made) == 1:
        return [*lines, "", f"Made with {made[0][0]}."]
    return [*lines, "", "Made with different versions:",
            *(f"- {versions}: {', '.join(runs)}" for versions, runs in made)]


def chart(summary: dict[str, Any], runs_by_task: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Scores per task (bar: mean or median, dots: seeds, marks: references), then per task the training-loss
    curves and the dev score after each epoch of the chosen cell's runs, one line per seed, and every cell of its
    grid (``grid_panel``)."""
    tasks = list(summary["tasks"])
    select = summary["select"]
    figure = plt.figure(figsize=(max(8, 3.2 * len(tasks)), 13), layout="constrained")
    grid = figure.add_gridspec(4, len(tasks), height_ratios=[1.3, 1, 1, 1])
    scores = figure.add_subplot(grid[0, :])
    means = [summary["tasks"][task]["score"][select] for task in tasks]
    errors = [summary["tasks"][task]["score"]["std"] or 0.0 for task in tasks]
    bars = scores.bar(range(len(tasks)), means, yerr=errors, capsize=4, color="#7aa6d6",
                      label=f"{select} ± std over seeds" if select == "mean" else "median over seeds (± std)")
    scores.bar_label(bars, labels=[f"{mean:.1f}" for mean in means], label_type="center")
    for position, task in enumerate(tasks):
        values = summary["tasks"][task]["score"]["values"]
        scores.scatter([position] * len(values), values, color="black", s=12, zorder=3,
                       label="one seed" if position == 0 else None)
    for number, reference in enumerate(summary["references"]):
        marked = [(position, summary["tasks"][task]["references"][reference["model"]])
                  for position, task in enumerate(tasks) if reference["model"] in summary["tasks"][task]["references"]]
        if marked:
            scores.scatter(*zip(*marked), marker=["_", "x", "+"][number % 3], s=400 if number % 3 == 0 else 60,
                           color=f"C{number + 1}", zorder=4, label=f"{reference['model']} (published)")
    scores.set_xticks(range(len(tasks)), [f"{task}\n{summary['tasks'][task]['metric']}" for task in tasks])
    scores.set_ylabel("dev score x100")
    title = f"{summary['model']}: GLUE dev"
    if "glue_average" in summary:
        title += f" (average {summary['glue_average']:.1f})"
    scores.set_title(title)
    scores.set_ylim(min(0.0, *means) - 5, 105)
    scores.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for column, task in enumerate(tasks):
        loss = figure.add_subplot(grid[1, column])
        dev = figure.add_subplot(grid[2, column])
        grid_panel(figure.add_subplot(grid[3, column]), task, summary["tasks"][task], select)
        chosen = next(group for group in cell_groups(runs_by_task[task])
                      if group["name"] == summary["tasks"][task]["selected"])
        for run in chosen["runs"]:
            points = run["history"]["train"]
            loss.plot([point["step"] for point in points], [point["loss"] for point in points], linewidth=0.8,
                      label=f"seed {run['seed']}")
            for key in dev_files(run["results"]):
                validations = run["history"].get(key, [])
                dev.plot([point["epoch"] for point in validations],
                         [100 * file_score(point) for point in validations], marker="o", markersize=3,
                         label=f"seed {run['seed']}" + (f" {key.replace('.tsv', '')}" if key != "dev.tsv" else ""))
        loss.set_title(f"{task}: training loss" + (" (chosen cell)" if len(summary["tasks"][task]["cells"]) > 1
                                                    else ""), fontsize="medium")
        loss.set_xlabel("optimizer step")
        dev.set_title(f"{task}: dev {summary['tasks'][task]['metric']} x100", fontsize="medium")
        dev.set_xlabel("epoch")
        dev.set_xticks(range(1, summary["tasks"][task]["settings"]["epochs"] + 1))
        dev.legend(fontsize="x-small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def grid_panel(axes: Any, task: str, entry: dict[str, Any], select: str) -> None:
    """Every cell of a task's grid: its score (mean or median) against its learning rate, one line per
    combination of the other settings, a dot per seed, the chosen cell ringed."""
    lines: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell in entry["cells"]:
        lines.setdefault(tuple(cell["settings"][key] for key in ("batch_size", "epochs", "max_seq_len")), []
                         ).append(cell)
    for number, ((batch, epochs, length), cells) in enumerate(lines.items()):
        cells = sorted(cells, key=lambda cell: cell["settings"]["max_lr"])
        axes.plot([cell["settings"]["max_lr"] for cell in cells], [cell["score"][select] for cell in cells],
                  marker="o", color=f"C{number}", label=f"batch {batch}, {epochs} ep, len {length}")
        for cell in cells:
            values = cell["score"]["values"]
            axes.scatter([cell["settings"]["max_lr"]] * len(values), values, color=f"C{number}", s=10, alpha=0.5)
    chosen = next(cell for cell in entry["cells"] if cell["name"] == entry["selected"])
    axes.scatter([chosen["settings"]["max_lr"]], [chosen["score"][select]], s=160, facecolors="none",
                 edgecolors="black", zorder=4)
    rates = sorted({cell["settings"]["max_lr"] for cell in entry["cells"]})
    if len(rates) > 1:
        axes.set_xscale("log")
    axes.set_xticks(rates, [f"{rate:g}" for rate in rates], fontsize="x-small")
    axes.minorticks_off()
    axes.set_xlabel("peak learning rate")
    axes.set_ylabel(f"{select} dev x100 (dots: seeds)", fontsize="small")
    axes.set_title(f"{task}: {len(entry['cells'])} {'cells' if len(entry['cells']) > 1 else 'cell'}, chosen ringed",
                   fontsize="medium")
    if len(lines) > 1:
        axes.legend(fontsize="x-small")


def write(output_dir: str, tasks: list[str], model: str, references_path: str, select: str = "mean"
          ) -> dict[str, str]:
    """Write results.json, results.md and results.png (when any run finished) into ``output_dir``; their paths."""
    runs_by_task = collect_all(output_dir, tasks)
    summary = summarize(output_dir, runs_by_task, model, references_path, select)
    os.makedirs(output_dir, exist_ok=True)
    paths = {kind: os.path.join(output_dir, f"results.{kind}") for kind in ("json", "md", "png")}
    write_json(paths["json"], summary)
    with atomic_path(paths["md"]) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(markdown(summary))
    if summary["tasks"]:
        chart(summary, runs_by_task, paths["png"])
    else:
        paths.pop("png")
    return paths
