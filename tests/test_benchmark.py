"""benchmark.py on a tiny random BERT: every task and seed trained once, features reused, finished runs skipped,
an interrupted benchmark resumed to the same result, the scoreboard's arithmetic, and its files."""
from __future__ import annotations

import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import benchmark
import data
import glue_metrics
from conftest import FIXTURES, MODEL, ROOT, bench_arguments, python_env, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, scoreboard, selection
from glue_support.run_record import read_run


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """train.py processes on a tiny model: one thread each is fastest, and immune to a busy machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def glue_dir(tmp_path) -> Path:
    """RTE (48 train, 24 dev rows of the real files) and the MNLI layout fixture (two dev files)."""
    folder = tmp_path / "glue_data"
    write_rte_subset(folder / "RTE", train_rows=48, dev_rows=24)
    shutil.copytree(FIXTURES / "MNLI", folder / "MNLI")
    return folder


def options(tiny_bert, glue_dir, output, **changes) -> list[str]:
    """benchmark.py's command line: two tasks, two seeds, a few tiny epochs; ``changes`` by option name."""
    values = {"tasks": "RTE,MNLI", "data_dir": glue_dir, "model": tiny_bert, "seeds": 2, "output_dir": output,
              "rte.epochs": 2, "rte.batch_size": 8, "mnli.epochs": 1, "mnli.batch_size": 4, "mnli.seeds": 0,
              "checkpoint_steps": 0, "train_options": "--stats.log_steps 2", **changes}
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def run_folder(output: Path, task: str, seed: int) -> Path:
    """A run's folder, ``runs/<Task>/<cell>/seed<N>``, where a task runs one cell."""
    folders = list((output / "runs" / task).glob(f"*/seed{seed}"))
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.slow
def test_every_task_and_seed_is_trained_once_and_scored(argv, tiny_bert, glue_dir, tmp_path, monkeypatch):
    output = tmp_path / "bench"
    argv(*options(tiny_bert, glue_dir, output))
    benchmark.main()

    summary = json.loads((output / "results.json").read_text())
    assert list(summary["tasks"]) == ["RTE", "MNLI"]
    for task, files in (("RTE", ["dev.tsv"]), ("MNLI", ["dev_matched.tsv", "dev_mismatched.tsv"])):
        entry = summary["tasks"][task]
        assert entry["seeds"] == [42, 43]
        runs = [json.loads((run_folder(output, task, seed) / "results.json").read_text()) for seed in (42, 43)]
        # a run scores its best validation where train.py kept one ("best"), else its last; MNLI the mean of its
        # files' accuracies, as train.py chose its best validation
        scores = [100 * statistics.fmean(run.get("best", run)[key]["accuracy"] for key in files) for run in runs]
        assert [run["best"]["score"] for run in runs] == pytest.approx([score / 100 for score in scores])
        assert [run["best"]["score"] for run in runs] == [glue_metrics.glue_score(task, run["best"]) for run in runs]
        assert entry["score"]["values"] == pytest.approx(scores)
        assert entry["score"]["mean"] == pytest.approx(statistics.fmean(scores))
        assert entry["score"]["std"] == pytest.approx(statistics.stdev(scores))
        assert entry["settings"]["epochs"] == {"RTE": 2, "MNLI": 1}[task]
        assert entry["wall_s"]["train"] > 0 and entry["wall_s"]["featurize"] > 0
        for seed in (42, 43):
            run = run_folder(output, task, seed)
            history = json.loads((run / "history.json").read_text())
            assert [point["epoch"] for point in history[files[0]]] == list(range(1, entry["settings"]["epochs"] + 1))
            assert not (run / "checkpoints").exists() and not list(run.glob("*.safetensors"))  # results only
    assert summary["tasks"]["RTE"]["references"] == {"MiniLM-L6-H384": 68.8, "BERT-base uncased": 65.7}
    assert summary["glue_average"] == pytest.approx(
        statistics.fmean(entry["score"]["mean"] for entry in summary["tasks"].values()))
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (output / "results.md").read_text()
    assert f"| RTE | acc | **{summary['tasks']['RTE']['score']['mean']:.1f} ± " in table
    assert f"GLUE average over 2 tasks (RTE, MNLI): {summary['glue_average']:.1f}" in table

    # the same command again: every run is finished and every feature file built, so nothing runs
    def refuse(*args, **kwargs):
        raise AssertionError("nothing should be featurized or trained again")

    monkeypatch.setattr(data, "featurize", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    benchmark.main()
    assert json.loads((output / "results.json").read_text())["tasks"] == summary["tasks"]

    # another learning rate is another cell (tests/test_grid.py); other train.py options are the same cell's
    argv(*options(tiny_bert, glue_dir, output, train_options="--stats.log_steps 3"))
    with pytest.raises(SystemExit, match=r"lr5e-05-bs8-ep2-len128/seed42 holds a RTE seed 42 run with other settings "
                                         r"\(train_options '--stats.log_steps 2' -> '--stats.log_steps 3'\): choose "
                                         r"another --bench.output_dir, or delete that folder"):
        benchmark.main()


@pytest.mark.slow
def test_an_interrupted_benchmark_resumes_to_the_result_of_an_uninterrupted_one(argv, tiny_bert, glue_dir, tmp_path):
    settings = {"tasks": "RTE", "seeds": 1, "rte.epochs": 3, "rte.batch_size": 4, "checkpoint_steps": 3}
    command = [sys.executable, str(ROOT / "benchmark.py"), *options(tiny_bert, glue_dir, tmp_path / "cut", **settings)]
    process = subprocess.Popen(command, env={**python_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "cut" / "runs" / "RTE" / "lr5e-05-bs4-ep3-len128" / "seed42" / "checkpoints"
    while not (checkpoints.exists() and any(checkpoints.iterdir())):
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # as a scheduler's preemption would
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "stopped by SIGTERM during RTE seed 42; run the same command again to resume it" in stderr
    record = json.loads((checkpoints.parent / "benchmark_run.json").read_text())
    assert record["status"] == "running" and record["attempts"] == 1

    resumed = subprocess.run(command, env={**python_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming epoch" in (checkpoints.parent / "train.log").read_text()
    argv(*options(tiny_bert, glue_dir, tmp_path / "whole", **settings))
    benchmark.main()
    results = [json.loads((run_folder(tmp_path / run, "RTE", 42) / "results.json").read_text())
               for run in ("cut", "whole")]
    assert results[0]["dev.tsv"] == results[1]["dev.tsv"]
    assert json.loads((checkpoints.parent / "benchmark_run.json").read_text())["attempts"] == 2


def test_missing_task_files_name_the_download_command(argv, tiny_bert, glue_dir, tmp_path):
    argv(*options(tiny_bert, glue_dir, tmp_path / "bench", tasks="RTE,CoLA"))
    with pytest.raises(SystemExit, match=rf"{glue_dir}/CoLA/train.tsv: no such file; get the GLUE files with "
                                         rf"python download_glue.py --tasks CoLA --data_dir {glue_dir}"):
        benchmark.main()
    argv("--tasks", "AX,RTE")
    with pytest.raises(SystemExit, match="AX has no training data"):
        benchmark.main()


def test_several_processes_train_through_torchrun(tiny_bert, tmp_path):
    args = bench_arguments(tasks="RTE", data_dir="glue", model=tiny_bert, first_seed=42, output_dir=str(tmp_path),
                           nproc_per_node=2, train_options="--x 'a b'", checkpoint_steps=0)
    run = benchmark_plan.plan(args, {"rte": {"epochs": 1, "max_lr": 1e-4, "batch_size": 8, "max_seq_len": 64,
                                        "seeds": 0, "init_from": ""}}, [benchmark.get_task("RTE")])[0]
    command = benchmark.train_command(args, run, resume=True)
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[5].endswith("train.py") and command[-2:] == ["--x", "a b"]
    assert command[command.index("--ckpt.resume") + 1] == "true"
    assert command[command.index("--ckpt.period_steps") + 1] == "null"
    assert command[command.index("--tmod.max_lr") + 1] == "0.0001"
    assert command[command.index("--tmod.keep_best") + 1] == "true"  # the model scored is the model kept


def test_scoreboard_scores_tasks_as_glue_does(tmp_path):
    """Two metrics score their mean, two dev files the mean of theirs, unfinished runs do not count."""
    write_finished_run(tmp_path, "MRPC", 1, {"dev.tsv": {"accuracy": 0.80, "f1": 0.90, "combined_score": 0.85,
                                                         "loss": 0.4, "epoch": 3}}, 10.0)
    write_finished_run(tmp_path, "MRPC", 2, {"dev.tsv": {"accuracy": 0.70, "f1": 0.80, "combined_score": 0.75}}, 30.0)
    write_finished_run(tmp_path, "MNLI", 1, {"dev_matched.tsv": {"accuracy": 0.6},
                                             "dev_mismatched.tsv": {"accuracy": 0.7}}, 5.0)
    write_finished_run(tmp_path, "RTE", 1, {"dev.tsv": {"accuracy": 0.5}}, 1.0)
    record = tmp_path / "runs" / "RTE" / "lr5e-05-bs16-ep3-len128" / "seed1" / "benchmark_run.json"
    record.write_text(record.read_text().replace('"done"', '"running"'))
    references = tmp_path / "references.json"
    references.write_text(json.dumps({"references": [{"model": "Ref", "about": "a.", "source": "s", "scores": {
        "MRPC": {"f1": 90.0, "accuracy": 86.0}, "MNLI": 80.0}}]}))

    summary = scoreboard.summarize(str(tmp_path), {task: selection.select(str(tmp_path), task)
                                                   for task in ("MRPC", "MNLI", "RTE")}, MODEL, str(references))
    mrpc, mnli = summary.to_json()["tasks"]["MRPC"], summary.to_json()["tasks"]["MNLI"]
    assert mrpc["score"]["values"] == pytest.approx([85.0, 75.0]) and mrpc["score"]["std"] == pytest.approx(7.0711,
                                                                                                          abs=1e-4)
    assert mrpc["metrics"]["dev.tsv/f1"]["mean"] == pytest.approx(85.0)
    assert mrpc["wall_s"] == {"featurize": 0.0, "train": 40.0, "per_run": 20.0}
    assert mrpc["references"] == {"Ref": 88.0}
    assert mnli["score"]["values"] == pytest.approx([65.0]) and mnli["score"]["std"] is None
    assert "RTE" not in summary.tasks
    assert summary.glue_average == pytest.approx(72.5)
    table = scoreboard.markdown(summary)
    assert "| MRPC | F1/acc | **80.0 ± 7.1** |" in table and "| MNLI | acc (m/mm) | **65.0** |" in table
    assert "GLUE average over 2 tasks (MRPC, MNLI): 72.5" in table and "Ref on the same tasks: 84.0" in table


def test_as_an_azure_ml_pipeline_each_run_is_a_step_and_a_last_step_writes_the_scoreboard(argv, capsys):
    pytest.importorskip("azure.ai.ml")
    argv("--aml.submit", "true", "--aml.dry_run", "true", "--aml.compute", "gpu-cluster", "--tasks", "RTE,STS-B",
         "--seeds", 2, "--data_dir", "azureml://datastores/glue/paths/glue_data", "--rte.epochs", 3,
         "--nproc_per_node", 4, "--train_options", "--trainer.backend sp-amp")
    benchmark.main()
    pipeline = yaml.safe_load(capsys.readouterr().out)
    assert pipeline["inputs"]["glue_data"]["path"] == "azureml://datastores/glue/paths/glue_data"
    assert pipeline["settings"]["default_compute"] == "azureml:gpu-cluster"
    steps = {name: job for name, job in pipeline["jobs"].items() if name != "scoreboard"}
    assert sorted(steps) == ["rte_seed42", "rte_seed43", "stsb_seed42", "stsb_seed43"]
    command = " ".join(steps["rte_seed43"]["component"]["command"].split())
    assert command.startswith("python benchmark.py --tasks RTE --seeds 1 --first_seed 43 --data_dir "
                              "${{inputs.glue_data}} --output_dir ${{outputs.output}}")
    for changed in ("--bench.nproc_per_node 4", "--bench.train_options '--trainer.backend sp-amp'", "--rte.epochs 3"):
        assert changed in command
    assert "--stsb.epochs" not in command and steps["rte_seed43"]["inputs"]["glue_data"]["path"] == \
        "${{parent.inputs.glue_data}}"
    board = pipeline["jobs"]["scoreboard"]
    assert {value["path"] for value in board["inputs"].values()} == {
        f"${{{{parent.jobs.{name}.outputs.output}}}}" for name in steps}
    assert " ".join(board["component"]["command"].split()).endswith(
        "python benchmark.py --report_only true --output_dir ${{outputs.scoreboard}} --tasks RTE,STS-B "
        "--model sentence-transformers/all-MiniLM-L6-v2")

    # a grid: a step per cell and seed, each given its cell's values (and nothing of the other task's)
    argv("--aml.submit", "true", "--aml.dry_run", "true", "--tasks", "RTE,MRPC", "--seeds", 1, "--data_dir",
         "azureml:glue:1", "--rte.max_lr", "2.0e-5,3.0e-5", "--mrpc.batch_size", "16,32", "--rte.epochs", 3)
    benchmark.main()
    jobs = yaml.safe_load(capsys.readouterr().out)["jobs"]
    assert sorted(jobs) == ["mrpc_lr5e_05_bs16_ep5_len128_seed42", "mrpc_lr5e_05_bs32_ep5_len128_seed42",
                            "rte_lr2e_05_bs16_ep3_len128_seed42", "rte_lr3e_05_bs16_ep3_len128_seed42", "scoreboard"]
    command = " ".join(jobs["rte_lr3e_05_bs16_ep3_len128_seed42"]["component"]["command"].split())
    assert command.endswith("--rte.epochs 3 --rte.max_lr 3.0e-05") and "mrpc" not in command
    assert "--mrpc.batch_size 32" in jobs["mrpc_lr5e_05_bs32_ep5_len128_seed42"]["component"]["command"]
    step = jobs["rte_lr3e_05_bs16_ep3_len128_seed42"]["component"]
    assert step["display_name"] == "RTE lr3e-05-bs16-ep3-len128 seed 42"

    argv("--aml.submit", "true", "--tasks", "RTE", "--data_dir", "azureml:glue:1")
    with pytest.raises(SystemExit, match="to submit the job, set --aml.subscription_id, --aml.resource_group, "
                                         "--aml.workspace, --aml.compute"):
        benchmark.main()


@pytest.mark.parametrize("option, refusal", [
    (("--rte.init_from", "MRPC"), "--aml.submit runs every task at once, and init_from needs the named task's runs "
                                  "first"),
    (("--predict", "true"), "--predict true runs locally, after the runs: submit without it"),
])
def test_what_a_pipeline_cannot_run_is_refused_before_the_azure_sdk_loads(argv, monkeypatch, option, refusal):
    monkeypatch.setitem(sys.modules, "aml_submit", None)  # as without the SDK: importing it would fail
    argv("--aml.submit", "true", "--aml.dry_run", "true", "--tasks", "RTE,MRPC", "--data_dir", "azureml:glue:1",
         *option)
    with pytest.raises(SystemExit, match=re.escape(refusal)):
        benchmark.main()


def test_features_from_an_older_data_py_or_damaged_are_built_again(tiny_bert, glue_dir, tmp_path):
    args = bench_arguments(tasks="RTE", data_dir=str(glue_dir), model=tiny_bert, output_dir=str(tmp_path / "bench"))
    specs = [benchmark.get_task("RTE")]
    run = benchmark_plan.plan(args, {"rte": {"epochs": 1, "max_lr": 1e-4, "batch_size": 8, "max_seq_len": 64,
                                        "seeds": 0, "init_from": ""}}, specs)[0]
    files = benchmark.read_sources(args, specs)["RTE"]
    benchmark.build_features(args, run, files)
    train_file = Path(run.features) / "train" / "train.tsv"
    built = train_file.read_bytes()
    train_file.write_bytes(b"features of another format")
    benchmark.build_features(args, run, files)
    assert train_file.read_bytes() == built
    assert data.read_metadata(str(Path(run.features) / "dev" / "dev.tsv"))["max_seq_len"] == 64


def test_a_finished_run_is_scored_by_its_best_validation_and_at_its_last(tmp_path):
    folder = write_finished_run(tmp_path, "MRPC", 42, {"dev.tsv": {"accuracy": 0.7, "f1": 0.8, "epoch": 3},
                                                       "best": {"epoch": 2, "step": 20,
                                                                "dev.tsv": {"accuracy": 0.8, "f1": 0.9}}})
    run = read_run(str(folder))
    assert (run.score, run.last_score) == pytest.approx((0.85, 0.75))  # GLUE's mean of F1 and acc
