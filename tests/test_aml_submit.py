"""aml_submit.py builds the Azure ML job offline: its command (data.py for train and dev, then train.py, under
torchrun when distributed, with the user's overrides passed on), its data input, environment, distribution and
compute; a dry run prints it with no network; submitting without the workspace settings stops before Azure."""
from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

import aml_submit  # noqa: E402
from conftest import FIXTURES, ROOT, python_env  # noqa: E402
from glue_support import command_line  # noqa: E402

# the SDK's own use of marshmallow, when it dumps a job
pytestmark = pytest.mark.filterwarnings("ignore:The `context` parameter is deprecated:DeprecationWarning")

DATASTORE = "azureml://datastores/workspaceblobstore/paths/glue_data"


def build(argv, *args: str):
    """The job aml_submit.py builds for this command line, and the merged config it was built from."""
    argv(*([] if "--aml.data_path" in args else ["--aml.data_path", str(FIXTURES)]), *args)
    config = command_line.parse_config()
    return aml_submit.build_job(config), config


def steps(job) -> list[list[str]]:
    """The job's command, one word list per step."""
    return [shlex.split(step) for step in job.command.split(" && ")]


def test_one_process_featurizes_train_and_dev_then_trains_into_the_output(argv):
    job, _ = build(argv, "--aml.compute", "gpu-cluster", "--aml.experiment", "glue-runs")
    data_train, data_dev, train = steps(job)
    assert data_train == ["python", "data.py", "--dmod.input_dir", "${{inputs.glue_data}}/RTE", "--dmod.output_dir",
                          "processed_data/RTE/train", "--dproc.task", "RTE", "--dproc.set_type", "train"]
    assert data_dev == ["python", "data.py", "--dmod.input_dir", "${{inputs.glue_data}}/RTE",
                        "--dmod.output_dir", "processed_data/RTE/dev", "--dproc.task", "RTE", "--dproc.set_type", "dev"]
    assert train == ["python", "train.py", "--tmod.trainpath", "processed_data/RTE/train",
                     "--tmod.valpath", "processed_data/RTE/dev", "--tmod.output_dir", "${{outputs.output}}"]
    assert job.inputs["glue_data"].type == "uri_folder" and job.inputs["glue_data"].path == str(FIXTURES)
    assert job.outputs["output"].type == "uri_folder"
    assert job.code == str(ROOT)
    assert job.compute == "gpu-cluster" and job.experiment_name == "glue-runs"
    assert job.resources.instance_count == 1
    assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1


@pytest.mark.parametrize("nodes, per_node, backend, launcher, ddp_backend", [
    (1, 4, "sp", ["torchrun", "--standalone", "--nproc_per_node", "4"], "ddp"),
    (1, 2, "sp-amp", ["torchrun", "--standalone", "--nproc_per_node", "2"], "ddp-amp"),
    (2, 4, "sp", ["torchrun", "--nnodes", "2", "--nproc_per_node", "4", "--node_rank", "$NODE_RANK",
                  "--master_addr", "$MASTER_ADDR", "--master_port", "$MASTER_PORT"], "ddp"),
    (3, 1, "sp", ["torchrun", "--nnodes", "3", "--nproc_per_node", "1", "--node_rank", "$NODE_RANK",
                  "--master_addr", "$MASTER_ADDR", "--master_port", "$MASTER_PORT"], "ddp"),
])
def test_more_than_one_process_trains_under_torchrun_with_ddp(argv, nodes, per_node, backend, launcher, ddp_backend):
    job, _ = build(argv, "--aml.instance_count", str(nodes), "--aml.processes_per_node", str(per_node),
                   "--trainer.backend", backend)
    *data, train = steps(job)
    assert train[:len(launcher)] == launcher and train[len(launcher)] == "train.py"
    assert train.count("--trainer.backend") == 1
    assert train[train.index("--trainer.backend") + 1] == ddp_backend
    assert all(step[:2] == ["python", "data.py"] for step in data)  # featurized once per node, not per process
    # Azure ML starts the command once per node; torchrun starts the processes
    assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1
    assert job.resources.instance_count == nodes


def test_overrides_reach_the_script_that_reads_them_unchanged(argv, monkeypatch):
    job, config = build(argv, "--tmod.max_lr", "3.0e-5", "--trainer.epochs", "3", "--trainer.writers", "stdout",
                        "--trainer.disable_tqdm", "--trainer.max_train_steps_per_epoch", "7",
                        "--dproc.max_seq_len", "64", "--dproc.skip_malformed", "true", "--model.hf_model", "my model",
                        "--stats.exclude_list", "bias|layer\\.1(?!1)", "--params", '{"--tmod.seed": 5}',
                        "--aml.processes_per_node", "2", "--aml.compute", "c")
    data_train, data_dev, train = steps(job)
    assert "--tmod.max_lr" not in data_train and "--dproc.max_seq_len" not in train
    assert not [word for step in steps(job) for word in step if word.startswith("--aml.")]
    # each script's parser, given the job's arguments, arrives at the user's settings
    for step, groups in ((data_train, aml_submit.DATA_GROUPS), (data_dev, aml_submit.DATA_GROUPS),
                         (train, aml_submit.TRAIN_GROUPS)):
        script = step.index("train.py" if step is train else "data.py")
        monkeypatch.setattr(sys, "argv", step[script:])
        arrived = command_line.parse_config()
        for group in groups:
            for key, value in config[group].items():
                if f"{group}.{key}" not in aml_submit.JOB_KEYS and (group, key) != ("trainer", "backend"):
                    assert arrived[group][key] == value, f"{group}.{key}"
        assert arrived["trainer"]["backend"] == ("ddp" if step is train else "sp")


@pytest.mark.parametrize("option, value, reason", [
    ("--tmod.output_dir", "out", "the outputs go to the job's output folder"),
    ("--dmod.input_dir", "RTE", "set --aml.data_path"),
    ("--tmod.valpath", "dev", "the dev features it makes"),
    ("--tmod.predictpath", "test", "test-set prediction is not part"),
])
def test_a_setting_the_job_fills_in_is_refused(argv, option, value, reason):
    with pytest.raises(SystemExit, match=f"{option} is set by the Azure ML job .*{reason}"):
        build(argv, option, value)


def test_mnli_validates_both_dev_files_and_ax_is_refused(argv):
    job, _ = build(argv, "--dproc.task", "mnli")
    assert [(step[step.index("--dproc.set_type") + 1], step[step.index("--dmod.output_dir") + 1])
            for step in steps(job)[:-1]] == [("train", "processed_data/MNLI/train"),
                                             ("dev_matched", "processed_data/MNLI/dev"),
                                             ("dev_mismatched", "processed_data/MNLI/dev")]
    assert "${{inputs.glue_data}}/MNLI" in job.command and "--tmod.valpath processed_data/MNLI/dev" in job.command
    with pytest.raises(SystemExit, match="AX has no train.tsv"):
        build(argv, "--dproc.task", "AX")


def test_the_environment_installs_requirements_then_pymarlin_without_dependencies(argv):
    image = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"
    job, _ = build(argv, "--aml.environment_image", image)
    context = Path(job.environment.build.path)
    assert (context / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.startswith(f"FROM {image}\n") and "python=3.11" in dockerfile
    install = dockerfile.index("pip install --no-cache-dir -r /tmp/requirements.txt")
    assert dockerfile.index("pip install --no-cache-dir --no-deps pymarlin==0.3.6") > install
    assert "pip install --no-cache-dir mlflow-skinny azureml-mlflow" in dockerfile  # metrics to the job's store
    assert aml_submit.PYMARLIN in (ROOT / "Makefile").read_text()  # the same pymarlin as `make setup`


def test_local_data_is_checked_for_the_tasks_files_and_remote_paths_are_kept(argv, tmp_path):
    (tmp_path / "RTE").mkdir()
    with pytest.raises(SystemExit, match=r"--aml.data_path .*RTE/train.tsv: no such file"):
        build(argv, "--aml.data_path", str(tmp_path))
    with pytest.raises(SystemExit, match="--aml.data_path is required"):
        build(argv, "--aml.data_path", "")
    job, _ = build(argv, "--aml.data_path", DATASTORE)
    assert job.inputs["glue_data"].path == DATASTORE


def test_dry_run_prints_the_job_yaml_without_network(argv, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not use the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    argv("--aml.data_path", DATASTORE, "--aml.dry_run", "true", "--aml.compute", "gpu-cluster")
    aml_submit.main()
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["type"] == "command" and job["experiment_name"] == "marlin-glue"
    assert job["inputs"]["glue_data"] == {"type": "uri_folder", "path": DATASTORE}
    assert job["compute"] == "azureml:gpu-cluster"


def test_the_script_dry_runs_as_a_subprocess():
    result = subprocess.run([sys.executable, str(ROOT / "aml_submit.py"), "--aml.data_path", str(FIXTURES),
                             "--aml.dry_run", "true", "--aml.instance_count", "2", "--aml.processes_per_node", "4",
                             "--aml.compute", "gpu-cluster", "--trainer.epochs", "2", "--dproc.task", "MRPC"],
                            cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert "python data.py --dmod.input_dir ${{inputs.glue_data}}/MRPC" in job["command"]
    assert "torchrun --nnodes 2 --nproc_per_node 4" in job["command"]
    assert "--tmod.output_dir ${{outputs.output}} --trainer.backend ddp --trainer.epochs 2" in job["command"]
    assert job["inputs"]["glue_data"] == {"type": "uri_folder", "path": str(FIXTURES)}  # not "azureml:/..."
    assert job["outputs"]["output"]["type"] == "uri_folder"
    assert job["distribution"] == {"type": "pytorch", "process_count_per_instance": 1}
    assert job["resources"]["instance_count"] == 2 and job["compute"] == "azureml:gpu-cluster"
    assert job["experiment_name"] == "marlin-glue" and Path(job["environment"]["build"]["path"], "Dockerfile").is_file()


def test_submitting_without_the_workspace_settings_stops_before_azure(argv, monkeypatch):
    import azure.ai.ml

    monkeypatch.setattr(azure.ai.ml, "MLClient", lambda *args, **kwargs: pytest.fail("no client without settings"))
    argv("--aml.data_path", DATASTORE, "--aml.subscription_id", "sub", "--aml.resource_group", "rg",
         "--aml.compute", "gpu-cluster")
    with pytest.raises(SystemExit, match=r"to submit the job, set --aml.workspace \(.*--aml.dry_run true"):
        aml_submit.main()


def test_submitting_creates_the_job_in_the_configured_workspace(argv, monkeypatch, capsys):
    import azure.ai.ml
    import azure.identity

    created = {}

    class FakeJobs:
        def create_or_update(self, job):
            created["job"] = job
            return types.SimpleNamespace(name="job-1", experiment_name=job.experiment_name,
                                         studio_url="https://ml.azure.com/runs/job-1")

    class FakeClient:
        def __init__(self, credential, subscription_id, resource_group_name, workspace_name):
            created["workspace"] = (subscription_id, resource_group_name, workspace_name)
            self.jobs = FakeJobs()

    monkeypatch.setattr(azure.ai.ml, "MLClient", FakeClient)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda: "credential")
    argv("--aml.data_path", DATASTORE, "--aml.subscription_id", "sub", "--aml.resource_group", "rg",
         "--aml.workspace", "ws", "--aml.compute", "gpu-cluster", "--aml.experiment", "exp")
    aml_submit.main()
    assert created["workspace"] == ("sub", "rg", "ws")
    assert created["job"].compute == "gpu-cluster" and created["job"].experiment_name == "exp"
    assert "Submitted job-1 to experiment exp: https://ml.azure.com/runs/job-1" in capsys.readouterr().out


def test_the_code_snapshot_leaves_out_the_venv_outputs_and_git():
    from azure.ai.ml._utils._asset_utils import get_ignore_file  # what the SDK uploads the code with

    ignore = get_ignore_file(ROOT)
    assert ignore.path == ROOT / ".amlignore"
    for path in (".venv/bin/python", ".git/HEAD", "processed_data/RTE/train/train.tsv", "glue_data/RTE/train.tsv",
                 "training_output/RTE/model.safetensors", "__pycache__/data.cpython-311.pyc"):
        assert ignore.is_file_excluded(ROOT / path), path
    for path in ("train.py", "data.py", "config.yaml", "requirements.txt", "RTE/train.tsv",
                 "tests/fixtures/RTE/dev.tsv"):
        assert not ignore.is_file_excluded(ROOT / path), path
