"""(h) The whole suite against run_glue: RTE, MRPC, STS-B and CoLA, one seed, through benchmark.py and through
run_glue's own path, sides interleaved; wall time per task and in total, and the dev metrics side by side.

    PYTHONPATH=/tmp/bench-site python bench/suite.py --workdir /tmp/suite --logdir bench/logs/suite \\
        | tee bench/logs/suite.txt

The peer needs datasets and accelerate: bench/requirements.txt says how to install them outside .venv (in
/tmp/bench-site above) so that every library .venv has keeps its version.

Sides, one process per task each, one process at a time, in the order ours RTE, peer RTE, ours MRPC, ...:
  ours  ``python benchmark.py --tasks <Task> --seeds 1 --data_dir <GLUE> --output_dir <workdir>/ours_<Task>
        --predict true``: data.py features of train and dev, one train.py run (validating after every epoch,
        keeping the best validation's model: ``--tmod.keep_best true``), test features and train.py prediction of
        the test file, the scoreboard (the leaderboard zip is refused with tasks missing: expected, the task's file
        is written all the same). Dev metric: the run's best validation in its results.json (``best``, as
        glue_support/scoreboard.py scores a run).
  peer  run_glue's path in a child of this script: ``datasets.load_dataset("csv", delimiter="\\t", quoting=3)``
        for train, dev and test, ``map(batched=True)`` of the tokenizer (truncation to max_seq_len, no padding),
        ``AutoModelForSequenceClassification`` (one output for STS-B), ``Trainer`` with its default
        ``DataCollatorWithPadding`` (dynamic padding), validating and saving every epoch and loading the best
        epoch's model at the end (``load_best_model_at_end``, ``metric_for_best_model`` the task's GLUE score:
        the mean of its metrics where it has two), ``save_model``, then ``evaluate()`` on dev (its dev metric)
        and ``predict()`` on test, written as run_glue writes ``predict_results_<task>.txt``.
--together: ours is one ``benchmark.py --tasks RTE,MRPC,STS-B,CoLA ...`` process, as a user benchmarks the suite
(its default ``--parallel`` on 2 cores: two runs at once, a core each, the most training first), then the peer's
tasks one after the other, as run_glue runs them; only the totals compare (ours' runs overlap).
Same model (the embedded MiniLM), same settings on both sides: per task epochs, max_lr, batch_size and
max_seq_len from benchmark.yaml, the seed from its bench.first_seed; warmup_prop, weight_decay, gradient clipping
and val_batch_size from config.yaml; torch's default threads. Both sides' metrics come from glue_metrics.compute.
Timed: each whole process, start to exit (interpreter, imports, data, training, validation, prediction). Run it
on an otherwise idle machine: each side takes every core, and a process beside it slows it by uneven factors.
--epochs, --max_train_examples and --max_eval_examples (both sides; test files stay whole, as in benchmark.py)
make a set-up check of the script, not a comparison. Per-side logs (with benchmark.py's train and predict logs)
go to --logdir, and summary.json after each task's pair: the same command resumes an interrupted suite at the
first task not in it (--again measures all).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

common.setup_path()
from glue_metrics import REPORTS, glue_score  # noqa: E402
from glue_processors import TASKS, GlueProcessor, TaskSpec, get_task  # noqa: E402

SUITE = ["RTE", "MRPC", "STS-B", "CoLA"]
# tasks with one dev file and one test file: the peer's path is written for that layout
CHOICES = [spec.name for spec in TASKS.values() if spec.labeled and len(spec.dev_set_types) == 1
           and spec.test_set_types == ("test",)]
SIDES = ["ours", "peer"]
# no side may spend time on the network (there is none on the bench machine): the model and data are local
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class Settings:
    """One task's run, the same on both sides."""

    epochs: int
    max_lr: float
    batch_size: int
    max_seq_len: int
    seed: int
    warmup_prop: float
    weight_decay: float
    max_grad_norm: float  # 0: no clipping
    val_batch_size: int


def settings(a: argparse.Namespace, spec: TaskSpec) -> Settings:
    """The task's settings as benchmark.py runs them: its group of benchmark.yaml (one cell) and config.yaml's
    defaults for what benchmark.yaml leaves to train.py; ``--epochs`` overrides the epochs (a set-up check)."""
    with open(os.path.join(common.ROOT, "benchmark.yaml"), encoding="utf-8") as stream:
        bench = yaml.safe_load(stream)
    with open(os.path.join(common.ROOT, "config.yaml"), encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    group = bench[spec.hf_name]
    cell = {}
    for key in ("epochs", "max_lr", "batch_size", "max_seq_len"):
        values = group[key] if isinstance(group[key], list) else [group[key]]
        if len(values) != 1:
            raise SystemExit(f"suite.py: benchmark.yaml gives {spec.hf_name}.{key} {len(values)} values; "
                             "the suite compares one setting per task")
        cell[key] = values[0]
    trainer = config["trainer"]
    return Settings(epochs=a.epochs or cell["epochs"], max_lr=float(cell["max_lr"]), batch_size=cell["batch_size"],
                    max_seq_len=cell["max_seq_len"], seed=bench["bench"]["first_seed"],
                    warmup_prop=config["tmod"]["warmup_prop"], weight_decay=config["tmod"]["weight_decay"],
                    max_grad_norm=trainer["max_grad_norm"] if trainer["clip_grads"] else 0.0,
                    val_batch_size=trainer["val_batch_size"])


def expected_rows(a: argparse.Namespace, spec: TaskSpec) -> dict[str, int]:
    """Rows of train, dev and test as data.py reads them (the caps applied), which both sides must have seen."""
    rows = {}
    for set_type, cap in (("train", a.max_train_examples), ("dev", a.max_eval_examples), ("test", 0)):
        count = len(GlueProcessor(spec.name).process(os.path.join(a.data_dir, spec.name), set_type))
        rows[set_type] = min(count, cap) if cap else count
    return rows


def best_metric(spec: TaskSpec) -> str:
    """The Trainer's ``metric_for_best_model`` that selects as ``glue_metrics.glue_score`` does (one dev file): the
    task's metric, or ``combined_score`` (their mean, from glue_metrics.compute) where it reports two."""
    keys = list(REPORTS[spec.metric])
    return keys[0] if len(keys) == 1 else "combined_score"


# -- the peer: run_glue's path, in a child process ------------------------------------------------------------
def child_peer(a: argparse.Namespace, task: str, out: str) -> None:
    start = time.perf_counter()
    import datasets
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    import glue_metrics
    clock = {"imports": time.perf_counter() - start}
    spec, s = get_task(task), settings(a, get_task(task))
    model_path = common.model_path()
    datasets.disable_progress_bars()  # the log, not the time: bars go to a file here
    set_seed(s.seed)  # run_glue seeds before it loads anything

    def load(set_type: str, cap: int):
        """One GLUE file as run_glue's csv users load it: tab-separated, quoting off (MRPC's quotes are text, and
        with quoting on rows merge); the columns named by the file's header, or in order where it has none."""
        columns = spec.test if set_type in spec.test_set_types else spec.labeled
        names = {} if columns.header else {"column_names": [f"column{i}" for i in range(columns.width)]}
        dataset = datasets.load_dataset(
            "csv", data_files={set_type: os.path.join(a.data_dir, task, f"{set_type}.tsv")}, delimiter="\t",
            quoting=csv.QUOTE_NONE, encoding="utf-8-sig", cache_dir=os.path.join(out, "datasets_cache"),
            **names)[set_type]
        if cap:  # run_glue's --max_train_samples / --max_eval_samples
            dataset = dataset.select(range(min(cap, len(dataset))))
        return dataset, columns

    mark = time.perf_counter()
    (train, layout), (dev, _), (test, test_layout) = (
        load("train", a.max_train_examples), load("dev", a.max_eval_examples), load("test", 0))
    label_column = train.column_names[layout.label]
    if spec.is_regression:
        label_list, label_to_id = None, None
    else:  # run_glue's labels for a csv: the sorted values of the training set
        label_list = sorted(train.unique(label_column))
        if [str(label) for label in label_list] != list(spec.labels):
            raise SystemExit(f"{task}: training labels {label_list}, expected {list(spec.labels)} (a subset "
                             "without every class?): the sides' class ids would differ")
        label_to_id = {label: i for i, label in enumerate(label_list)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def preprocess(dataset, columns):
        text_a, text_b = dataset.column_names[columns.text_a], None
        if columns.text_b is not None:
            text_b = dataset.column_names[columns.text_b]
        labeled = columns.label is not None

        def encode(batch):
            texts = (batch[text_a],) if text_b is None else (batch[text_a], batch[text_b])
            result = tokenizer(*texts, padding=False, max_length=s.max_seq_len, truncation=True)
            if labeled:  # "labels", the model's argument: datasets 5.2's map gives a returned "label" the type
                # of the file's label column, even removed, and RTE's class ids would come back as text
                values = batch[label_column]
                result["labels"] = values if label_to_id is None else [label_to_id[value] for value in values]
            return result

        # the text labels go: the Trainer keeps any column named label
        return dataset.map(encode, batched=True, remove_columns=[label_column] if labeled else None)

    train, dev, test = preprocess(train, layout), preprocess(dev, layout), preprocess(test, test_layout)
    clock["data"] = time.perf_counter() - mark

    mark = time.perf_counter()
    labels = {} if spec.is_regression else {"id2label": {i: str(label) for i, label in enumerate(label_list)},
                                            "label2id": {str(label): i for i, label in enumerate(label_list)}}
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(spec.labels or [0]),
                                                               **labels)
    clock["model"] = time.perf_counter() - mark

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        preds = logits[:, 0] if spec.is_regression else np.argmax(logits, axis=1)
        return glue_metrics.compute(task, prediction.label_ids, preds)

    metric = best_metric(spec)
    args = TrainingArguments(
        output_dir=out, learning_rate=s.max_lr, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.val_batch_size, num_train_epochs=s.epochs, warmup_steps=s.warmup_prop,
        weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm, lr_scheduler_type="linear", seed=s.seed,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model=metric,
        save_total_limit=1, logging_strategy="epoch", report_to="none", disable_tqdm=True)
    # no data_collator: the Trainer's default for a tokenizer, DataCollatorWithPadding (dynamic padding)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      compute_metrics=compute_metrics)
    mark = time.perf_counter()
    trainer.train()
    trainer.save_model()
    clock["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    evaluation = trainer.evaluate()
    clock["evaluate"] = time.perf_counter() - mark

    mark = time.perf_counter()
    predictions = trainer.predict(test).predictions
    outputs = predictions[:, 0] if spec.is_regression else np.argmax(predictions, axis=1)
    path = os.path.join(out, f"predict_results_{task}.txt")
    with open(path, "w", encoding="utf-8") as writer:  # as run_glue writes it
        writer.write("index\tprediction\n")
        for index, item in enumerate(outputs):
            writer.write(f"{index}\t{item:3.3f}\n" if spec.is_regression else f"{index}\t{label_list[item]}\n")
    clock["predict"] = time.perf_counter() - mark

    evaluations = [entry for entry in trainer.state.log_history if f"eval_{metric}" in entry]
    best = next((entry["epoch"] for entry in evaluations if entry[f"eval_{metric}"] == trainer.state.best_metric),
                float("nan"))
    common.report({"metrics": {key.removeprefix("eval_"): value for key, value in evaluation.items()
                               if key.removeprefix("eval_") in (*REPORTS[spec.metric], "loss")},
                   "best_epoch": best, "steps": trainer.state.global_step, "phases": clock,
                   "rows": {"train": len(train), "dev": len(dev), "test": len(outputs)}})


# -- the two sides, from the parent ---------------------------------------------------------------------------
def fresh(folder: str) -> str:
    """An empty run folder: benchmark.py would reuse a finished run found there, and datasets a prepared cache,
    and a side that reuses is not timed doing the work."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def append_file(log_path: str, path: str) -> None:
    if os.path.exists(path):
        with open(log_path, "a", encoding="utf-8") as log, open(path, encoding="utf-8", errors="replace") as part:
            log.write(f"\n===== {path}\n{part.read()}")


def run_ours(a: argparse.Namespace, specs: list[TaskSpec], plan: dict[str, Settings],
             log_path: str) -> dict[str, dict[str, Any]]:
    """One ``benchmark.py --predict true`` process over ``specs`` (one task, or with --together all), each task's
    result read from its output."""
    out = fresh(os.path.join(a.workdir, "ours_" + "_".join(spec.name for spec in specs)))
    command = [common.PYTHON, "benchmark.py", "--tasks", ",".join(spec.name for spec in specs), "--seeds", "1",
               "--data_dir", a.data_dir, "--output_dir", out, "--predict", "true"]
    if a.epochs:
        command += [part for spec in specs for part in (f"--{spec.hf_name}.epochs", str(a.epochs))]
    for option in ("max_train_examples", "max_eval_examples"):
        command += [f"--{option}", str(getattr(a, option))] if getattr(a, option) else []
    process_wall_s = common.run_logged(command, log_path, env=OFFLINE)["process_wall_s"]
    results = {spec.name: ours_task(out, spec, plan[spec.name], log_path) for spec in specs}
    for result in results.values():
        if a.together:  # the tasks' runs overlap: only the whole process is the suite's time
            result["suite_wall_s"] = process_wall_s
        else:
            result["process_wall_s"] = process_wall_s
            result["phases"]["rest"] = process_wall_s - result["phases"]["features"] - result["phases"]["train"]
    if not a.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return results


def ours_task(out: str, spec: TaskSpec, s: Settings, log_path: str) -> dict[str, Any]:
    """One task's dev metrics, steps, rows and times from benchmark.py's output folder ``out``."""
    from glue_support.run_record import read_json, read_run  # here: the peer's child needs none of them

    [run] = glob.glob(os.path.join(out, "runs", spec.name, "*", f"seed{s.seed}"))
    append_file(log_path, os.path.join(run, "train.log"))
    append_file(log_path, os.path.join(out, "predictions", spec.name, "predict.log"))
    record = read_run(run)
    results = record.results
    train_s = record.wall_s  # the train.py process
    best = record.scored  # keep_best: the validation the scoreboard scores and whose model predicts
    [dev_file] = spec.scored_files
    features_s = sum(sum(read_json(path).values())  # train and dev; the test file's are not recorded
                     for path in glob.glob(os.path.join(out, "features", spec.name, "*", "featurize_seconds.json")))
    with open(os.path.join(out, "submission", spec.submission_file("test")), encoding="utf-8") as stream:
        test_rows = sum(1 for _ in stream) - 1
    data = results["data"]
    return {"metrics": {key: value for key, value in best[dev_file].items() if key in (*REPORTS[spec.metric],
                                                                                       "loss")},
            "best_epoch": best["epoch"], "steps": results[dev_file]["step"],
            "phases": {"features": features_s, "train": train_s},
            "rows": {"train": sum(f["examples"] for f in data["trainpath"].values()),
                     "dev": sum(f["examples"] for f in data["valpath"].values()), "test": test_rows}}


def run_peer(a: argparse.Namespace, spec: TaskSpec, log_path: str) -> dict[str, Any]:
    out = fresh(os.path.join(a.workdir, f"peer_{spec.name}"))
    command = [common.PYTHON, os.path.abspath(__file__), "--child", spec.name, "--out", out, "--data_dir", a.data_dir,
               "--epochs", str(a.epochs), "--max_train_examples", str(a.max_train_examples),
               "--max_eval_examples", str(a.max_eval_examples)]
    result = common.run_logged(command, log_path, env=OFFLINE)
    if not a.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return result


# -- the report ------------------------------------------------------------------------------------------------
def shown(spec: TaskSpec, result: dict[str, Any] | None) -> str:
    if result is None:
        return ""
    metrics = result["metrics"]
    text = ", ".join(f"{name} {metrics[key]:.4f}" for key, name in REPORTS[spec.metric].items())
    if len(REPORTS[spec.metric]) > 1:
        text += f" (score {score(spec, result):.4f})"
    return text + f", epoch {result['best_epoch']:g}"


def score(spec: TaskSpec, result: dict[str, Any]) -> float:
    """The task's GLUE score, 0-1, as train.py selects its best validation and the scoreboard reports it."""
    return glue_score(spec.name, {spec.scored_files[0]: result["metrics"]})


def wall(result: dict[str, Any]) -> str:
    """A task's time on one side: its process's, or with --together its train.py run's (the runs overlap)."""
    if "suite_wall_s" in result:
        return f"train.py {result['phases']['train']:.0f} s"
    return f"{result['process_wall_s']:.0f} s"


def report(a: argparse.Namespace, results: dict[str, dict[str, dict[str, Any]]]) -> None:
    both = all(side in a.sides for side in SIDES)
    rows = []
    for task in a.tasks:
        spec = get_task(task)
        row = [task, *(wall(results[side][task]) if task in results[side] else "" for side in SIDES)]
        row.append(f"**{results['peer'][task]['process_wall_s'] / results['ours'][task]['process_wall_s']:.2f}x**"
                   if both and not a.together else "")
        row += [shown(spec, results[side].get(task)) for side in SIDES]
        rows.append(row)
    totals = {side: (results[side][a.tasks[0]]["suite_wall_s"] if side == "ours" and a.together else
                     sum(results[side][task]["process_wall_s"] for task in a.tasks)) for side in a.sides}
    means = {side: sum(score(get_task(task), results[side][task]) for task in a.tasks) / len(a.tasks)
             for side in a.sides}
    rows.append(["**total**", *(f"**{totals[side]:.0f} s**" if side in a.sides else "" for side in SIDES),
                 f"**{totals['peer'] / totals['ours']:.2f}x**" if both else "",
                 *(f"mean score {means[side]:.4f}" if side in a.sides else "" for side in SIDES)])
    print()
    print(common.table(rows, ["task", "ours wall", "peer wall", "peer / ours (time)", "ours dev metric (best epoch)",
                              "peer dev metric (best epoch)"]))
    phases = []
    for task in a.tasks:
        for side in a.sides:
            result = results[side][task]
            spent = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["phases"].items())
            rows_read = " / ".join(str(result["rows"][key]) for key in ("train", "dev", "test"))
            phases.append([task, side, spent, str(result["steps"]), rows_read])
    print()
    print(common.table(phases, ["task", "side", "where the time went", "optimizer steps", "rows train / dev / test"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=SUITE, choices=CHOICES)
    parser.add_argument("--sides", nargs="+", default=SIDES, choices=SIDES)
    parser.add_argument("--data_dir", default=common.GLUE, help="one folder of GLUE files per task (%(default)s)")
    parser.add_argument("--workdir", default=None,
                        help="the runs' outputs, <workdir>/<side>_<Task>/ (--together: ours_<Task>_<Task>...; "
                             "replaced if there; default: a new temporary folder); each is removed once read, "
                             "unless --keep_outputs")
    parser.add_argument("--logdir", default=None, help="each side's log per process, <side>_<Task>.log, and "
                                                       "summary.json (default: <workdir>/logs)")
    parser.add_argument("--keep_outputs", action="store_true", help="keep the runs' outputs (models, checkpoints)")
    parser.add_argument("--again", action="store_true",
                        help="measure every task again (default: a task whose two sides are in --logdir's "
                             "summary.json with these settings is reported from there, so that an interrupted "
                             "suite resumes)")
    parser.add_argument("--together", action="store_true",
                        help="ours as one benchmark.py process over every task, as a user runs the suite: its "
                             "default --parallel runs two at once on 2 cores, a core each, the longest first; the "
                             "peer's tasks one after the other, as run_glue runs them. Ours' time per task is then "
                             "its train.py run's, beside another: only the totals compare")
    parser.add_argument("--epochs", type=int, default=0, help="set-up check: this many epochs for every task "
                                                              "(0: benchmark.yaml's)")
    parser.add_argument("--max_train_examples", type=int, default=0, help="set-up check: the first N training rows")
    parser.add_argument("--max_eval_examples", type=int, default=0, help="set-up check: the first N dev rows")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    a.data_dir = os.path.abspath(a.data_dir)
    if a.child:
        child_peer(a, a.child, a.out)
        return

    a.workdir = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="bench_suite_"))
    a.logdir = os.path.abspath(a.logdir or os.path.join(a.workdir, "logs"))
    os.makedirs(a.logdir, exist_ok=True)
    print(f"machine: {common.machine()}", flush=True)
    check = a.epochs or a.max_train_examples or a.max_eval_examples
    plan = {task: settings(a, get_task(task)) for task in a.tasks}
    for task, s in plan.items():
        print(f"{task}: {s.epochs} epochs, lr {s.max_lr:g}, batch {s.batch_size}, max_seq_len {s.max_seq_len}, "
              f"seed {s.seed}, warmup {s.warmup_prop}, weight decay {s.weight_decay}, clip {s.max_grad_norm}, "
              f"eval batch {s.val_batch_size}", flush=True)
    if check:
        print(f"SET-UP CHECK, not a comparison: epochs {a.epochs or 'as benchmark.yaml'}, first "
              f"{a.max_train_examples or 'all'} train and {a.max_eval_examples or 'all'} dev rows, test files whole",
              flush=True)
    summary_path = os.path.join(a.logdir, "summary.json")
    results = finished_tasks(a, summary_path, plan, bool(check))
    rows = {task: expected_rows(a, get_task(task)) for task in a.tasks}
    if a.together and "ours" in a.sides and not results["ours"]:
        measure(a, "ours", a.tasks, plan, rows, results)
        write_summary(summary_path, a, plan, bool(check), results)
    for task in a.tasks:
        sides = [side for side in a.sides if task not in results[side]]
        if not sides:
            print(f"{task}: measured before, in {summary_path} (--again measures it again)", flush=True)
        for side in sides:
            measure(a, side, [task], plan, rows, results)
        # after each task: an interrupted suite resumes at the next task, each task's pair on one machine
        write_summary(summary_path, a, plan, bool(check), results)
    report(a, results)
    print(json.dumps({"load_average_at_end": os.getloadavg()[0]}))


def measure(a: argparse.Namespace, side: str, tasks: list[str], plan: dict[str, Settings],
            rows: dict[str, dict[str, int]], results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """One side's process for ``tasks`` (the peer: one task; ours: one, or all with --together), its results
    checked against the rows data.py reads and put in ``results``."""
    log_path = os.path.join(a.logdir, f"{side}_{'_'.join(tasks)}.log")
    if os.path.exists(log_path):
        os.remove(log_path)  # one run per log
    load = os.getloadavg()[0]
    specs = [get_task(task) for task in tasks]
    measured = run_ours(a, specs, plan, log_path) if side == "ours" else {tasks[0]: run_peer(a, specs[0], log_path)}
    for spec in specs:
        result = measured[spec.name]
        if result["rows"] != rows[spec.name]:
            raise SystemExit(f"suite.py: {side} {spec.name} read rows {result['rows']}, data.py reads "
                             f"{rows[spec.name]}: not the same data (log: {log_path})")
        result["machine"] = common.machine()
        results[side][spec.name] = result
        print(f"{spec.name:5s} {side}: {wall(result)}, {shown(spec, result)} (load average {load:.2f} before; "
              f"log {log_path})", flush=True)


def finished_tasks(a: argparse.Namespace, summary_path: str, plan: dict[str, Settings],
                   check: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """The results of an earlier run of this command into --logdir, for the tasks measured with these settings:
    both sides of a task or neither (a pair is measured together), and with --together ours' for every task or
    none (one process); none with --again."""
    results: dict[str, dict[str, dict[str, Any]]] = {side: {} for side in SIDES}
    if a.again or not os.path.exists(summary_path):
        return results
    with open(summary_path, encoding="utf-8") as stream:
        earlier = json.load(stream)
    if earlier["set_up_check"] != check or earlier.get("inputs") != inputs(a):
        return results
    same = [task for task, s in plan.items() if earlier["settings"].get(task) == vars(s)]
    for side in a.sides:
        measured = [task for task in same if task in earlier["results"].get(side, {})]
        if a.together and side == "ours" and len(measured) < len(plan):
            continue
        for task in measured:
            if a.together or all(task in earlier["results"].get(other, {}) for other in a.sides):
                results[side][task] = earlier["results"][side][task]
    return results


def inputs(a: argparse.Namespace) -> dict[str, Any]:
    """What a task's measurement read besides its settings: the data, a set-up check's caps, and whether ours ran
    the tasks together (only if so: a summary written before --together existed resumes)."""
    return {"data_dir": a.data_dir, "epochs": a.epochs, "max_train_examples": a.max_train_examples,
            "max_eval_examples": a.max_eval_examples, **({"together": True} if a.together else {})}


def write_summary(path: str, a: argparse.Namespace, plan: dict[str, Settings], check: bool,
                  results: dict[str, dict[str, dict[str, Any]]]) -> None:
    summary = {"tasks": a.tasks, "sides": a.sides, "set_up_check": check, "inputs": inputs(a),
               "settings": {task: vars(s) for task, s in plan.items()},
               "results": {side: results[side] for side in a.sides}}
    with open(path + ".tmp", "w", encoding="utf-8") as stream:
        json.dump(summary, stream, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
