"""Model cards (``README.md``) with ``model-index`` metadata, the form the Hugging Face Hub reads results in, made
with huggingface_hub's classes: train.py's beside the model it saves (``run_card``), and the benchmark's
(``write_benchmark_cards``): one per task for its selected run, in ``runs/<Task>/``, and one for the whole benchmark
in its output folder. Metric values are 0-1, as a run's results.json records them and the Hub's GLUE cards give
them; the metrics are named as glue_metrics.REPORTS (Hugging Face's ``glue`` metric) names them.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.utils import HFValidationError, validate_repo_id

from glue_metrics import REPORTS, official
from glue_processors import get_task
from glue_support.atomic_write import atomic_path
from glue_support.option_docs import cli_value
from glue_support.run_record import RunRecord
from glue_support.selection import Selection

if TYPE_CHECKING:  # not imported: train.py writes its card without the scoreboard's matplotlib
    from glue_support.scoreboard import Summary

CARD = "README.md"
TAG = "marlin-glue"  # on every card this project writes
BENCHMARK_TAG = "marlin-glue-benchmark"  # on the benchmark's, the only README.md files it replaces
# the Hub's GLUE cards give every task this type, STS-B's regression too (transformers' Trainer writes them so)
TASK_TYPE, TASK_NAME = "text-classification", "Text Classification"
SUMMARY = "benchmark"  # the summary card's key among the benchmark's cards (``card_paths``)
HEAD_BYTES = 1 << 20  # read of a README.md to tell whose it is: its metadata block comes first


def hf_split(file: str) -> str:
    """The Hugging Face ``glue`` split of a dev file: ``dev.tsv`` -> ``validation``, MNLI's ``dev_matched.tsv`` ->
    ``validation_matched``."""
    return "validation" + file.removesuffix(".tsv").removeprefix("dev")


def hub_id(name: str) -> Optional[str]:
    """``name`` where it names a model on the Hub (a valid repo id, not a local path), else None."""
    if os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def short_name(name: str) -> str:
    """A model as a card names it: its hub id, or a local folder by its own name (no machine's paths)."""
    return hub_id(name) or os.path.basename(os.path.normpath(name))


def validated(task: str, scored: Mapping[str, Any]) -> list[str]:
    """The dev files of ``task`` that ``scored`` holds a validation of (a run may validate some: MNLI's mismatched)."""
    return [file for file in get_task(task).scored_files if file in scored]


def eval_results(task: str, scored: Mapping[str, Mapping[str, float]], source_url: str,
                 source_name: str) -> list[EvalResult]:
    """One EvalResult per dev file of ``task`` validated in ``scored`` (a validation's results by file, 0-1) and
    official metric, valued as ``scored`` gives it."""
    spec = get_task(task)
    return [EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type="glue", dataset_name=f"GLUE {spec.name}",
                       dataset_config=spec.hf_name, dataset_split=hf_split(file), metric_type=metric,
                       metric_name=REPORTS[spec.metric][metric], metric_value=value, source_name=source_name,
                       source_url=source_url)
            for file in validated(task, scored) for metric, value in official(task, scored[file]).items()]


def card(name: str, model: str, tags: list[str], results: list[EvalResult], body: list[str],
         library: Optional[str] = "transformers") -> ModelCard:
    """A card for model ``name``, fine-tuned from ``model`` (its ``base_model`` where that is a hub id), with
    ``results`` as its model-index and ``body`` (markdown lines) as its text."""
    data = ModelCardData(model_name=name, base_model=hub_id(model), datasets=["glue"], library_name=library,
                         pipeline_tag=TASK_TYPE, tags=["glue", *tags], eval_results=results or None,
                         metrics=list(dict.fromkeys(result.metric_type for result in results)) or None)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def scores_table(task: str, scored: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The dev scores of a validation, 0-1, as a table: split, metric, value."""
    spec = get_task(task)
    return ["| split | metric | value |", "|---|---|---|",
            *(f"| {hf_split(file)} | {REPORTS[spec.metric][metric]} ({metric}) | {value:.4f} |"
              for file in validated(task, scored) for metric, value in official(task, scored[file]).items())]


def data_table(data: Mapping[str, Mapping[str, Mapping[str, Any]]], lengths: Mapping[str, int]) -> list[str]:
    """The GLUE files a run read (results.json's ``data``), with their examples, features length and SHA-256."""
    return ["| file | examples | max_seq_len | SHA-256 |", "|---|---|---|---|",
            *(f"| {name} | {file['examples']} | {lengths.get(name, '–')} | `{file['sha256']}` |"
              for files in data.values() for name, file in files.items())]


def scored_by(scored: Mapping[str, Any], best: bool) -> str:
    """Which validation ``scored`` (results by dev file, as results.json records them) is, in words: the run's best
    (``best``: its ``best``, whose model train.py kept), else its last."""
    if best:
        return (f"its best validation (epoch {scored['epoch']}), whose model it kept (`--tmod.keep_best`): chosen on "
                "the dev set that scores it, which flatters it")
    return "its last validation, whose model it saved"


def made_with(versions: Mapping[str, Optional[str]]) -> str:
    """The library versions a run recorded, as a sentence."""
    return "Made with " + ", ".join(f"{name} {version}" for name, version in versions.items()) + "."


def run_card(task: str, model: str, provenance: Mapping[str, Any], scored: Optional[Mapping[str, Any]], best: bool,
             options: Mapping[str, Any], lengths: Mapping[str, int]) -> ModelCard:
    """train.py's card for the model of ``task`` it fine-tuned from ``model`` and saves: ``provenance`` the run's
    data and versions (``result_files.provenance_record``), ``scored`` the validation of that model as results.json
    records it (``best``: the run's best, else its last; None where it validated nothing), ``options`` the settings
    it was trained with by option (``--tmod.max_lr``: value), ``lengths`` each features file's max_seq_len by name."""
    name = f"{short_name(model)} fine-tuned on GLUE {get_task(task).name}"
    body = [f"# {name}", "", f"{short_name(model)} fine-tuned on GLUE {task} by marlin-glue's train.py.", "",
            "## Dev scores", ""]
    if scored:
        body += [f"Scored by {scored_by(scored, best)}. The model-index holds the same values (0-1), as "
                 "results.json beside this card records them.", "", *scores_table(task, scored)]
    else:
        body += ["None: the run validated nothing (no `--tmod.valpath`)."]
    body += ["", "## Data", "", *data_table(provenance["data"], lengths),
             "", "## How it was made", "",
             "The settings it was trained with, as train.py's options (every option in run_config.yaml beside this "
             "card):", "", *(f"- `{option} {cli_value(value)}`" for option, value in options.items()),
             "", made_with(provenance["versions"])]
    index = eval_results(task, scored, "results.json", "marlin-glue train.py") if scored else []
    return card(name, model, [TAG], index, body)


def write_card(model_card: ModelCard, path: str) -> None:
    """``model_card`` at ``path``, atomically."""
    with atomic_path(path) as temporary:
        model_card.save(temporary)


def require_own_card(path: str) -> None:
    """The README.md at ``path`` is replaced only where the benchmark wrote it (its metadata tagged
    ``BENCHMARK_TAG``): refused, in one line naming it, otherwise. Before any work."""
    if not os.path.lexists(path):
        return
    if not os.path.isfile(path):
        why = "not a file"
    else:
        with open(path, "rb") as stream:
            head = stream.read(HEAD_BYTES).decode("utf-8-sig", errors="replace")
        found = REGEX_YAML_BLOCK.search(head)
        try:
            metadata = yaml.safe_load(found.group(2)) if found else None
        except yaml.YAMLError:
            metadata = None
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        why = None if isinstance(tags, list) and BENCHMARK_TAG in tags else f"no {BENCHMARK_TAG!r} tag in its metadata"
    if why:
        raise ValueError(f"{path}: not a model card of the benchmark's ({why}), and benchmark.py replaces only its own "
                         "files: choose another --bench.output_dir, or move that file away")


def card_paths(output_dir: str, tasks: list[str]) -> dict[str, str]:
    """Where the benchmark's cards go, by task: each task's in ``runs/<Task>/``, the whole benchmark's (``SUMMARY``)
    in ``output_dir``."""
    return {**{task: os.path.join(output_dir, "runs", get_task(task).name, CARD) for task in tasks},
            SUMMARY: os.path.join(output_dir, CARD)}


def require_own_cards(output_dir: str, tasks: list[str]) -> None:
    """``require_own_card`` for every card the benchmark of ``tasks`` in ``output_dir`` writes."""
    for path in card_paths(output_dir, tasks).values():
        require_own_card(path)


def _settings(settings: Mapping[str, Any]) -> str:
    """A run's training settings, as benchmark_run.json records them: ``lr 5e-05, batch 16, 3 epochs, ...``."""
    return (f"lr {settings['max_lr']:g}, batch {settings['batch_size']}, {settings['epochs']} epochs, max_seq_len "
            f"{settings['max_seq_len']}")


def task_card(chosen: Selection, model: Mapping[str, Any], has_model: bool) -> ModelCard:
    """The benchmark's card for the selected run of ``chosen`` (which has one), by ``model`` (``recorded_model``);
    ``has_model``: whether its folder still holds the model's weights."""
    run: RunRecord = chosen.run
    task, cell = chosen.task, chosen.cell
    name = f"{short_name(model['name'])} fine-tuned on GLUE {task}"
    folder = f"{cell.name}/seed{run.seed}"
    kept = (f"its model is there, with train.py's own card: [{folder}]({folder})" if has_model else
            "its model's weights were removed when it finished (`--keep_models false`); its config, tokenizer, "
            "results and train.py's card stay there")
    cells = f"{len(chosen.cells)} cell{'s' if len(chosen.cells) > 1 else ''}"
    seeds = ", ".join(str(member.seed) for member in cell.runs)
    spread = cell.score
    lengths = {file: run.settings["max_seq_len"] for files in run.results["data"].values() for file in files}
    body = [f"# {name}", "",
            f"The run of {task} that marlin-glue's benchmark.py selected, `runs/{task}/{folder}`: {kept}. Its cell "
            f"({_settings(cell.settings)}) has the best dev score over its seeds ({seeds}) of the task's {cells} by "
            f"`--select {chosen.rule}`, and seed {run.seed} the best score in it. The benchmark's README.md and "
            "results.md give every task.",
            "", "## Dev scores", "",
            f"Scored by {scored_by(run.scored, 'best' in run.results)}. The model-index holds the same values "
            "(0-1), as the run's results.json records them.", "", *scores_table(task, run.scored), "",
            f"Its cell's GLUE score x100 over its seeds: {spread.mean:.1f}"
            + (f" ± {spread.std:.1f} (mean ± std)" if spread.std is not None else " (one seed)")
            + f", {cell.last_epoch.mean:.1f} at the last epoch.",
            "", "## Data", "", *data_table(run.results["data"], lengths),
            "", "## How it was made", "",
            "The run's settings, as its benchmark_run.json records them (its train.log begins with its train.py "
            "command):", "",
            *(f"- {key}: `{json.dumps(short_name(value) if key == 'model' else value)}`"
              for key, value in run.settings.items() if key not in ("data", "model_identity")),
            "", made_with(run.results["versions"])]
    return card(name, model["name"], [TAG, BENCHMARK_TAG],
                eval_results(task, run.scored, "../../results.md", "marlin-glue benchmark.py"), body)


def cell_means(chosen: Selection) -> dict[str, dict[str, float]]:
    """Each official metric of the selected cell, 0-1, its mean over the cell's seeds, by dev file."""
    return {file: {metric: statistics.fmean(official(chosen.task, run.scored[file])[metric] for run in chosen.cell.runs)
                   for metric in REPORTS[get_task(chosen.task).metric]}
            for file in get_task(chosen.task).scored_files}


def summary_card(summary: Summary) -> ModelCard:
    """The card of the whole benchmark: every scored task's selected cell, its metrics' means over the seeds."""
    model = summary.model["name"]
    scored = summary.scored
    results = [result for task, entry in scored.items()
               for result in eval_results(task, cell_means(entry.selection), "results.md", "marlin-glue benchmark.py")]
    name = f"{short_name(model)} fine-tuned on GLUE"
    body = [f"# {name}", "",
            f"{short_name(model)} fine-tuned on each GLUE task by marlin-glue's benchmark.py; every run, cell and "
            "setting in [results.md](results.md).", "",
            "Each value here and in the model-index is a task's selected cell's mean over its seeds of a dev metric, "
            "0-1 (results.md shows them x100). The cell is selected on the dev set that scores it, and a run scored at "
            "its best validation where it kept one: the scores flatter the settings chosen. A degenerate run (one "
            "class, or not above the task's trivial baseline: results.md) counts in its cell's mean.", "",
            "| task | split | metric | mean over seeds | seeds | degenerate | settings | selected run |",
            "|---" * 8 + "|"]
    for task, entry in scored.items():
        cell, run = entry.cell, entry.selection.run
        degenerate = ", ".join(f"seed {member.seed}" for member in cell.degenerate) or "–"  # counted, not restarted
        for file, metrics in cell_means(entry.selection).items():
            for metric, value in metrics.items():
                body.append(f"| {task} | {hf_split(file)} | {REPORTS[get_task(task).metric][metric]} ({metric}) | "
                            f"{value:.4f} | {len(cell.runs)} | {degenerate} | {_settings(cell.settings)} | "
                            f"[runs/{task}/{cell.name}/seed{run.seed}](runs/{task}/README.md) |")
    if scored:
        body += ["", f"GLUE average over {len(scored)} tasks ({', '.join(scored)}): {summary.glue_average:.1f} (x100, "
                     f"the {summary.select} over seeds of each task's GLUE score, as results.md)."]
    unscored = [task for task in summary.tasks if task not in scored]
    if unscored:
        body += ["", f"No score for {', '.join(unscored)}: every run diverged."]
    body += ["", "Dev data:", "", "| task | file | examples | SHA-256 |", "|---|---|---|---|",
             *(f"| {task} | {name} | {file['examples']} | `{file['sha256']}` |"
               for task, entry in scored.items() for name, file in entry.data.items()
               if name in get_task(task).scored_files)]
    return card(name, model, [TAG, BENCHMARK_TAG], results, body, library=None)


def write_benchmark_cards(output_dir: str, summary: Summary, has_model: Callable[[str], bool]) -> dict[str, str]:
    """The benchmark's cards in ``output_dir`` for its scoreboard ``summary``: each task with a selected run gets one
    for it (``task_card``; ``has_model``: whether a run folder still holds its model's weights), and the whole
    benchmark one (``summary_card``); the paths written, as ``card_paths`` keys them. Refused, in one line, where a
    card there is not the benchmark's."""
    paths = card_paths(output_dir, list(summary.tasks))
    for path in paths.values():
        require_own_card(path)
    written = {}
    for task, entry in summary.tasks.items():
        if entry.selection.run is not None:
            write_card(task_card(entry.selection, summary.model, has_model(entry.selection.run.folder)), paths[task])
            written[task] = paths[task]
    write_card(summary_card(summary), paths[SUMMARY])
    return {**written, SUMMARY: paths[SUMMARY]}
