"""Run data.py + train.py on Azure ML as one command job, submitted with the azure-ai-ml SDK (v2); and
``submit_benchmark``: benchmark.py's runs as one Azure ML pipeline (``benchmark.py --aml.submit true``).

    python aml_submit.py --aml.data_path glue_data --dproc.task MRPC --aml.dry_run true   # print the job; no Azure
    python aml_submit.py --aml.subscription_id <id> --aml.resource_group <rg> --aml.workspace <ws> \
        --aml.compute gpu-cluster --aml.data_path azureml://datastores/workspaceblobstore/paths/glue_data \
        --dproc.task MRPC --trainer.epochs 3

The job runs in a snapshot of this repository (``.amlignore`` keeps ``.venv`` and outputs out) on an image built
from requirements.txt. On every node, data.py featurizes the task's train and dev files from the ``glue_data``
input (``<aml.data_path>/<Task>/``) to the node's disk; then train.py fine-tunes into the job's ``output``
folder, under torchrun with pymarlin's DDP backend when ``aml.instance_count x aml.processes_per_node > 1``.
Every override of the scripts' own settings given here (``--dproc.*``, ``--trainer.*``, ... or in ``--params``)
is passed on to the script that reads it; the ``aml`` group of config.yaml holds this script's settings.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml

from glue_processors import TaskSpec, get_task
from glue_support.benchmark_plan import GRID_KEYS, BenchmarkArguments, plan
from glue_support.command_line import CONFIG_PATH, answer_help, parse_config
from glue_support.exit_codes import ConfigError, run_main
from glue_support.option_docs import cli_value
from glue_support.path_checks import require_path
from glue_support.runtime import multi_process_backend

if __name__ == "__main__":
    answer_help()  # before the Azure ML SDK loads (seconds), and even where it is not installed

try:
    from azure.ai.ml import Input, Output, PyTorchDistribution, command, dsl
    from azure.ai.ml.entities import BuildContext, CommandJob, Environment, JobResourceConfiguration, PipelineJob
except ImportError:  # an extra: data.py and train.py do not need it
    raise SystemExit("aml_submit.py needs the Azure ML SDK: pip install -r requirements-aml.txt") from None

ROOT = os.path.dirname(os.path.abspath(__file__))
PYMARLIN = "pymarlin==0.3.6"  # as the Makefile installs it: after requirements.txt, without its declared dependencies
DATA_GROUPS = ("dmod", "dproc")
TRAIN_GROUPS = ("model", "tmod", "trainer", "ckpt", "stats", "wrts")
FEATURES = "processed_data"  # on each node's disk, inside the job's working copy of the repository

# Settings the job fills in itself: a value given for them here could not take effect.
JOB_KEYS = {
    "dmod.input_dir": "the job reads <aml.data_path>/<Task>: set --aml.data_path",
    "dmod.output_dir": "the job featurizes into its own folder",
    "dproc.set_type": "the job featurizes the task's train and dev files",
    "tmod.trainpath": "the job trains on the train features it makes",
    "tmod.valpath": "the job validates on the dev features it makes",
    "tmod.output_dir": "the outputs go to the job's output folder",
    "tmod.predictpath": "test-set prediction is not part of the Azure ML job",
}

DOCKERFILE = """\
FROM {image}
# Python 3.11 (as the Makefile's venv) in its own conda environment, whatever the base image's Python is
ENV CONDA_PREFIX=/azureml-envs/marlin-glue
ENV PATH=$CONDA_PREFIX/bin:$PATH
ENV LD_LIBRARY_PATH=$CONDA_PREFIX/lib:$LD_LIBRARY_PATH
RUN conda create -y -p $CONDA_PREFIX --override-channels -c conda-forge python=3.11 pip && conda clean -ay
COPY requirements.txt /tmp/requirements.txt
# {pymarlin} declares torch<=1.9.1: installed without its declared dependencies, after ours
RUN pip install --no-cache-dir -r /tmp/requirements.txt && pip install --no-cache-dir --no-deps {pymarlin}
# train.py's metrics go to the job's metrics store through MLflow (glue_support/mlflow_writer.py)
RUN pip install --no-cache-dir mlflow-skinny azureml-mlflow
"""


def overrides(config: dict[str, Any], defaults: dict[str, Any], groups: tuple[str, ...],
              skip: tuple[str, ...] = ()) -> list[str]:
    """``--group.key value`` for every setting of ``groups`` that differs from config.yaml (from the command
    line, ``--params`` or ``--config_path``); a setting the job fills in itself is an error."""
    args = []
    for group in groups:
        for key, value in config[group].items():
            name = f"{group}.{key}"
            if name in skip or value == defaults[group][key]:
                continue
            if name in JOB_KEYS:
                raise ConfigError(f"--{name} is set by the Azure ML job ({JOB_KEYS[name]}); leave it out")
            args += [f"--{name}", shlex.quote(cli_value(value))]
    return args


def train_launcher(nodes: int, processes: int) -> list[str]:
    """``python`` for one process; torchrun otherwise. Azure ML starts this command once per node (the job's
    distribution has one process per instance) and sets NODE_RANK, MASTER_ADDR and MASTER_PORT there;
    torchrun starts the node's ``processes``."""
    if nodes * processes == 1:
        return ["python"]
    if nodes == 1:
        return ["torchrun", "--standalone", "--nproc_per_node", str(processes)]
    return ["torchrun", "--nnodes", str(nodes), "--nproc_per_node", str(processes), "--node_rank", "$NODE_RANK",
            "--master_addr", "$MASTER_ADDR", "--master_port", "$MASTER_PORT"]


def task_files(task: str) -> tuple[TaskSpec, list[str]]:
    """The task and the files the job featurizes: train, then every labeled validation file (MNLI has two)."""
    try:
        spec = get_task(task)
    except ValueError as error:
        raise ConfigError(f"--dproc.task: {error}") from None
    if "train" not in spec.set_types:
        raise ConfigError(f"--dproc.task {spec.name} has no train.tsv: an Azure ML job fine-tunes on one")
    return spec, ["train", *spec.dev_set_types]


def job_command(config: dict[str, Any], defaults: dict[str, Any], spec: TaskSpec, set_types: list[str]) -> str:
    """data.py for each of the task's ``set_types``, then train.py on their features, as one shell command."""
    features = f"{FEATURES}/{spec.name}"
    data_args = overrides(config, defaults, DATA_GROUPS, skip=("dproc.task",))
    steps = [["python", "data.py", "--dmod.input_dir", f"${{{{inputs.glue_data}}}}/{spec.name}",
              "--dmod.output_dir", f"{features}/{'train' if set_type == 'train' else 'dev'}",
              "--dproc.task", spec.name, "--dproc.set_type", set_type, *data_args] for set_type in set_types]

    nodes, processes = config["aml"]["instance_count"], config["aml"]["processes_per_node"]
    train_args = ["--tmod.trainpath", f"{features}/train", "--tmod.valpath", f"{features}/dev",
                  "--tmod.output_dir", "${{outputs.output}}"]
    skip: tuple[str, ...] = ()
    if nodes * processes > 1:
        train_args += ["--trainer.backend", multi_process_backend(config["trainer"]["backend"])]
        skip = ("trainer.backend",)
    steps.append([*train_launcher(nodes, processes), "train.py", *train_args,
                  *overrides(config, defaults, TRAIN_GROUPS, skip=skip)])
    return " && ".join(" ".join(step) for step in steps)


def build_context(image: str) -> str:
    """A Docker build context (Dockerfile + requirements.txt) for the job's environment, in a temporary folder
    named after its content: it outlives the run, so a dry run's YAML can be submitted with ``az ml job create``,
    and unchanged requirements give the same environment, whose image Azure ML then reuses."""
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as stream:
        requirements = stream.read()
    dockerfile = DOCKERFILE.format(image=image, pymarlin=PYMARLIN)
    digest = hashlib.sha256(f"{dockerfile}\0{requirements}".encode("utf-8")).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"marlin-glue-aml-environment-{digest}")
    os.makedirs(folder, exist_ok=True)
    for name, text in (("Dockerfile", dockerfile), ("requirements.txt", requirements)):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as stream:
            stream.write(text)
    return folder


def data_input(path: str, spec: TaskSpec, set_types: list[str]) -> Input:
    """The GLUE folder as a ``uri_folder`` input. A local folder (uploaded on submission) is checked here for the
    task's files: finding a wrong path after the upload and the image build costs minutes."""
    if not path:
        raise ConfigError("--aml.data_path is required: the GLUE data folder, with one subfolder per task "
                          "(azureml://datastores/<datastore>/paths/<folder>, azureml:<data asset>:<version>, "
                          "or a local folder)")
    if "://" not in path and not path.startswith("azureml:"):
        path = os.path.abspath(path)
        for set_type in set_types:
            require_path("--aml.data_path", os.path.join(path, spec.name, f"{set_type}.tsv"),
                         f"the GLUE data folder must hold {spec.name}/{set_type}.tsv")
    return Input(type="uri_folder", path=path)


def build_job(config: dict[str, Any]) -> CommandJob:
    """The Azure ML command job for a merged config (``parse_config()``); builds offline, with no workspace."""
    with open(CONFIG_PATH, encoding="utf-8") as stream:
        defaults = yaml.safe_load(stream)
    aml = config["aml"]
    spec, set_types = task_files(config["dproc"]["task"])
    return CommandJob(
        display_name=f"GLUE {spec.name}",
        experiment_name=aml["experiment"],
        code=ROOT,
        command=job_command(config, defaults, spec, set_types),
        inputs={"glue_data": data_input(aml["data_path"], spec, set_types)},
        outputs={"output": Output(type="uri_folder")},
        environment=Environment(build=BuildContext(path=build_context(aml["environment_image"]))),
        compute=aml["compute"] or None,
        resources=JobResourceConfiguration(instance_count=aml["instance_count"]),
        # one launcher per node: torchrun (see train_launcher) starts the training processes
        distribution=PyTorchDistribution(process_count_per_instance=1),
    )


def job_yaml(job: CommandJob | PipelineJob) -> str:
    """The job as ``az ml job create --file`` takes it. The SDK dumps every input path with an ``azureml:``
    prefix, which is wrong for local folders and https/wasbs URIs: the input's own path is put back."""
    stream = io.StringIO()
    job.dump(stream)
    document = yaml.safe_load(stream.getvalue())
    document["inputs"]["glue_data"]["path"] = job.inputs["glue_data"].path
    return yaml.safe_dump(document, sort_keys=False)


def require_workspace(aml: dict[str, Any]) -> None:
    """Submitting needs the workspace and compute; a dry run does not."""
    if not aml["dry_run"]:
        missing = [key for key in ("subscription_id", "resource_group", "workspace", "compute") if not aml[key]]
        if missing:
            raise ConfigError(f"to submit the job, set {', '.join('--aml.' + key for key in missing)} (or in "
                              "the config file's aml group); --aml.dry_run true prints it without Azure")


@dataclass
class PipelineRun:
    """One step of the benchmark pipeline: a run (a task, a cell of its grid, a seed), the benchmark.py options
    that make it, and where its outputs sit in a benchmark folder."""

    task: str
    seed: int
    run_folder: str  # runs/<Task>/<cell>/seed<N>
    features_folder: str  # features/<Task>/<tokenizer>-len<L>
    options: list[str]  # its benchmark.py options: the settings changed from benchmark.yaml, its cell's values
    cell: str = ""  # its cell's name where the task's grid has several; "" for a grid of one

    @property
    def step_name(self) -> str:
        """Its pipeline node's name, of letters, digits and underscores: ``rte_seed42``, or with a grid
        ``rte_lr2e_05_bs16_ep5_len128_seed42``."""
        cell = re.sub(r"\W", "_", self.cell)
        return f"{self.task.lower().replace('-', '')}{'_' + cell if cell else ''}_seed{self.seed}"


def benchmark_pipeline(runs: list[PipelineRun], report_options: list[str], aml: dict[str, Any],
                       data_path: str) -> PipelineJob:
    """benchmark.py as an Azure ML pipeline: one step per run (``benchmark.py --tasks <Task> --seeds 1
    --first_seed <N>`` with the run's options, into the step's output; the steps run in parallel on the cluster),
    then a scoreboard step that gathers their run folders and featurizing times into one benchmark folder and
    writes results.md/json/png there (``--report_only true``), choosing each task's cell."""
    environment = Environment(build=BuildContext(path=build_context(aml["environment_image"])))
    steps = [command(
        name=run.step_name, display_name=f"{run.task} {run.cell + ' ' if run.cell else ''}seed {run.seed}",
        code=ROOT, environment=environment, inputs={"glue_data": Input(type="uri_folder")},
        outputs={"output": Output(type="uri_folder")},
        command=" ".join(["python benchmark.py --tasks", run.task, "--seeds 1 --first_seed", str(run.seed),
                          "--data_dir ${{inputs.glue_data}} --output_dir ${{outputs.output}}", *run.options]))
        for run in runs]
    gather = [f"mkdir -p ${{{{outputs.scoreboard}}}}/{os.path.dirname(run.run_folder)} "
              f"${{{{outputs.scoreboard}}}}/{run.features_folder} && "
              f"cp -r ${{{{inputs.run_{number}}}}}/{run.run_folder} ${{{{outputs.scoreboard}}}}/{run.run_folder} && "
              f"cp ${{{{inputs.run_{number}}}}}/{run.features_folder}/featurize_seconds.json "
              f"${{{{outputs.scoreboard}}}}/{run.features_folder}/" for number, run in enumerate(runs)]
    report = command(
        name="scoreboard", display_name="scoreboard", code=ROOT, environment=environment,
        inputs={f"run_{number}": Input(type="uri_folder") for number in range(len(runs))},
        outputs={"scoreboard": Output(type="uri_folder")},
        command=" && ".join([*gather, " ".join(["python benchmark.py --report_only true",
                                                 "--output_dir ${{outputs.scoreboard}}", *report_options])]))

    @dsl.pipeline(name="glue_benchmark", display_name="GLUE benchmark", default_compute=aml["compute"] or None)
    def glue_benchmark(glue_data):  # no annotations: the SDK reads them, and cannot read postponed ones
        trained = [step(glue_data=glue_data) for step in steps]
        scoreboard = report(**{f"run_{number}": node.outputs.output for number, node in enumerate(trained)})
        return {"scoreboard": scoreboard.outputs.scoreboard}

    job = glue_benchmark(glue_data=Input(type="uri_folder", path=data_path if "://" in data_path or
                                         data_path.startswith("azureml:") else os.path.abspath(data_path)))
    job.experiment_name = aml["experiment"]
    return job


def submit_benchmark(args: BenchmarkArguments, config: dict[str, Any], defaults: dict[str, Any],
                     specs: list[TaskSpec]) -> None:
    """``benchmark.py --aml.submit``: the benchmark as an Azure ML pipeline (``benchmark_pipeline``) of the runs
    benchmark.py plans from ``config`` (benchmark.yaml's values, ``defaults`` as written there): printed with
    ``aml.dry_run``, otherwise submitted. A step is one run (a task, a cell of its grid, a seed), given every
    setting changed from benchmark.yaml for its task, with its cell's values; the scoreboard step chooses the
    cells (benchmark.py refuses ``init_from`` and ``bench.predict`` there first)."""
    require_workspace(config["aml"])
    per_step = ("bench.tasks", "bench.seeds", "bench.first_seed", "bench.data_dir", "bench.output_dir",
                "bench.parallel", "bench.report_only", "bench.recipe")  # the recipe: in each step's values
    report_options = ["--tasks", args.tasks, "--model", shlex.quote(args.model)]
    if args.select != defaults["bench"]["select"]:
        report_options += ["--select", args.select]
    runs = []
    for run in plan(args, config, specs):
        # the step's task with its cell's values, one each: what the step's own benchmark.py plans is this run
        cell = {key: getattr(run.settings, key) for key in GRID_KEYS}
        step_config = {**config, run.spec.hf_name: {**config[run.spec.hf_name], **cell}}
        options = overrides(*(single_values(values) for values in (step_config, defaults)),
                            ("bench", run.spec.hf_name), skip=per_step)
        runs.append(PipelineRun(run.spec.name, run.seed, os.path.relpath(run.folder, args.output_dir),
                                os.path.relpath(run.features, args.output_dir), options, run.cell))
    job = benchmark_pipeline(runs, report_options, config["aml"], args.data_dir)
    if config["aml"]["dry_run"]:
        print(job_yaml(job), end="")
    else:
        submit(job, config["aml"])


def single_values(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with lists of one value as that value: a one-cell grid's options as written (``--rte.epochs 3``)."""
    return {group: {key: value[0] if isinstance(value, list) and len(value) == 1 else value
                    for key, value in values.items()} if isinstance(values, dict) else values
            for group, values in config.items()}


def submit(job: CommandJob | PipelineJob, aml: dict[str, Any]) -> None:
    """Create the job in the workspace (uploads the code, the build context and a local data folder)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    client = MLClient(DefaultAzureCredential(), subscription_id=aml["subscription_id"],
                      resource_group_name=aml["resource_group"], workspace_name=aml["workspace"])
    created = client.jobs.create_or_update(job)
    print(f"Submitted {created.name} to experiment {created.experiment_name}: {created.studio_url}")


def main() -> None:
    config = parse_config()
    aml = config["aml"]
    require_workspace(aml)
    job = build_job(config)
    if aml["dry_run"]:
        print(job_yaml(job), end="")
    else:
        submit(job, aml)


if __name__ == "__main__":
    run_main(main)
