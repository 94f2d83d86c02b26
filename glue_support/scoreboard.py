"""benchmark.py's finished runs -> ``results.json``, ``results.md`` and ``results.png`` in its output folder.

Scores are x100, as GLUE reports them. A task's score is its official metric; where GLUE reports two (MRPC and
QQP: F1 and accuracy; STS-B: Pearson and Spearman) it is their mean, as on the GLUE leaderboard, and a task with
several dev files (MNLI matched and mismatched) scores the mean over them. Each task shows the mean and sample
standard deviation over its seeds, and the GLUE average is the mean of the task means over the tasks run. Beside the
scores stands what they were made from, as the runs' results.json record it: each task's files (folder, SHA-256,
examples) and the library versions.
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


def run_score(folder: str, task: str) -> float:
    """The task score of one finished run, 0-1 (mean over its dev files)."""
    results = read_json(os.path.join(folder, "results.json"))
    if results is None or results.get("task") != task:
        raise FileNotFoundError(f"{folder}: no results.json of a {task} run")
    return statistics.fmean(file_score(results[key]) for key in dev_files(results))


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def collect(output_dir: str, task: str) -> list[dict[str, Any]]:
    """The finished runs of one task, by seed: record, results and history."""
    runs = []
    for record_path in sorted(glob.glob(os.path.join(output_dir, "runs", task, "seed*", "benchmark_run.json"))):
        folder = os.path.dirname(record_path)
        record = read_json(record_path)
        if record["status"] != "done":
            continue
        runs.append({"seed": record["settings"]["seed"], "record": record,
                     "results": read_json(os.path.join(folder, "results.json")),
                     "history": read_json(os.path.join(folder, "history.json")) or {"train": []}})
    return sorted(runs, key=lambda run: run["seed"])


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
    folder was resumed after an upgrade (``versions`` None: runs from before results.json recorded them)."""
    groups: list[dict[str, Any]] = []
    for task, runs in runs_by_task.items():
        for run in runs:
            versions = run["results"].get("versions")
            group = next((known for known in groups if known["versions"] == versions), None)
            if group is None:
                group = {"versions": versions, "runs": []}
                groups.append(group)
            group["runs"].append(f"{task} seed {run['seed']}")
    return groups


def reference_score(scores: Any) -> float:
    return statistics.fmean(scores.values()) if isinstance(scores, dict) else float(scores)


def summarize(output_dir: str, runs_by_task: dict[str, list[dict[str, Any]]], model: str,
              references_path: str) -> dict[str, Any]:
    """results.json's content: per task the seeds' scores and metrics, settings, data, wall time, references; the
    library versions of the runs."""
    references = (read_json(references_path) or {"references": []})["references"]
    summary: dict[str, Any] = {"model": model, "tasks": {}, "references": [
        {key: reference[key] for key in ("model", "about", "source")} for reference in references],
        "versions": versions_used(runs_by_task)}
    for task, runs in runs_by_task.items():
        if not runs:
            continue
        files = dev_files(runs[0]["results"])
        metrics = {f"{key}/{name}": mean_std([100 * run["results"][key][name] for run in runs])
                   for key in files for name in file_metrics(runs[0]["results"][key])}
        scores = [100 * statistics.fmean(file_score(run["results"][key]) for key in files) for run in runs]
        settings = {key: value for key, value in runs[0]["record"]["settings"].items()
                    if key not in ("task", "seed", "data")}  # data: in "data", with the example counts
        train_seconds = sum(run["record"]["wall_s"] for run in runs)
        summary["tasks"][task] = {
            "metric": get_task(task).metric_label, "score": mean_std(scores), "metrics": metrics,
            "seeds": [run["seed"] for run in runs], "settings": settings, "data": task_data(runs),
            "wall_s": {"featurize": featurize_seconds(output_dir, task, settings), "train": train_seconds,
                       "per_run": train_seconds / len(runs)},
            "references": {reference["model"]: reference_score(reference["scores"][task])
                           for reference in references if task in reference["scores"]},
        }
    if summary["tasks"]:
        summary["glue_average"] = statistics.fmean(entry["score"]["mean"] for entry in summary["tasks"].values())
    return summary


def _plus_minus(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry["std"] is not None else "")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def markdown(summary: dict[str, Any]) -> str:
    references = [reference["model"] for reference in summary["references"]]
    lines = [f"# GLUE dev scores: {summary['model']}", "",
             "Scores x100: mean ± standard deviation over seeds; a task with two metrics scores their mean "
             "(GLUE's rule), MNLI the mean of matched and mismatched.", "",
             "| task | metric | score | metrics | seeds | " + "".join(f"{name} | " for name in references)
             + "epochs | lr | batch | wall time (features + training) |",
             "|---" * (9 + len(references)) + "|"]
    for task, entry in summary["tasks"].items():
        metrics = "<br>".join(f"{key.replace('.tsv', '').replace('dev/', '')} {_plus_minus(value)}"
                              for key, value in entry["metrics"].items()) if len(entry["metrics"]) > 1 else ""
        per_seed = ", ".join(f"{value:.1f}" for value in entry["score"]["values"])
        settings = entry["settings"]
        wall = entry["wall_s"]
        lines.append(
            f"| {task} | {entry['metric']} | **{_plus_minus(entry['score'])}** | {metrics} | "
            f"{len(entry['seeds'])}: {per_seed} | "
            + "".join(f"{entry['references'][name]:.1f} | " if name in entry["references"] else "– | "
                      for name in references)
            + f"{settings['epochs']} | {settings['max_lr']:g} | {settings['batch_size']} | "
            f"{_duration(wall['featurize'] + wall['train'])} ({_duration(wall['per_run'])} a run) |")
    if "glue_average" in summary:
        line = (f"**GLUE average over {len(summary['tasks'])} tasks ({', '.join(summary['tasks'])}): "
                f"{summary['glue_average']:.1f}**")
        for name in references:
            scored = [entry["references"][name] for entry in summary["tasks"].values() if name in entry["references"]]
            if len(scored) == len(summary["tasks"]):
                line += f"; {name} on the same tasks: {statistics.fmean(scored):.1f}"
        lines += ["", line]
    lines += made_from(summary)
    lines += ["", "References (published dev results, other training setups):"]
    lines += [f"- **{reference['model']}**: {reference['about']} Source: {reference['source']}"
              for reference in summary["references"]]
    return "\n".join(lines) + "\n"


def made_from(summary: dict[str, Any]) -> list[str]:
    """results.md's account of what the scores were made from: each task's files with their examples and SHA-256,
    and the library versions (with the runs of each set, when they differ)."""
    if not summary["tasks"]:
        return []
    lines = ["", "Data: the files the features were made from (sizes in results.json):", "",
             "| task | folder | file | examples | SHA-256 |", "|---|---|---|---|---|"]
    for task, entry in summary["tasks"].items():
        if entry["data"] is None:
            lines.append(f"| {task} | not recorded (runs from before results.json named their data) | | | |")
        for file in (entry["data"] or {}).values():
            lines.append(f"| {task} | {os.path.dirname(file['source'])} | {os.path.basename(file['source'])} | "
                         f"{file['examples']} | `{file['sha256']}` |")
    made = [(", ".join(f"{name} {version}" for name, version in (group["versions"] or {}).items())
             or "versions not recorded", group["runs"]) for group in summary["versions"]]
    if len(made) == 1:
        return [*lines, "", f"Made with {made[0][0]}."]
    return [*lines, "", "Made with different versions:",
            *(f"- {versions}: {', '.join(runs)}" for versions, runs in made)]


def chart(summary: dict[str, Any], runs_by_task: dict[str, list[dict[str, Any]]], path: str) -> None:
    """Scores per task (bar: mean, dots: seeds, marks: references), then per task the training-loss curves and
    the dev score after each epoch, one line per seed."""
    tasks = list(summary["tasks"])
    figure = plt.figure(figsize=(max(8, 3.2 * len(tasks)), 10), layout="constrained")
    grid = figure.add_gridspec(3, len(tasks), height_ratios=[1.3, 1, 1])
    scores = figure.add_subplot(grid[0, :])
    means = [summary["tasks"][task]["score"]["mean"] for task in tasks]
    errors = [summary["tasks"][task]["score"]["std"] or 0.0 for task in tasks]
    bars = scores.bar(range(len(tasks)), means, yerr=errors, capsize=4, color="#7aa6d6", label="mean ± std over seeds")
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
        for run in runs_by_task[task]:
            points = run["history"]["train"]
            loss.plot([point["step"] for point in points], [point["loss"] for point in points], linewidth=0.8,
                      label=f"seed {run['seed']}")
            for key in dev_files(run["results"]):
                validations = run["history"].get(key, [])
                dev.plot([point["epoch"] for point in validations],
                         [100 * file_score(point) for point in validations], marker="o", markersize=3,
                         label=f"seed {run['seed']}" + (f" {key.replace('.tsv', '')}" if key != "dev.tsv" else ""))
        loss.set_title(f"{task}: training loss", fontsize="medium")
        loss.set_xlabel("optimizer step")
        dev.set_title(f"{task}: dev {summary['tasks'][task]['metric']} x100", fontsize="medium")
        dev.set_xlabel("epoch")
        dev.set_xticks(range(1, summary["tasks"][task]["settings"]["epochs"] + 1))
        dev.legend(fontsize="x-small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def write(output_dir: str, tasks: list[str], model: str, references_path: str) -> dict[str, str]:
    """Write results.json, results.md and results.png (when any run finished) into ``output_dir``; their paths."""
    runs_by_task = collect_all(output_dir, tasks)
    summary = summarize(output_dir, runs_by_task, model, references_path)
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
