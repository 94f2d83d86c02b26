"""What a benchmark runs, before anything runs: its tasks and their GLUE files, each task's grid of cells
(``benchmark.yaml``'s per-task values), and every run (a task, a cell, a seed) in the order benchmark.py starts
them, with the folder it writes and what makes it the same experiment as a run found there (``run_identity``).

Planning reads (file sizes, to order the runs) and writes nothing: benchmark.py copies and hashes the files when
it runs the plan; ``--aml.submit`` plans the same runs without reading the data.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import pathlib
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Optional

import yaml

from glue_processors import TASKS, TaskSpec, get_task
from glue_support.command_line import read_config_file
from glue_support.exit_codes import ConfigError
from glue_support.option_docs import check_ranges
from glue_support.path_checks import require_regular_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")  # one <name>.yaml per recipe (--bench.recipe <name>)

RUN_RECORD = "benchmark_run.json"  # in each run folder: its settings, then its status and wall time
# a run's status once train.py has ended for good: "done" (scored), "diverged" (a result: never scored nor retried)
ENDED = ("done", "diverged")


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
    check_submission: str = ""  # set: only check that leaderboard zip or folder (report_submission)
    compare: str = ""  # set: only compare the benchmarks in these folders, comma-separated (glue_support/compare.py)
    compare_dir: str = "comparison"  # where --compare writes comparison.md, .json and .png
    select: str = "mean"  # each task's cell: the best "mean" or "median" dev score over its seeds, or "best" run
    recipe: str = ""  # a file of recipes/ whose values replace benchmark.yaml's (apply_recipe); "": none
    predict: bool = False  # after the runs: each task's selected run predicts its test sets (predict_all)
    max_train_examples: int = 0  # > 0: runs train on the first N examples of train.tsv (capped_rows)
    max_eval_examples: int = 0  # > 0: runs validate on the first N examples of each dev file
    parallel: int = 0  # runs at once, each with its share of the cores or GPUs (run_shares); 0: by the machine
    restarts: int = 0  # per cell: degenerate runs run again with the next unused seed (plan_restarts)


@dataclass
class TaskSettings:
    """One cell of a task's grid: one value of each key of its group in benchmark.yaml, named by the task's
    ``hf_name`` (``rte``, ``stsb``, ...)."""

    epochs: int
    max_lr: float
    batch_size: int
    max_seq_len: int
    seeds: int  # 0: bench.seeds; more: at most this many seeds for this task
    init_from: str = ""  # a task of the benchmark whose selected run's model this task's runs start from; "" = none
    # train.py's own value where None (a group without the key)
    warmup_prop: Optional[float] = None
    weight_decay: Optional[float] = None
    layer_lr_decay: Optional[float] = None

    def training_options(self) -> dict[str, float]:
        """Its ``TRAIN_KEYS`` that differ from what train.py uses without them (``train_defaults``): only those are
        passed to train.py, named in the cell's folder and recorded, so runs made before these keys existed keep
        their identity."""
        return {key: float(value) for key in TRAIN_KEYS
                if (value := getattr(self, key)) is not None and value != train_defaults()[key]}


GRID_KEYS = ("max_lr", "batch_size", "epochs", "max_seq_len")  # a task's keys that take several values
# a task's keys passed to train.py as --tmod.<key> where they differ from its default, with the folder name's tag
TRAIN_KEYS = {"warmup_prop": "wu", "weight_decay": "wd", "layer_lr_decay": "lld"}


@functools.cache
def train_defaults() -> dict[str, float]:
    """What train.py uses for each of ``TRAIN_KEYS`` when not given it: config.yaml's ``tmod`` values
    (layer_lr_decay 1.0, off, where config.yaml has none)."""
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as stream:
        tmod = yaml.safe_load(stream)["tmod"]
    return {key: tmod.get(key, 1.0) for key in TRAIN_KEYS}


def task_cells(group: dict[str, Any]) -> list[TaskSettings]:
    """A task's grid: every combination of the values of its ``GRID_KEYS`` (a list, or one value), in the order
    given, each value once."""
    values = [list(dict.fromkeys(group[key] if isinstance(group[key], list) else [group[key]])) for key in GRID_KEYS]
    training = {key: group[key] for key in TRAIN_KEYS if key in group}
    return [TaskSettings(**dict(zip(GRID_KEYS, combination)), seeds=group["seeds"], init_from=group["init_from"],
                         **training) for combination in itertools.product(*values)]


ALL_TASKS = "all_tasks"  # a recipe's group of values for every task (a task's own group takes precedence)
RECIPE_BENCH_KEYS = ("seeds", "select")  # the bench keys a recipe sets


def recipe_names() -> list[str]:
    """The recipes ``--bench.recipe`` takes: the files of ``RECIPES``, without ``.yaml``."""
    return sorted(name.removesuffix(".yaml") for name in os.listdir(RECIPES) if name.endswith(".yaml"))


def apply_recipe(config: dict[str, Any], given: set[str], config_path: str) -> dict[str, Any]:
    """``config`` (benchmark.yaml merged with the command line) with ``bench.recipe``'s values in place of those
    of the file, but for the options the command line gave (``given``: ``group.key`` names): a recipe's
    ``all_tasks`` group sets every task, a task's own group (``rte``) then its exceptions, ``bench`` its seeds and
    selection rule. Refused in one line naming the recipe file: an unknown recipe, group or key, a value out of
    its range (``config_path``'s comments)."""
    name = config["bench"]["recipe"]
    if not name:
        return config
    if name not in recipe_names():
        raise ConfigError(f"--bench.recipe {name}: no such recipe; expected one of: {', '.join(recipe_names())} "
                          f"(the files of {os.path.basename(RECIPES)}/)")
    path = os.path.join(RECIPES, f"{name}.yaml")
    recipe, lines = read_config_file(path)
    tasks = [spec.hf_name for spec in TASKS.values() if spec.hf_name in config]
    task_keys = [key for key in config[tasks[0]] if key != "majority"]
    for group, values in recipe.items():
        where = f"{path}, line {lines[group]}"
        if group not in ("bench", ALL_TASKS, *tasks):
            raise ConfigError(f"{where}: unknown group {group!r}, expected bench, {ALL_TASKS} or a task's group "
                              f"({', '.join(tasks)})")
        keys = RECIPE_BENCH_KEYS if group == "bench" else task_keys
        unknown = [key for key in values if key not in keys] if isinstance(values, dict) else [None]
        if unknown:
            raise ConfigError(f"{path}, line {lines.get(f'{group}.{unknown[0]}', lines[group])}: {group} sets "
                              f"{unknown[0] if unknown[0] else 'no mapping'}; expected a mapping of "
                              f"{', '.join(keys)}")
    merged = {group: dict(values) if isinstance(values, dict) else values for group, values in config.items()}
    layers = [("bench", recipe.get("bench", {}))] + [(task, {**recipe.get(ALL_TASKS, {}), **recipe.get(task, {})})
                                                      for task in tasks]
    for group, values in layers:
        for key, value in values.items():
            if f"{group}.{key}" not in given:
                merged[group][key] = [value] if key in GRID_KEYS and not isinstance(value, list) else value
    try:
        check_ranges(merged, config_path)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return merged


def cell_name(settings: TaskSettings) -> str:
    """The folder of a cell's runs, named by its settings (``lr5e-05-bs16-ep5-len128``, then ``-wu0.06`` and the
    other ``TRAIN_KEYS`` that differ from train.py's defaults): the same settings find the same folder however the
    grid around them grows."""
    return (f"lr{float(settings.max_lr)!r}-bs{settings.batch_size}-ep{settings.epochs}-len{settings.max_seq_len}"
            + "".join(f"-{TRAIN_KEYS[key]}{value!r}" for key, value in settings.training_options().items())
            + (f"-from{get_task(settings.init_from).name}" if settings.init_from else ""))


@dataclass
class Run:
    """One fine-tune: a task, a cell of its grid and a seed, with the features it reads and the folder it writes."""

    spec: TaskSpec
    seed: int
    settings: TaskSettings
    features: str  # <output_dir>/features/<Task>/<tokenizer>-len<L>: train/ and dev/ inside
    folder: str  # <output_dir>/runs/<Task>/<cell_name>/seed<N>
    train_bytes: int = 0  # its training file's size as read (training_work); 0 where the data is not read
    cell: str = ""  # the cell's name where the task's grid has several, for messages; "" for a grid of one
    init_model: str = ""  # with settings.init_from: the run folder it starts from, known once that task has run
    restart_of: Optional[int] = None  # the seed of the degenerate run of its cell it replaces (plan_restarts)

    @property
    def name(self) -> str:
        return f"{self.spec.name} {self.cell + ' ' if self.cell else ''}seed {self.seed}"

    def record(self) -> Optional[dict[str, Any]]:
        return read_record(self.folder)


def read_json(path: str) -> Optional[Any]:
    """The content of the JSON file at ``path``; None where there is none. Strict: a ``NaN`` or ``Infinity`` (a
    number a run that diverged before divergence was recorded may hold) is refused in one line naming the file."""
    if not os.path.exists(path):
        return None

    def refuse(constant: str) -> Any:
        raise ValueError(f"{path}: holds {constant}, which is not JSON (written before results were strict JSON, "
                         "by a run that diverged?); delete it, or the run folder it lies in, to make it again")

    with open(require_regular_file(path, "a benchmark's JSON record"), encoding="utf-8") as stream:
        return json.load(stream, parse_constant=refuse)


def read_record(folder: str) -> Optional[dict[str, Any]]:
    """The ``RUN_RECORD`` of the run in ``folder``; None where none was started there."""
    return read_json(os.path.join(folder, RUN_RECORD))


def model_slug(model: str) -> str:
    """A folder name for a hub id or path: features are reused only for the same tokenizer."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip("/"))[-80:]


def splits(spec: TaskSpec) -> tuple[str, ...]:
    """The set types a benchmark run reads: the training set and every labeled dev set."""
    return ("train", *spec.dev_set_types)


def test_files(spec: TaskSpec, data_dir: str) -> dict[str, TaskSpec]:
    """The test files a model fine-tuned on ``spec`` predicts, each with its task: the task's own and those of the
    tasks it predicts (MNLI: AX), where ``download_glue.py`` puts them (AX: ``<data_dir>/diagnostic/diagnostic.tsv``).
    AX's two set types are one file under two names: the one the download writes is predicted."""
    return {os.path.join(data_dir, task.download.folder, f"{set_type}.tsv"): task
            for task in TASKS.values() if task.trained_as is spec
            for set_type in task.test_set_types if f"{set_type}.tsv" in task.download.files}


def needed_files(args: BenchmarkArguments, spec: TaskSpec) -> list[str]:
    """The files a benchmark of ``spec`` reads: train and dev, and with ``bench.predict`` its test files."""
    paths = [glue_file(args, spec, set_type) for set_type in splits(spec)]
    return paths + (list(test_files(spec, args.data_dir)) if args.predict else [])


def parse_tasks(args: BenchmarkArguments, check_files: bool) -> list[TaskSpec]:
    """The tasks named in ``bench.tasks`` (``all``: the nine with training data); with ``check_files``, each with
    the files it reads (``needed_files``) present in ``bench.data_dir``."""
    specs = []
    names = [spec.name for spec in TASKS.values() if spec.labeled] if args.tasks.strip().lower() == "all" else \
        args.tasks.split(",")
    for name in filter(None, (part.strip() for part in names)):
        try:
            spec = get_task(name)
        except ValueError as error:
            raise ConfigError(f"--bench.tasks: {error}") from None
        if spec.labeled is None:
            raise ConfigError(f"--bench.tasks: {spec.name} has no training data (it is scored with an MNLI model)")
        if spec in specs:  # its runs would be planned twice, and the second of each refused by the first's lock
            raise ConfigError(f"--bench.tasks {args.tasks}: {spec.name} is named twice; name each task once")
        for path in needed_files(args, spec) if check_files else ():
            require_glue_file(args, path)
        specs.append(spec)
    if not specs:
        raise ConfigError("--bench.tasks names no task: give e.g. --tasks RTE,MRPC")
    return specs


def trained_tasks(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec]) -> list[TaskSpec]:
    """``specs`` but WNLI under ``wnli.majority``: its leaderboard file is then its training set's majority class,
    and a WNLI model would be trained for nothing. Refused where that leaves nothing to do."""
    if not config["wnli"]["majority"]:
        return specs
    trained = [spec for spec in specs if spec.name != "WNLI"]
    if not trained and not args.predict:
        raise ConfigError("--wnli.majority true: WNLI is not trained (its leaderboard file is the majority class of "
                          "its train.tsv, written with --predict true), and --tasks names no other task: add "
                          "--predict true, or leave --wnli.majority false to train WNLI")
    return trained


def require_glue_file(args: BenchmarkArguments, path: str) -> None:
    if not os.path.exists(path):
        folder = os.path.basename(os.path.dirname(path))  # download_glue.py takes it as a task name (diagnostic: AX)
        raise ConfigError(f"{path}: no such file; get the GLUE files with "
                          f"python download_glue.py --tasks {folder} --data_dir {args.data_dir}")


def glue_file(args: BenchmarkArguments, spec: TaskSpec, set_type: str) -> str:
    """``<data_dir>/<Task>/<set_type>.tsv``."""
    return os.path.join(args.data_dir, spec.name, f"{set_type}.tsv")


def cap(args: BenchmarkArguments, set_type: str) -> int:
    """The rows runs read of a ``set_type`` file (``bench.max_train_examples``, ``max_eval_examples``); 0: all."""
    return args.max_train_examples if set_type == "train" else args.max_eval_examples


def capped_rows(args: BenchmarkArguments, spec: TaskSpec, set_type: str) -> bytes:
    """The header and first rows of a GLUE file under a cap, as bytes: byte-order mark and line ends as they are."""
    with open(require_regular_file(glue_file(args, spec, set_type), f"the {spec.name} {set_type}.tsv"), "rb") as stream:
        return b"".join(itertools.islice(stream, cap(args, set_type) + int(spec.labeled.header)))


def training_sizes(args: BenchmarkArguments, specs: list[TaskSpec]) -> dict[str, int]:
    """Each task's training file's size in bytes as its runs read it (its first rows under a cap), to order the runs
    by (``training_work``). Read only: nothing is written or hashed."""
    return {spec.name: len(capped_rows(args, spec, "train")) if cap(args, "train")
            else os.path.getsize(glue_file(args, spec, "train")) for spec in specs}


def starting_tasks(config: dict[str, Any], specs: list[TaskSpec]) -> dict[str, str]:
    """The task each task's runs start from (``init_from``), by task, for those that set it; refused, in one line,
    when it names a task outside ``specs``."""
    names = [spec.name for spec in specs]
    starts = {}
    for spec in specs:
        value = config[spec.hf_name]["init_from"]
        if value:
            try:
                starts[spec.name] = get_task(value).name
            except ValueError as error:
                raise ConfigError(f"--{spec.hf_name}.init_from {value}: {error}") from None
            if starts[spec.name] not in names:
                raise ConfigError(f"--{spec.hf_name}.init_from {value}: {starts[spec.name]} is not among --tasks "
                                  f"({', '.join(names)}); add it, so its selected run exists to start from")
    return starts


def start_order(config: dict[str, Any], specs: list[TaskSpec]) -> list[list[TaskSpec]]:
    """The tasks in stages: those that start from ``--model``, then those that start from a task of an earlier
    stage (``init_from``), ...; refused, in one line, when the starts form a loop."""
    starts = starting_tasks(config, specs)

    def depth(name: str, chain: tuple[str, ...]) -> int:
        """How many starts lie between ``name`` and ``--model``; ``chain``: the tasks that start from it."""
        if name in chain:
            first = get_task(chain[0])
            raise ConfigError(f"--{first.hf_name}.init_from {config[first.hf_name]['init_from']}: the tasks' starts "
                              f"form a loop ({' -> '.join((*chain, name))}); one of them must start from --model")
        return depth(starts[name], (*chain, name)) + 1 if name in starts else 0

    depths = {spec.name: depth(spec.name, ()) for spec in specs}
    return [[spec for spec in specs if depths[spec.name] == stage] for stage in sorted(set(depths.values()))]


def plan(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec],
         sizes: Optional[dict[str, int]] = None) -> list[Run]:
    """Every (task, cell, seed) run, seed-major: every cell of every task with the first seed, then with the
    second, ...; a task that starts from another's selected run (``init_from``) after all of that task's runs
    (``start_order``); ``sizes``: ``training_sizes``, None where the data is not read."""
    runs = []
    for stage in start_order(config, specs):
        runs += seed_major(args, config, stage, sizes or {})
    return runs


def seed_major(args: BenchmarkArguments, config: dict[str, Any], specs: list[TaskSpec],
               sizes: dict[str, int]) -> list[Run]:
    """``specs``' runs, every cell of every task with the first seed, then with the second, ...; within a seed,
    the most training first (``training_work``), so that runs at once (``--parallel``) end together."""
    grids = {spec.name: task_cells(config[spec.hf_name]) for spec in specs}
    runs = []
    for number in range(args.seeds):
        seed_runs = []
        for spec in specs:
            for settings in grids[spec.name]:
                if settings.seeds and number >= settings.seeds:
                    continue
                seed = args.first_seed + number
                features = os.path.join(args.output_dir, "features", spec.name,
                                        f"{model_slug(args.model)}-len{settings.max_seq_len}")
                folder = os.path.join(args.output_dir, "runs", spec.name, cell_name(settings), f"seed{seed}")
                seed_runs.append(Run(spec, seed, settings, features, folder, sizes.get(spec.name, 0),
                                     cell_name(settings) if len(grids[spec.name]) > 1 else ""))
        runs += sorted(seed_runs, key=training_work, reverse=True)  # stable: the named order among equals
    return runs


def plan_restarts(taken: Iterable[int], degenerate: Iterable[int], restarts: Mapping[int, int],
                  budget: int) -> dict[int, int]:
    """The restarts a cell calls for beyond those it has (``restarts``: recorded or queued, seed -> the seed it
    restarts), as seed -> the seed it restarts: each degenerate run (``degenerate``: seeds of its runs that ended
    so) not restarted yet, in seed order, while the cell has had fewer than ``budget`` restarts, gets the next unused
    seed, one past the highest the cell planned or ran (``taken``) or gave a restart. BERT's random restarts."""
    new: dict[int, int] = {}
    replaced = set(restarts.values())
    seed = max([*taken, *restarts]) + 1
    for found in sorted(set(degenerate) - replaced):
        if len(restarts) + len(new) >= budget:
            break
        new[seed] = found
        seed += 1
    return new


def restart(planned: Run, seed: int, restart_of: int) -> Run:
    """A run of ``planned``'s cell with ``seed``, restarting the cell's run of seed ``restart_of``."""
    return dataclasses.replace(planned, seed=seed, folder=os.path.join(os.path.dirname(planned.folder), f"seed{seed}"),
                               init_model="", restart_of=restart_of)


def training_work(run: Run) -> int:
    """What a run's training costs, to order runs by: its training file's bytes (tokens go with them) times its
    epochs; 0 where the files are not read (an Azure ML pipeline's plan)."""
    return run.train_bytes * run.settings.epochs


KEEP_BEST = True  # runs keep their best validation's model: the one scored, started from and predicting


def run_identity(args: BenchmarkArguments, run: Run, data: dict[str, dict[str, Any]],
                 model: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same experiment: a finished run is reused only if these match (its recorded
    ``settings``). ``data`` is each file's size and SHA-256, not its folder: the same bytes elsewhere are the same
    data; ``model`` is ``args.model``'s ``provenance.model_identity``: other files at the same path are another
    model."""
    # the caps only where set: runs of the whole files are recorded without them
    caps = {key: getattr(args, key) for key in ("max_train_examples", "max_eval_examples") if getattr(args, key)}
    # the run it starts from, by folder: another selected run (more seeds of that task) is another experiment
    start = {"init_from": os.path.relpath(run.init_model, args.output_dir)} if run.settings.init_from else {}
    return {"task": run.spec.name, "seed": run.seed, "model": args.model, "model_identity": model,
            "keep_best": KEEP_BEST,
            **{key: value for key, value in asdict(run.settings).items()
               if key not in ("seeds", "init_from", *TRAIN_KEYS)}, **run.settings.training_options(),
            "nproc_per_node": args.nproc_per_node, "train_options": args.train_options, **caps, **start,
            "data": data}


def recorded_cell(settings: dict[str, Any]) -> str:
    """The cell a run's recorded settings (``run_identity``) belong to: the name of the folder it must lie in."""
    start = pathlib.PurePath(settings["init_from"]).parts[1] if "init_from" in settings else ""  # runs/<Task>/...
    return cell_name(TaskSettings(**{key: settings[key] for key in (*GRID_KEYS, *TRAIN_KEYS) if key in settings},
                                  seeds=0, init_from=start))


def short_identity(identity: Optional[dict[str, Any]]) -> str:
    """A model's identity (``provenance.model_identity``) in a message: its SHA-256's first 12 digits."""
    return identity["sha256"][:12] if identity else "not recorded"


def earlier_record(args: BenchmarkArguments, run: Run, data: dict[str, dict[str, Any]],
                   model: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The record of this run from an earlier invocation, if any; refused if it was run with other settings, another
    model (``model``: its identity) or made from other data (``data``: its files' identities), naming the files
    whose checksum differs and the model's."""
    settings = run_identity(args, run, data, model)
    record = run.record()
    if record is None or record["settings"] == settings:
        return record
    recorded = record["settings"]
    files = {name: ((recorded.get("data") or {}).get(name), identity) for name, identity in settings["data"].items()}
    changed = [f"{os.path.join(args.data_dir, run.spec.name, name)} sha256 "
               f"{old['sha256'][:12] if old else 'not recorded'} -> {new['sha256'][:12]}"
               for name, (old, new) in files.items() if old != new]
    others = [f"model {short_identity(recorded.get(key))} -> {short_identity(settings[key])}" if key == "model_identity"
              else f"{key} {recorded.get(key)!r} -> {settings.get(key)!r}"
              for key in dict.fromkeys([*settings, *recorded])
              if key != "data" and recorded.get(key) != settings.get(key)]
    what = " and ".join(kind for kind, found in (("data", changed), ("settings", others)) if found)
    raise ConfigError(f"{run.folder} holds a {run.name} run with other {what} ({', '.join(changed + others)}): "
                      "choose another --bench.output_dir, or delete that folder to run it again")
