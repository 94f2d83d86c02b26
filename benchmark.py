"""Benchmark one model on several GLUE tasks in one command: features, fine-tunes over seeds, a scoreboard.

    python benchmark.py --tasks RTE,MRPC,STS-B,CoLA,SST-2 --data_dir glue_data --model <name or path> --seeds 3

Options and per-task hyperparameters are in ``benchmark.yaml``. ``glue_support/benchmark_plan.py`` plans the runs
(a task, a cell of its grid, a seed); here their files are copied and hashed, their features built and each run is
one ``train.py`` process (``Schedule``: ``bench.parallel`` at once), resumed or skipped where an earlier invocation
started or finished it; with ``bench.restarts`` a cell's degenerate run is run again with another seed
(``cell_restarts``). After every finished run the scoreboard is written; with ``bench.predict`` each task's
selected run (``glue_support/selection.py``) then predicts its test sets. ``--aml.submit`` makes the runs an Azure
ML pipeline instead (``aml_submit.submit_benchmark``).
"""
from __future__ import annotations

import functools
import glob
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import yaml
from tqdm import tqdm

from glue_processors import TaskSpec, get_task
from glue_support import model_card, parallel, provenance, scoreboard, selection, submission
from glue_support.atomic_write import atomic_path, write_json
from glue_support.benchmark_plan import (
    ENDED,
    KEEP_BEST,
    RUN_RECORD,
    BenchmarkArguments,
    Run,
    apply_recipe,
    cap,
    capped_rows,
    earlier_record,
    glue_file,
    model_slug,
    parse_tasks,
    plan,
    plan_restarts,
    read_record,
    recipe_names,
    require_glue_file,
    restart,
    run_identity,
    splits,
    starting_tasks,
    test_files,
    trained_tasks,
    training_sizes,
)
from glue_support.command_line import CONFIG_PATH, answer_help, expand_params, expand_short_names, parse_config
from glue_support.exit_codes import ConfigError, run_main
from glue_support.marlin import getlogger
from glue_support.option_docs import cli_value
from glue_support.output_folder import locked
from glue_support.path_checks import require_folder, require_path, require_writable_folder
from glue_support.run_record import describe_model, read_diverged, read_json, read_run, record_folders, recorded_model
from glue_support.runtime import on_stop_signals

logger = getlogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARK_CONFIG = os.path.join(HERE, "benchmark.yaml")


def source_file(args: BenchmarkArguments, spec: TaskSpec, set_type: str) -> str:
    """The GLUE file runs read for ``set_type``: ``<data_dir>/<Task>/<set_type>.tsv``, or under a cap
    (``bench.max_train_examples``, ``bench.max_eval_examples``) a copy of its header and first N rows in
    ``<output_dir>/subsets/<Task>/<set_type>-first<N>/``, written where it is not already: its size and SHA-256 are
    then what the runs and features record, so a quick check never passes for a run on the whole file."""
    if not cap(args, set_type):
        return glue_file(args, spec, set_type)
    subset = os.path.join(args.output_dir, "subsets", spec.name, f"{set_type}-first{cap(args, set_type)}",
                          f"{set_type}.tsv")
    rows = capped_rows(args, spec, set_type)
    if not os.path.exists(subset) or pathlib.Path(subset).read_bytes() != rows:
        with atomic_path(subset) as temporary, open(temporary, "wb") as stream:
            stream.write(rows)
    return subset


def read_sources(args: BenchmarkArguments, specs: list[TaskSpec]) -> dict[str, dict[str, dict[str, Any]]]:
    """Size and SHA-256 of every file the runs read (``source_file``), by task and file name: what features and
    finished runs are checked against before they are reused. Read once per invocation, before any run starts."""
    return {spec.name: {f"{set_type}.tsv": provenance.file_identity(source_file(args, spec, set_type))
                        for set_type in splits(spec)} for spec in specs}


def build_features(args: BenchmarkArguments, run: Run, files: dict[str, dict[str, Any]]) -> None:
    """train/ and dev/ features for the run's task, tokenizer and length (``ensure_features``) from its files
    (``files``: ``read_sources``), with the seconds spent building them in ``featurize_seconds.json`` for the
    scoreboard."""
    timings_path = os.path.join(run.features, "featurize_seconds.json")
    timings = read_json(timings_path) or {}
    for set_type in splits(run.spec):
        folder = os.path.join(run.features, "train" if set_type == "train" else "dev")
        seconds = ensure_features(args, run.spec, source_file(args, run.spec, set_type),
                                  folder, run.settings.max_seq_len, files[f"{set_type}.tsv"])
        if seconds is not None:
            timings[set_type] = seconds
            write_json(timings_path, timings)


def ensure_features(args: BenchmarkArguments, spec: TaskSpec, source: str, folder: str, max_seq_len: int,
                    identity: dict[str, Any]) -> Optional[float]:
    """The features of the GLUE file ``source`` (``<set_type>.tsv``, of size and SHA-256 ``identity``) in
    ``folder``, unless an earlier run built them from the same bytes (data.featurize writes each file under a
    temporary name first, so a file present is complete); the seconds spent, None if reused. Everything but the
    task, file, tokenizer and length is config.yaml's ``dproc`` default, as ``python data.py`` uses it."""
    import data  # here: featurizing loads torch and transformers, which --report_only, --help and --aml need not

    with open(CONFIG_PATH, encoding="utf-8") as stream:
        dproc = yaml.safe_load(stream)["dproc"]
    set_type = os.path.basename(source).removesuffix(".tsv")
    expected = {"task": spec.name, "set_type": set_type, "tokenizer": args.model, "vocab": vocabulary(args.model),
                "max_seq_len": max_seq_len, "padding": dproc["padding"], "source_bytes": identity["bytes"],
                "source_sha256": identity["sha256"]}
    why = rebuild_reason(os.path.join(folder, f"{set_type}.tsv"), expected, source)
    if why is None:
        return None
    logger.info(f"{spec.name} {set_type} features: building them ({why})")
    if os.path.exists(os.path.join(folder, f"{set_type}.tsv")):  # the benchmark's own, outdated or damaged: data.py
        os.remove(os.path.join(folder, f"{set_type}.tsv"))        # replaces only features files it can read
    start = time.perf_counter()
    data.featurize(data.DataInterfaceArguments(input_dir=os.path.dirname(source), output_dir=folder),
                   data.DataProcessorArguments(**{**dproc, "task": spec.name, "set_type": set_type,
                                                  "max_seq_len": max_seq_len, "tokenizer": args.model}))
    return time.perf_counter() - start


@functools.cache
def tokenizer(model: str) -> Any:
    """``model``'s tokenizer. Cached: every run of a task would load it again for the same answers."""
    from transformers import AutoTokenizer

    from glue_support import embedded_model

    return AutoTokenizer.from_pretrained(embedded_model.resolve(model))


def vocabulary(model: str) -> str:
    """The fingerprint data.py records of ``model``'s vocabulary."""

    return provenance.vocab_fingerprint(tokenizer(model))


def check_lengths(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec]) -> None:
    """Every task's ``max_seq_len`` values within what ``--model`` takes (its tokenizer's ``model_max_length``,
    unless that is transformers' "no limit" sentinel), refused before any work naming the task's option: found
    when its features are built, the other tasks' runs would have trained first."""
    import data  # here: it loads torch and transformers, which --report_only, --help and --aml need not

    for spec in specs:
        values = config[spec.hf_name]["max_seq_len"]
        for length in values if isinstance(values, list) else [values]:
            data.check_max_seq_len(length, args.model, tokenizer(args.model), f"--{spec.hf_name}.max_seq_len")


def rebuild_reason(path: str, expected: dict[str, Any], source: str) -> Optional[str]:
    """Why the features file at ``path`` cannot serve a run that needs ``expected`` (fields of its metadata), or
    None if it can: one that is missing, from an older data.py, damaged, or made from other bytes of ``source``
    (the GLUE file), another tokenizer or length is built again."""
    import data  # see build_features

    if not os.path.exists(path):
        return "none built yet"
    try:
        metadata = data.read_metadata(path)
    except (OSError, ValueError) as error:
        return str(error)
    changed = [key for key, value in expected.items() if metadata.get(key) != value]
    if "source_sha256" in changed or "source_bytes" in changed:
        return (f"{source} is not the file they were made from: {metadata['source_bytes']} -> "
                f"{expected['source_bytes']} bytes, sha256 {metadata['source_sha256'][:12]} -> "
                f"{expected['source_sha256'][:12]}")
    return ", ".join(f"{key} {metadata.get(key)!r} -> {expected[key]!r}" for key in changed) or None


def runs_at_once(args: BenchmarkArguments) -> int:
    """``bench.parallel``, or with 0 what ``parallel.auto_parallel`` gives this machine; refused before any work
    where the machine has too few GPUs or cores for it."""
    if args.parallel == 1:
        return 1
    gpus, cores = parallel.visible_gpus(os.environ), parallel.cpu_cores()
    count = args.parallel or parallel.auto_parallel(args.nproc_per_node, gpus, cores)
    try:
        parallel.shares(count, args.nproc_per_node, gpus, cores)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not args.parallel:
        logger.info(f"benchmark.py: up to {count} run{'s' if count > 1 else ''} at once (--parallel 0: "
                    f"{f'{len(gpus)} GPUs' if gpus else f'{cores} cores'}, {args.nproc_per_node} process(es) a run)")
    return count


def run_shares(args: BenchmarkArguments, count: int, to_run: int) -> list[dict[str, str]]:
    """The environment each of ``count`` runs at once (``runs_at_once``) starts with (``glue_support/parallel.py``),
    but no more runs at once than the ``to_run`` left: a share left idle would be a run's threads or GPUs lost (one
    run of a 2-core machine's two shares would train on one core)."""
    at_once = max(1, min(count, to_run))
    if at_once < count:
        logger.info(f"benchmark.py: {at_once} run{'s' if at_once > 1 else ''} at once ({to_run} to run)")
    if at_once == 1:
        return [{}]
    return parallel.shares(at_once, args.nproc_per_node, parallel.visible_gpus(os.environ), parallel.cpu_cores())


def train_command(args: BenchmarkArguments, run: Run, resume: bool) -> list[str]:
    start = get_task(run.settings.init_from) if run.settings.init_from else run.spec
    options = {
        # a model fine-tuned for other labels gets a new head: train.py refuses it otherwise
        "model.hf_model": run.init_model or args.model,
        "model.ignore_mismatched_sizes": start.labels != run.spec.labels,
        "tmod.trainpath": os.path.join(run.features, "train"),
        "tmod.valpath": os.path.join(run.features, "dev"), "tmod.output_dir": run.folder, "tmod.seed": run.seed,
        "tmod.max_lr": run.settings.max_lr, "trainer.epochs": run.settings.epochs,
        "trainer.train_batch_size": run.settings.batch_size, "trainer.disable_tqdm": True,
        "ckpt.checkpoint": True, "ckpt.period_steps": args.checkpoint_steps or None,
        "tmod.overwrite_output_dir": True, "ckpt.resume": resume,
        "tmod.keep_best": KEEP_BEST,
        # only those that differ from train.py's defaults: the command, like the run's identity, is otherwise as before
        **{f"tmod.{key}": value for key, value in run.settings.training_options().items()},
    }
    script = os.path.join(HERE, "train.py")
    launcher = [sys.executable, script] if args.nproc_per_node <= 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc_per_node}",
        script]
    return [*launcher, *(part for key, value in options.items() for part in (f"--{key}", cli_value(value))),
            *shlex.split(args.train_options)]


@dataclass
class Training:
    """A train.py run from its start (``start_training``) to its end (``finish_training``)."""

    run: Run
    record: dict[str, Any]  # its benchmark_run.json
    keep_model: bool  # its model stays (``bench.keep_models``, or until the selection is known: ``run_all``)

    @property
    def log_path(self) -> str:
        return os.path.join(self.run.folder, "train.log")


def start_training(args: BenchmarkArguments, pool: parallel.ProcessPool[Training], run: Run,
                   files: dict[str, dict[str, Any]], model: dict[str, Any], record: Optional[dict[str, Any]],
                   keep_model: bool) -> None:
    """Start ``run``'s train.py in a free share of ``pool``, resumed if ``record`` (``earlier_record``) says it
    was started; ``files``: its files' identities (``read_sources``), ``model``: the model's
    (``provenance.model_identity``)."""
    resume = record is not None
    # data_dir: where the files were read, recorded but not a setting (the same bytes elsewhere are the same data)
    # restart_of: what the run replaces, beside its settings (a cell's runs share their settings but the seed)
    record = record or {"settings": run_identity(args, run, files, model), "data_dir": args.data_dir,
                        **({"restart_of": run.restart_of} if run.restart_of is not None else {}),
                        "status": "running", "wall_s": 0.0, "attempts": 0}
    record["attempts"] += 1
    write_record(run, record)
    training = Training(run, record, keep_model)
    command = train_command(args, run, resume)
    with open(training.log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        child = pool.start(training, command, log, cwd=HERE)
    share = parallel.describe(child.share)
    logger.info(f"{run.name}: {'resuming' if resume else 'training'} in {run.folder}"
                f"{', ' + share if share else ''} (log: {training.log_path})")


def finish_training(training: Training, returncode: int, wall_s: float, stopping: bool) -> Optional[str]:
    """Record the end of ``training``'s train.py: done (checkpoints removed, and its model unless kept); diverged,
    where train.py stopped it at a loss or weights not finite and said so in its results.json (a result, never
    retried: its checkpoints are removed); or, after a stop signal (``stopping``), left to resume. Returns what
    went wrong where it failed, else None."""
    run, record = training.run, training.record
    record["wall_s"] += wall_s
    write_record(run, record)
    if returncode != 0 and not diverged(run.folder):
        if stopping:  # it wrote a checkpoint and exited: the next invocation resumes it
            return None
        return f"{run.name} failed (exit {returncode}); the end of {training.log_path}:\n{log_tail(training.log_path)}"
    record["status"] = "done" if returncode == 0 else "diverged"
    write_record(run, record)
    shutil.rmtree(os.path.join(run.folder, "checkpoints"), ignore_errors=True)
    if not training.keep_model:
        for path in model_files(run.folder):
            os.remove(path)
    return None


def diverged(folder: str) -> bool:
    """Whether train.py stopped the run in ``folder`` because its training diverged: it exits 1 with ``diverged``
    (step, epoch, loss) in its results.json, and no model."""
    results = read_json(os.path.join(folder, "results.json"))
    return isinstance(results, dict) and "diverged" in results


def log_tail(path: str) -> str:
    """The last 15 lines of a child's log, to show where it failed."""
    with open(path, encoding="utf-8", errors="replace") as log:
        return "".join(log.readlines()[-15:])


def model_files(folder: str) -> list[str]:
    """The weights of the model a run saved in ``folder`` (the config and tokenizer are small, and stay)."""
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
            if name.endswith(".safetensors") or (name.startswith("pytorch_model") and name.endswith(".bin"))]


def write_scoreboard(args: BenchmarkArguments, tasks: list[str], references: str) -> dict[str, str]:
    """The scoreboard (``scoreboard.write``), then the model cards of each task's selected run and of the whole
    benchmark (``model_card.write_benchmark_cards``); their paths, the cards' keyed ``card <task>``, ``card
    benchmark``."""
    summary = scoreboard.folder_summary(args.output_dir, tasks, references, args.select)
    paths = scoreboard.write(args.output_dir, summary)
    cards = model_card.write_benchmark_cards(args.output_dir, summary, lambda folder: bool(model_files(folder)))
    return {**paths, **{f"card {key}": path for key, path in cards.items()}}


def cell_restarts(args: BenchmarkArguments, planned: list[Run], queued: list[Run], files: dict[str, dict[str, Any]],
                  model: dict[str, Any]) -> list[tuple[Run, Optional[dict[str, Any]]]]:
    """The runs ``planned``'s cell (the runs of one cell this invocation plans) is to run again now, each with its
    earlier record (``earlier_record``; None before it starts): its restarts an earlier invocation recorded and did
    not end, and those its degenerate runs call for (``plan_restarts``, ``bench.restarts`` per cell). ``queued``:
    runs of the cell pending or running, which are neither resumed nor planned again."""
    folder = os.path.dirname(planned[0].folder)
    records = {record["settings"]["seed"]: record
               for record in map(read_record, glob.glob(os.path.join(folder, "seed*"))) if record is not None}
    busy = {run.seed for run in queued}
    restarts = {**{seed: record["restart_of"] for seed, record in records.items() if "restart_of" in record},
                **{run.seed: run.restart_of for run in queued if run.restart_of is not None}}
    finished = [read_run(os.path.join(folder, f"seed{seed}")) for seed, record in records.items()
                if record["status"] == "done"]
    degenerate = {run.seed: run.degenerate for run in finished if run.degenerate}
    resumed = {seed: restarts[seed] for seed, record in records.items()
               if seed in restarts and seed not in busy and record["status"] not in ENDED}
    new = plan_restarts([*(run.seed for run in planned), *records, *busy], degenerate, restarts, args.restarts)
    runs = [restart(planned[0], seed, replaced) for seed, replaced in {**resumed, **new}.items()]
    for run in runs[len(resumed):]:
        logger.warning(f"{run.name}: runs the cell again for seed {run.restart_of}, degenerate "
                       f"({degenerate[run.restart_of]}) (--restarts {args.restarts} per cell)")
    return [(run, None if run.settings.init_from else earlier_record(args, run, files, model)) for run in runs]


def write_record(run: Run, record: dict[str, Any]) -> None:
    write_json(os.path.join(run.folder, RUN_RECORD), record)


PREDICTION_RECORD = "prediction.json"  # in predictions/<Task>/: the run and test files its predictions came from


def predict_all(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec]) -> None:
    """``bench.predict``: each task's selected run predicts its test sets (``predict``), the leaderboard files are
    gathered in ``<output_dir>/submission/`` (WNLI's from its majority class with ``wnli.majority``) and zipped
    when all 11 are there."""
    folder = os.path.join(args.output_dir, "submission")
    majority = config["wnli"]["majority"]
    zip_path = os.path.join(args.output_dir, "glue_submission.zip")
    if os.path.exists(zip_path):  # an earlier command's; written again at the end, from this command's predictions
        os.remove(zip_path)
    for spec in specs:
        run_folder = selected_run(args, spec.name)
        if run_folder:
            for path in predict(args, spec, run_folder):
                os.makedirs(folder, exist_ok=True)
                shutil.copyfile(path, os.path.join(folder, os.path.basename(path)))
    if majority:
        wnli = get_task("WNLI")
        submission.write_majority_class(wnli, os.path.join(args.data_dir, wnli.download.folder), args.output_dir)
    write_submission_zip(folder, zip_path)


def selected_run(args: BenchmarkArguments, task: str) -> Optional[str]:
    """The folder of ``task``'s selected run (``selection.select`` by ``bench.select``), the one the scoreboard
    reports; None while none has finished."""
    chosen = selection.select(args.output_dir, task, args.select)
    return chosen.run.folder if chosen and chosen.run else None


def require_model(run_folder: str, task: str, use: str) -> None:
    """The selected run ``run_folder`` of ``task`` must hold its model, for ``use``; refused otherwise."""
    if not model_files(run_folder):
        raise ValueError(f"{run_folder}: {task}'s selected run kept no model to {use} (removed when it finished, "
                         "not needed then); delete that run folder to train it again")


def remove_unselected_models(args: BenchmarkArguments, tasks: Iterable[str]) -> None:
    """The models of ``tasks``' runs but each task's selected one, kept until the selection was known (for
    ``bench.predict`` or ``init_from``); the selected ones stay for a later command to use."""
    for task in tasks:
        selected = selected_run(args, task)
        for record in glob.glob(os.path.join(args.output_dir, "runs", task, "*", "seed*", RUN_RECORD)):
            if os.path.dirname(record) != selected:
                for path in model_files(os.path.dirname(record)):
                    os.remove(path)


def predict(args: BenchmarkArguments, spec: TaskSpec, run_folder: str) -> list[str]:
    """The leaderboard files of ``spec``'s test sets (and AX's for MNLI) as the model of ``run_folder`` predicts
    them, by ``train.py --tmod.predictpath`` into ``<output_dir>/predictions/<Task>/``, from test features built
    like its dev features; reused when that run and those test files made them."""
    output = os.path.join(args.output_dir, "predictions", spec.name)
    files = test_files(spec, args.data_dir)
    record = {"run": os.path.relpath(run_folder, args.output_dir), "run_record": read_record(run_folder),
              "test": {os.path.basename(path): provenance.file_identity(path) for path in files}}
    written = [os.path.join(output, "submission", task.submission_file(os.path.basename(path).removesuffix(".tsv")))
               for path, task in files.items()]
    if read_json(os.path.join(output, PREDICTION_RECORD)) == record and all(map(os.path.exists, written)):
        logger.info(f"{spec.name} test predictions of {run_folder}: made earlier, reused")
        return written
    require_model(run_folder, spec.name, "predict with")
    settings = record["run_record"]["settings"]
    features = os.path.join(args.output_dir, "features", spec.name,
                            f"{model_slug(args.model)}-len{settings['max_seq_len']}", "test")
    for path, task in files.items():
        ensure_features(args, task, path, features, settings["max_seq_len"], record["test"][os.path.basename(path)])
    if os.path.exists(os.path.join(output, PREDICTION_RECORD)):
        os.remove(os.path.join(output, PREDICTION_RECORD))  # the predictions it describes are being replaced
    logger.info(f"{spec.name}: predicting its test sets with {run_folder} into {output}")
    run_logged([sys.executable, os.path.join(HERE, "train.py"), "--model.hf_model", run_folder,
                "--tmod.predictpath", features, "--tmod.output_dir", output, "--tmod.overwrite_output_dir", "true",
                "--trainer.disable_tqdm", "true", *shlex.split(args.train_options)],
               os.path.join(output, "predict.log"), f"{spec.name} prediction")
    write_json(os.path.join(output, PREDICTION_RECORD), record)
    return written


def run_logged(command: list[str], log_path: str, what: str) -> None:
    """``command`` with its output appended to ``log_path``; a failure stops the benchmark with the log's end."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE).returncode
    if returncode != 0:
        raise SystemExit(f"benchmark.py: {what} failed (exit {returncode}); the end of {log_path}:\n"
                         f"{log_tail(log_path)}\nRun the same command again to retry it.")


def write_submission_zip(folder: str, zip_path: str) -> None:
    """``submission.write_zip`` once ``folder`` holds all the leaderboard's files; while some are missing (a
    benchmark of some of the tasks: a normal use), a warning naming each, and no zip."""
    files = submission.leaderboard_files()
    missing = [name for name in files if not os.path.isfile(os.path.join(folder, name))]
    if not missing:
        submission.write_zip(folder, zip_path)
        return
    logger.warning(f"{zip_path} not written: {folder} lacks {len(missing)} of the leaderboard's {len(files)} files; "
                   "benchmark those tasks with --predict true into this --output_dir to complete it:")
    for name in missing:
        logger.warning(f"  {name}: no {files[name].what} predictions")


def report_submission(path: str) -> None:
    """``--check_submission``: every problem of the leaderboard zip or folder at ``path`` on its own line, then a
    summary line; exit 1 if there is a problem. It reads those files only: no features, no training, no torch."""
    require_path("--bench.check_submission", path, "a leaderboard zip, or a folder of its files")
    problems = submission.check_submission(path)
    for problem in problems:
        print(problem)
    if problems:
        print(f"NOT OK: {path} has problems ({len(problems)} lines above); the leaderboard would refuse or misscore it")
        raise SystemExit(1)
    print(f"OK: {len(submission.leaderboard_files())} files, each with its test set's official rows in index order "
          f"and predictions the leaderboard takes: {path} is ready to upload")


class Schedule:
    """The runs of one invocation, from the first start to the last exit: each started in a free share of
    ``pool`` (a run with ``init_from`` once its source task has no run pending or running), each finished one
    recorded and the scoreboard written; a stop signal passed on to every running run (each stops at a
    checkpoint) and none started after it; a failed run stopping the others at a checkpoint too."""

    def __init__(self, args: BenchmarkArguments, tasks: list[str], references: str,
                 pool: parallel.ProcessPool[Training], sources: dict[str, dict[str, dict[str, Any]]],
                 model: dict[str, Any], pending: list[tuple[Run, Optional[dict[str, Any]]]],
                 keep_until_selected: set[str], planned: dict[str, list[Run]]):
        self.args, self.tasks, self.references = args, tasks, references
        self.pool = pool
        self.sources = sources  # each task's files' identities (read_sources)
        self.model = model  # the model's identity (provenance.model_identity)
        self.pending = pending  # (run, its earlier record) in the plan's order
        self.keep_until_selected = keep_until_selected  # tasks whose models stay until the selection is known
        self.planned = planned  # the planned runs by cell folder, which bench.restarts runs again (cell_restarts)
        self.received: list[int] = []  # stop signals
        self.failures: list[str] = []
        self.started: list[str] = []  # runs in the order they started, which the messages follow
        self.diverged: list[str] = []  # runs whose training diverged, where (for the last message)
        self.stopped: set[str] = set()  # runs that exited at a stop signal, to resume (they exit in any order)
        self.building = False  # building a run's features, which a stop signal may cut short

    @property
    def stopping(self) -> bool:
        return bool(self.received or self.failures)

    def stop(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        self.pool.signal_all(signum)
        # building features (data.featurize writes each file complete or not at all) is stopped at once: the
        # runs training meanwhile end at their checkpoints (run's clean-up waits for them)
        if self.building or not self.pool.running:
            training = ", ".join(child.key.run.name for child in self.pool.running)
            raise SystemExit(f"benchmark.py: stopped by {signal.Signals(signum).name} before the next run started"
                             + (f" ({training} stopped at a checkpoint)" if training else "")
                             + "; run the same command again to go on")

    def run(self) -> None:
        """Every pending run; SystemExit naming the failure or the signal where they did not all finish."""
        progress = tqdm(total=len(self.pending), desc="benchmark runs", unit="run")
        with on_stop_signals(self.stop):
            try:
                while self.pool.running or (self.pending and not self.stopping):
                    self.start_ready(progress)
                    for child, returncode in self.pool.wait_any():
                        self.finish(child, returncode, progress)
            except BaseException:
                # a refusal, a crash or a stop while building features: the running train.py processes (in
                # sessions of their own) stop at a checkpoint instead of running on unwatched
                if not self.stopping:
                    self.pool.signal_all(signal.SIGTERM)
                while ended := self.pool.wait_any():
                    for child, returncode in ended:
                        finish_training(child.key, returncode, time.perf_counter() - child.started, stopping=True)
                raise
            finally:
                progress.close()
        if self.diverged:
            logger.warning(f"benchmark.py: {len(self.diverged)} run{'s' if len(self.diverged) > 1 else ''} diverged "
                           f"({', '.join(self.diverged)}): shown on the scoreboard, left out of every score; a lower "
                           "learning rate is another cell (--<task>.max_lr), and a run's folder deleted is run again")
        if self.failures:
            raise SystemExit("benchmark.py: " + "\n".join(self.failures) + "\nRun the same command again to resume "
                             + ("it." if len(self.failures) + len(self.stopped) == 1 else "the runs stopped."))
        if self.received:
            one = len(self.stopped) == 1
            stopped = [name for name in self.started if name in self.stopped]
            raise SystemExit(f"benchmark.py: stopped by {signal.Signals(self.received[0]).name} during "
                             f"{', '.join(stopped) or 'the last runs, which had finished'}; "
                             f"run the same command again to resume {'it' if one else 'them'} from "
                             f"{'its checkpoint' if one else 'their checkpoints'}")

    def start_ready(self, progress: tqdm) -> None:
        """Start pending runs while the pool has room (skipping those finished earlier)."""
        while self.pool.has_room() and not self.stopping and (chosen := self.next_run()):
            run, record = chosen
            files = self.sources[run.spec.name]
            if run.settings.init_from:
                source = get_task(run.settings.init_from).name
                run.init_model = selected_run(self.args, source)
                if run.init_model is None:
                    option = f"--{run.spec.hf_name}.init_from"
                    raise ValueError(f"{run.name} starts from {source}'s selected run ({option}), and every {source} "
                                     f"run diverged: give {source} a lower learning rate, or leave {option} empty")
                require_model(run.init_model, source, "start from")
                record = earlier_record(self.args, run, files, self.model)
            if record is not None and record["status"] in ENDED:
                logger.info(f"{run.name}: {'finished' if record['status'] == 'done' else 'diverged'} earlier, skipped"
                            + ("" if record["status"] == "done" else f" (delete {run.folder} to run it again)"))
                progress.update()
                continue
            self.building = True
            try:
                build_features(self.args, run, files)
            finally:
                self.building = False
            if self.stopping:  # a stop that came while the run was being prepared: it never starts
                break
            start_training(self.args, self.pool, run, files, self.model, record,
                           self.args.keep_models or run.spec.name in self.keep_until_selected)
            self.started.append(run.name)

    def next_run(self) -> Optional[tuple[Run, Optional[dict[str, Any]]]]:
        """The first pending run that may start: one whose init_from task has no run left pending or running."""
        busy = {run.spec.name for run, _ in self.pending} | {child.key.run.spec.name for child in self.pool.running}
        for index, (run, _) in enumerate(self.pending):
            if not run.settings.init_from or get_task(run.settings.init_from).name not in busy:
                return self.pending.pop(index)
        return None

    def finish(self, child: parallel.Child[Training], returncode: int, progress: tqdm) -> None:
        training = child.key
        failure = finish_training(training, returncode, time.perf_counter() - child.started, self.stopping)
        if failure:
            self.failures.append(failure)
            self.pool.signal_all(signal.SIGTERM)
        elif training.record["status"] not in ENDED:
            self.stopped.add(training.run.name)
        else:
            progress.update()
            run = training.run
            if training.record["status"] == "diverged":
                found = read_diverged(run.folder)
                self.diverged.append(f"{run.name} at step {found.step}")
                logger.warning(f"{run.name}: diverged at step {found.step} (epoch {found.epoch}, loss {found.loss}): "
                               f"shown on the scoreboard, left out of every score ({training.record['wall_s']:.0f} s)")
            else:
                finished = read_run(run.folder)
                logger.info(f"{run.name}: {run.spec.metric_label} {finished.score:.4f} at its best validation, "
                            f"{finished.last_score:.4f} at its last ({training.record['wall_s']:.0f} s)"
                            + (f", degenerate: {finished.degenerate}" if finished.degenerate else ""))
                if finished.degenerate and self.args.restarts:
                    self.restart(run, progress)
            write_scoreboard(self.args, self.tasks, self.references)

    def restart(self, run: Run, progress: tqdm) -> None:
        """Queue the runs ``run``'s cell is to run again now that ``run`` ended degenerate (``cell_restarts``)."""
        cell = os.path.dirname(run.folder)
        queued = [other for other, _ in self.pending] + [child.key.run for child in self.pool.running]
        restarts = cell_restarts(self.args, self.planned[cell],
                                 [other for other in queued if os.path.dirname(other.folder) == cell],
                                 self.sources[run.spec.name], self.model)
        self.pending += restarts
        progress.total += len(restarts)
        progress.refresh()


def planned_cells(runs: list[Run]) -> dict[str, list[Run]]:
    """``runs`` by the folder of their cell."""
    cells: dict[str, list[Run]] = {}
    for run in runs:
        cells.setdefault(os.path.dirname(run.folder), []).append(run)
    return cells


def run_all(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec], references: str) -> None:
    """Every planned run not finished yet, the scoreboard after each (``Schedule``); then with ``bench.predict``
    the submission, and the models kept until the selection was known removed but the selected ones."""
    require_path("--bench.data_dir", args.data_dir, "the folder with one subfolder per GLUE task")
    count = runs_at_once(args)
    runs = plan(args, config, specs, training_sizes(args, specs))
    logger.info(f"benchmark.py: {args.model} on {', '.join(spec.name for spec in specs)}: {len(runs)} runs "
                f"into {args.output_dir}")
    check_lengths(args, config, specs)
    model = provenance.model_identity(args.model)  # once: every run of this invocation records it
    recorded = recorded_model(args.output_dir)  # refuses runs recorded without it, and a folder of two models
    sources = read_sources(args, specs)
    # every refusal before any work, but for a run that starts from another task's selected run: known only once
    # that task's runs (planned before) are done
    records = [None if run.settings.init_from else earlier_record(args, run, sources[run.spec.name], model)
               for run in runs]
    this = {"name": args.model, "identity": model}
    if recorded not in (None, this):  # runs outside this plan (other cells, seeds or tasks) of another model
        raise ConfigError(f"{args.output_dir} holds runs of {describe_model(recorded)}, not of "
                          f"{describe_model(this)}: a benchmark folder holds the runs of one model; choose another "
                          "--bench.output_dir")
    pending = list(zip(runs, records))
    cells = planned_cells(runs)
    if args.restarts:  # those an earlier invocation's runs call for: restarts left to run or resume
        for cell in cells.values():
            pending += cell_restarts(args, cell, cell, sources[cell[0].spec.name], model)
    to_run = sum(1 for _, record in pending if record is None or record["status"] not in ENDED)
    # models kept until the selection is known: every task's to predict, else those of the tasks others start from
    keep_until_selected = {spec.name for spec in specs} if args.predict else set(starting_tasks(config, specs).values())
    Schedule(args, [spec.name for spec in specs], references, parallel.ProcessPool(run_shares(args, count, to_run)),
             sources, model, pending, keep_until_selected, cells).run()
    if args.predict:
        predict_all(args, config, specs)
    if not args.keep_models:
        remove_unselected_models(args, keep_until_selected)


def answer_help_with_recipes() -> None:
    """``--help``: benchmark.yaml's options (``answer_help``), then the recipes ``--recipe`` takes."""
    try:
        answer_help(BENCHMARK_CONFIG, short_group="bench")
    except SystemExit as done:
        if done.code == 0:
            print(f"\nRecipes (--recipe <name>, the files of recipes/): {', '.join(recipe_names())}")
        raise


def given_options(config: dict[str, Any]) -> set[str]:
    """The ``group.key`` options the command line gives (``--params`` and short names expanded): a recipe sets
    the others."""
    argv = expand_short_names(expand_params(sys.argv[1:]), config, "bench")
    return {token[2:] for token in argv if token.startswith("--")}


def main() -> None:
    answer_help_with_recipes()
    config = parse_config(BENCHMARK_CONFIG, short_group="bench")
    config = apply_recipe(config, given_options(config), BENCHMARK_CONFIG)
    args = BenchmarkArguments(**config["bench"])
    if args.check_submission:
        report_submission(args.check_submission)
        return
    if args.compare:
        from glue_support import compare  # here: it loads scipy, which the other commands start without

        os.makedirs(require_writable_folder("--bench.compare_dir", args.compare_dir, "the comparison's files"),
                    exist_ok=True)
        with locked(args.compare_dir, "--bench.compare_dir"):
            compare.COMPARISON.require_own_files(args.compare_dir)  # before the resampling, not after
            found = compare.compare([folder for folder in args.compare.split(",") if folder], args.select)
            paths = compare.write(found, args.compare_dir)
        print(compare.markdown(found))
        print("Comparison: " + ", ".join(paths.values()))
        return
    local_data = "://" not in args.data_dir and not args.data_dir.startswith("azureml:")
    specs = trained_tasks(args, config, parse_tasks(args, check_files=local_data and not args.report_only))
    if args.predict and config["wnli"]["majority"] and local_data and not args.report_only:
        for set_type in ("train", "test"):  # WNLI's file then comes from its train.tsv, whether or not it trains
            require_glue_file(args, os.path.join(args.data_dir, "WNLI", f"{set_type}.tsv"))
    if config["aml"]["submit"]:
        # refused before aml_submit loads the Azure ML SDK: these need no SDK to be read
        if args.restarts:
            raise ConfigError("--restarts: --aml.submit builds the pipeline's steps before any run ends, so none can "
                              "be added for a degenerate run: submit with --restarts 0, then run the same benchmark "
                              "locally with the pipeline's runs/ in --output_dir and --restarts N")
        if starting_tasks(config, specs):
            raise ConfigError("--aml.submit runs every task at once, and init_from needs the named task's runs "
                              "first: leave init_from empty there, or run the benchmark locally")
        if args.predict:
            raise ConfigError("--predict true runs locally, after the runs: submit without it, then run the same "
                              "benchmark locally with the pipeline's runs/ in --output_dir and --predict true")
        import aml_submit  # here: it loads the Azure ML SDK, which a local benchmark needs not

        with open(BENCHMARK_CONFIG, encoding="utf-8") as stream:
            aml_submit.submit_benchmark(args, config, yaml.safe_load(stream), specs)
        return
    references = args.references or os.path.join(HERE, "glue_references.json")
    if args.report_only:
        require_runs(args, specs)
    else:
        os.makedirs(require_writable_folder("--bench.output_dir", args.output_dir,
                                            "the benchmark's features, runs and scoreboard"), exist_ok=True)
    # before any write: a second benchmark there is refused having written nothing
    with locked(args.output_dir, "--bench.output_dir"):
        scoreboard.SCOREBOARD.require_own_files(args.output_dir)
        model_card.require_own_cards(args.output_dir, [spec.name for spec in specs])
        if not args.report_only:
            run_all(args, config, specs, references)
        elif args.predict:  # the runs there are, none trained: e.g. an Azure ML pipeline's runs/, downloaded
            predict_all(args, config, specs)
        if not specs:  # WNLI alone, under --wnli.majority: its leaderboard file is all there is
            return
        paths = write_scoreboard(args, [spec.name for spec in specs], references)
    print(open(paths["md"], encoding="utf-8").read())
    print("Scoreboard: " + ", ".join(paths.values()))


def require_runs(args: BenchmarkArguments, specs: list[TaskSpec]) -> None:
    """``--report_only``: ``bench.output_dir`` must be a benchmark's output folder holding runs of ``specs``, made
    by the model ``--model`` names; refused in one line otherwise, before anything is written."""
    require_folder("--bench.output_dir", args.output_dir, "the output folder of a benchmark, with its runs/")
    if specs and not any(record_folders(args.output_dir, spec.name) for spec in specs):
        raise ConfigError(f"--bench.output_dir {args.output_dir}: no benchmark run of "
                          f"{', '.join(spec.name for spec in specs)} there (runs/<Task>/<cell>/seed<N>/{RUN_RECORD}); "
                          "--report_only scores the runs a benchmark made: give its --output_dir and --tasks")
    recorded = recorded_model(args.output_dir)
    if recorded and recorded["name"] != args.model:
        raise ConfigError(f"--bench.model {args.model}: the runs in {args.output_dir} were made by "
                          f"{describe_model(recorded)}; give --model {recorded['name']}")


if __name__ == "__main__":
    run_main(main)
