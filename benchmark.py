"""Benchmark one model on several GLUE tasks in one command: features, fine-tunes over seeds, a scoreboard.

    python benchmark.py --tasks RTE,MRPC,STS-B,CoLA,SST-2 --data_dir glue_data --model <name or path> --seeds 3

Options and per-task hyperparameters are in ``benchmark.yaml``. For each task, ``data.featurize`` builds the
training and labeled dev features once per tokenizer and length (``<output_dir>/features/``, reused by later
runs); then each seed is one ``train.py`` process (under ``torchrun`` with ``bench.nproc_per_node`` > 1) writing
``<output_dir>/runs/<Task>/seed<N>/``. Runs go seed by seed across the tasks, so a benchmark stopped early
still has every task scored. Running the same command again skips finished runs and resumes an interrupted one
from its last checkpoint (every epoch and every ``bench.checkpoint_steps`` steps). After every finished run
``glue_support/scoreboard.py`` rewrites ``results.md``, ``results.json`` and ``results.png``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

import yaml
from tqdm import tqdm

from glue_processors import TaskSpec, get_task
from glue_support import scoreboard
from glue_support.atomic_write import write_json
from glue_support.marlin import getlogger
from glue_support.runtime import on_stop_signals
from glue_support.strict_config import CONFIG_PATH, ConfigError, answer_help, cli_value, parse_config, require_path

logger = getlogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARK_CONFIG = os.path.join(HERE, "benchmark.yaml")
RUN_RECORD = "benchmark_run.json"  # in each run folder: its settings, then its status and wall time


@dataclass
class BenchmarkArguments:
    """``bench`` in benchmark.yaml."""

    tasks: str
    data_dir: str
    model: str
    seeds: int
    first_seed: int
    output_dir: str
    nproc_per_node: int
    train_options: str
    checkpoint_steps: int
    keep_models: bool
    report_only: bool
    references: str


@dataclass
class TaskSettings:
    """One task's group in benchmark.yaml, named by the task's ``hf_name`` (``rte``, ``stsb``, ...)."""

    epochs: int
    max_lr: float
    batch_size: int
    max_seq_len: int
    seeds: int  # 0: bench.seeds; more: at most this many seeds for this task


@dataclass
class Run:
    """One fine-tune: a task and a seed, with the features it reads and the folder it writes."""

    spec: TaskSpec
    seed: int
    settings: TaskSettings
    features: str  # <output_dir>/features/<Task>/<tokenizer>-len<L>: train/ and dev/ inside
    folder: str

    @property
    def name(self) -> str:
        return f"{self.spec.name} seed {self.seed}"

    def record(self) -> Optional[dict[str, Any]]:
        path = os.path.join(self.folder, RUN_RECORD)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)


def model_slug(model: str) -> str:
    """A folder name for a hub id or path: features are reused only for the same tokenizer."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip("/"))[-80:]


def parse_tasks(args: BenchmarkArguments, check_files: bool) -> list[TaskSpec]:
    """The tasks named in ``bench.tasks``; with ``check_files``, each with its train and dev files present in
    ``bench.data_dir``."""
    specs = []
    for name in filter(None, (part.strip() for part in args.tasks.split(","))):
        try:
            spec = get_task(name)
        except ValueError as error:
            raise ConfigError(f"--bench.tasks: {error}") from None
        if spec.labeled is None:
            raise ConfigError(f"--bench.tasks: {spec.name} has no training data (it is scored with an MNLI model)")
        for set_type in ("train", *spec.dev_set_types) if check_files else ():
            path = os.path.join(args.data_dir, spec.name, f"{set_type}.tsv")
            if not os.path.exists(path):
                raise ConfigError(f"{path}: no such file; get the GLUE files with "
                                  f"python download_glue.py --tasks {spec.name} --data_dir {args.data_dir}")
        specs.append(spec)
    if not specs:
        raise ConfigError("--bench.tasks names no task: give e.g. --tasks RTE,MRPC")
    return specs


def plan(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec]) -> list[Run]:
    """Every (task, seed) run, seed-major: all tasks' first seed, then all tasks' second, ..."""
    runs = []
    for number in range(args.seeds):
        for spec in specs:
            settings = TaskSettings(**config[spec.hf_name])
            if settings.seeds and number >= settings.seeds:
                continue
            seed = args.first_seed + number
            features = os.path.join(args.output_dir, "features", spec.name,
                                    f"{model_slug(args.model)}-len{settings.max_seq_len}")
            runs.append(Run(spec, seed, settings, features, os.path.join(args.output_dir, "runs", spec.name,
                                                                         f"seed{seed}")))
    return runs


def build_features(args: BenchmarkArguments, run: Run) -> None:
    """train/ and dev/ features for the run's task, tokenizer and length, unless an earlier run built them
    (data.featurize writes each file under a temporary name first, so a file present is complete). Everything
    but the task, file, tokenizer and length is config.yaml's ``dproc`` default, as ``python data.py`` uses it."""
    import data  # here: featurizing loads torch and transformers, which --report_only, --help and --aml need not

    with open(CONFIG_PATH, encoding="utf-8") as stream:
        dproc = yaml.safe_load(stream)["dproc"]
    timings_path = os.path.join(run.features, "featurize_seconds.json")
    timings = scoreboard.read_json(timings_path) or {}
    for set_type in ("train", *run.spec.dev_set_types):
        folder = os.path.join(run.features, "train" if set_type == "train" else "dev")
        if reusable(os.path.join(folder, f"{set_type}.tsv"), args.model, run.settings.max_seq_len):
            continue
        start = time.perf_counter()
        data.featurize(
            data.DataInterfaceArguments(input_dir=os.path.join(args.data_dir, run.spec.name), output_dir=folder),
            data.DataProcessorArguments(**{**dproc, "task": run.spec.name, "set_type": set_type,
                                           "max_seq_len": run.settings.max_seq_len, "tokenizer": args.model}))
        timings[set_type] = time.perf_counter() - start
        write_json(timings_path, timings)


def reusable(path: str, model: str, max_seq_len: int) -> bool:
    """A features file built earlier for this tokenizer and length, in the format this data.py writes (one
    from an older data.py, or damaged, is built again)."""
    import data  # see build_features

    try:
        metadata = data.read_metadata(path)
    except (OSError, ValueError):
        return False
    return metadata["tokenizer"] == model and metadata["max_seq_len"] == max_seq_len


def run_settings(args: BenchmarkArguments, run: Run) -> dict[str, Any]:
    """What makes two runs the same experiment: a finished run is reused only if these match."""
    return {"task": run.spec.name, "seed": run.seed, "model": args.model,
            **{key: value for key, value in asdict(run.settings).items() if key != "seeds"},
            "nproc_per_node": args.nproc_per_node, "train_options": args.train_options}


def train_command(args: BenchmarkArguments, run: Run, resume: bool) -> list[str]:
    options = {
        "model.hf_model": args.model, "tmod.trainpath": os.path.join(run.features, "train"),
        "tmod.valpath": os.path.join(run.features, "dev"), "tmod.output_dir": run.folder, "tmod.seed": run.seed,
        "tmod.max_lr": run.settings.max_lr, "trainer.epochs": run.settings.epochs,
        "trainer.train_batch_size": run.settings.batch_size, "trainer.disable_tqdm": True,
        "ckpt.checkpoint": True, "ckpt.period_steps": args.checkpoint_steps or None,
        "tmod.overwrite_output_dir": True, "ckpt.resume": resume,
    }
    script = os.path.join(HERE, "train.py")
    launcher = [sys.executable, script] if args.nproc_per_node <= 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc_per_node}",
        script]
    return [*launcher, *(part for key, value in options.items() for part in (f"--{key}", cli_value(value))),
            *shlex.split(args.train_options)]


def earlier_record(args: BenchmarkArguments, run: Run) -> Optional[dict[str, Any]]:
    """The record of this run from an earlier invocation, if any; refused if it was run with other settings."""
    settings = run_settings(args, run)
    record = run.record()
    if record is not None and record["settings"] != settings:
        changed = ", ".join(f"{key} {record['settings'].get(key)!r} -> {value!r}" for key, value in settings.items()
                            if record["settings"].get(key) != value)
        raise ConfigError(f"{run.folder} holds a {run.name} run with other settings ({changed}): choose another "
                          f"--bench.output_dir, or delete that folder to run it again")
    return record


def train(args: BenchmarkArguments, run: Run, record: Optional[dict[str, Any]]) -> dict[str, Any]:
    """One train.py run to the end, resumed if ``record`` (``earlier_record``) says it was started; its record."""
    resume = record is not None
    record = record or {"settings": run_settings(args, run), "status": "running", "wall_s": 0.0, "attempts": 0}
    record["attempts"] += 1
    write_record(run, record)
    log_path = os.path.join(run.folder, "train.log")
    command = train_command(args, run, resume)
    logger.info(f"{run.name}: {'resuming' if resume else 'training'} in {run.folder} (log: {log_path})")
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        # its own session: Ctrl-C reaches benchmark.py only, which passes it on once (see forward_signals)
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE, start_new_session=True)
        with forward_signals(child) as received:
            returncode = child.wait()
    record["wall_s"] += time.perf_counter() - start
    write_record(run, record)
    if received:
        raise SystemExit(f"benchmark.py: stopped by {signal.Signals(received[0]).name} during {run.name}; "
                         "run the same command again to resume it from its checkpoint")
    if returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = "".join(log.readlines()[-15:])
        raise SystemExit(f"benchmark.py: {run.name} failed (exit {returncode}); the end of {log_path}:\n"
                         f"{tail}\nRun the same command again to resume it.")
    record["status"] = "done"
    write_record(run, record)
    shutil.rmtree(os.path.join(run.folder, "checkpoints"), ignore_errors=True)
    if not args.keep_models:
        for name in os.listdir(run.folder):
            if name.endswith(".safetensors") or (name.startswith("pytorch_model") and name.endswith(".bin")):
                os.remove(os.path.join(run.folder, name))
    return record


@contextmanager
def forward_signals(child: subprocess.Popen) -> Iterator[list[int]]:
    """SIGTERM and Ctrl-C go on to train.py, which finishes its step, writes a checkpoint and exits; benchmark.py
    waits for that instead of dying first. Yields the signals received."""
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        child.send_signal(signum)

    with on_stop_signals(forward):
        yield received


def write_record(run: Run, record: dict[str, Any]) -> None:
    write_json(os.path.join(run.folder, RUN_RECORD), record)


def submit_pipeline(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec]) -> None:
    """The benchmark as an Azure ML pipeline (aml_submit.benchmark_pipeline): printed with ``aml.dry_run``,
    otherwise submitted. Every setting changed from benchmark.yaml reaches each step's benchmark.py."""
    import aml_submit

    aml_submit.require_workspace(config["aml"])
    with open(BENCHMARK_CONFIG, encoding="utf-8") as stream:
        defaults = yaml.safe_load(stream)
    per_step = ("bench.tasks", "bench.seeds", "bench.first_seed", "bench.data_dir", "bench.output_dir",
                "bench.report_only")
    groups = ("bench", *(spec.hf_name for spec in specs))
    step_options = aml_submit.overrides(config, defaults, groups, skip=per_step)
    report_options = ["--tasks", args.tasks, "--model", shlex.quote(args.model)]
    runs = [aml_submit.PipelineRun(run.spec.name, run.seed, os.path.relpath(run.folder, args.output_dir),
                                   os.path.relpath(run.features, args.output_dir))
            for run in plan(args, config, specs)]
    job = aml_submit.benchmark_pipeline(runs, step_options, report_options, config["aml"], args.data_dir)
    if config["aml"]["dry_run"]:
        print(aml_submit.job_yaml(job), end="")
    else:
        aml_submit.submit(job, config["aml"])


def main() -> None:
    answer_help(BENCHMARK_CONFIG, short_group="bench")
    config = parse_config(BENCHMARK_CONFIG, short_group="bench")
    args = BenchmarkArguments(**config["bench"])
    local_data = "://" not in args.data_dir and not args.data_dir.startswith("azureml:")
    specs = parse_tasks(args, check_files=local_data and not args.report_only)
    if config["aml"]["submit"]:
        submit_pipeline(args, config, specs)
        return
    references = args.references or os.path.join(HERE, "glue_references.json")
    if not args.report_only:
        require_path("--bench.data_dir", args.data_dir, "the folder with one subfolder per GLUE task")
        runs = plan(args, config, specs)
        logger.info(f"benchmark.py: {args.model} on {', '.join(spec.name for spec in specs)}: {len(runs)} runs "
                    f"into {args.output_dir}")
        for run in tqdm(runs, desc="benchmark runs", unit="run"):
            record = earlier_record(args, run)
            if record is not None and record["status"] == "done":
                logger.info(f"{run.name}: finished earlier, skipped")
                continue
            build_features(args, run)
            record = train(args, run, record)
            result = scoreboard.run_score(run.folder, run.spec.name)
            logger.info(f"{run.name}: {run.spec.metric_label} {result:.4f} "
                        f"({record['wall_s']:.0f} s)")
            scoreboard.write(args.output_dir, [spec.name for spec in specs], args.model, references)
    paths = scoreboard.write(args.output_dir, [spec.name for spec in specs], args.model, references)
    print(open(paths["md"], encoding="utf-8").read())
    print("Scoreboard: " + ", ".join(paths.values()))


if __name__ == "__main__":
    main()
