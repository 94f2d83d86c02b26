"""benchmark.py on a tiny random BERT: every task and seed trained once, features reused, finished runs skipped, an
interrupted benchmark resumed to the same result, and its files; --tasks all and capped runs on the first N examples
(planning writes nothing); --<task>.init_from (RTE started from the model of MNLI's selected run, after MNLI's runs);
--predict (the selected runs predict the submission, WNLI from its majority class, the zip refused while tasks are
missing); a run's identity (features and finished runs reused only for the same file bytes, wherever they lie, a run
of other data refused naming the file, the data, example counts and versions recorded); as an Azure ML pipeline."""
from __future__ import annotations

import hashlib
import json
import logging
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
from conftest import FIXTURES, ROOT, bench_arguments, python_env, write_rte_subset
from glue_support import benchmark_plan, provenance, submission
from glue_support import parallel as parallel_module
from glue_support.command_line import parse_config


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """train.py processes on a tiny model: one thread each is fastest, and immune to a busy machine."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def glue_dir(tmp_path) -> Path:
    """RTE (48 train, 24 dev rows of the real files, the fixture's test file), MNLI and WNLI from the fixtures and
    the diagnostic set where download_glue.py puts it."""
    folder = tmp_path / "glue_data"
    write_rte_subset(folder / "RTE", train_rows=48, dev_rows=24)
    shutil.copy(FIXTURES / "RTE" / "test.tsv", folder / "RTE")
    for task in ("MNLI", "WNLI"):
        shutil.copytree(FIXTURES / task, folder / task)
    (folder / "diagnostic").mkdir()
    shutil.copy(FIXTURES / "AX" / "diagnostic.tsv", folder / "diagnostic")
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


def test_all_is_the_nine_tasks_with_training_data():
    args = bench_arguments(tasks=" ALL ", data_dir="glue")
    assert [spec.name for spec in benchmark_plan.parse_tasks(args, check_files=False)] == [
        "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]


@pytest.mark.slow
def test_capped_runs_read_and_record_the_first_examples(argv, tiny_bert, tmp_path):
    glue_dir = tmp_path / "glue_data"
    write_rte_subset(glue_dir / "RTE", train_rows=48, dev_rows=24)
    output = tmp_path / "bench"
    common = ["--tasks", "RTE", "--data_dir", glue_dir, "--model", tiny_bert, "--seeds", 1, "--output_dir", output,
              "--rte.epochs", 1, "--rte.batch_size", 8, "--rte.max_seq_len", 64, "--checkpoint_steps", 0]
    argv(*common, "--max_train_examples", 10, "--max_eval_examples", 5)
    benchmark.main()

    [run] = (output / "runs" / "RTE").glob("*/seed42")
    subset = output / "subsets" / "RTE" / "train-first10" / "train.tsv"
    assert subset.read_text().split("\n")[:11] == (glue_dir / "RTE" / "train.tsv").read_text().split("\n")[:11]
    assert subset.read_text().count("\n") == 11  # the header and 10 rows
    settings = json.loads((run / "benchmark_run.json").read_text())["settings"]
    assert settings["max_train_examples"] == 10 and settings["max_eval_examples"] == 5
    assert settings["data"]["train.tsv"] == provenance.file_identity(str(subset))
    assert settings["data"]["dev.tsv"] == provenance.file_identity(
        str(output / "subsets" / "RTE" / "dev-first5" / "dev.tsv"))
    assert json.loads((run / "results.json").read_text())["dev.tsv"]["examples"] == 5
    [features] = (output / "features" / "RTE").glob("*-len64")
    assert data.read_metadata(str(features / "train" / "train.tsv"))["source_sha256"] == \
        settings["data"]["train.tsv"]["sha256"]

    # the whole files are other data: a quick check never passes for the real run
    argv(*common)
    with pytest.raises(SystemExit, match=r"seed42 holds a RTE seed 42 run with other data and settings"):
        benchmark.main()


def test_planning_a_capped_benchmark_writes_nothing(argv, tmp_path):
    """The plan reads the files' sizes to order the runs; the capped copies are written, and the files hashed, when
    the runs start (benchmark.read_sources)."""
    glue_dir = tmp_path / "glue_data"
    write_rte_subset(glue_dir / "RTE", train_rows=48, dev_rows=24)
    output = tmp_path / "bench"
    output.mkdir()
    argv("--tasks", "RTE", "--data_dir", glue_dir, "--output_dir", output, "--seeds", 2, "--max_train_examples", 10,
         "--max_eval_examples", 5)
    config = parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    args = benchmark_plan.BenchmarkArguments(**config["bench"])
    specs = benchmark_plan.parse_tasks(args, check_files=True)
    runs = benchmark_plan.plan(args, config, specs, benchmark_plan.training_sizes(args, specs))
    assert [run.seed for run in runs] == [42, 43] and not list(output.iterdir())
    assert runs[0].train_bytes == len(b"".join((glue_dir / "RTE" / "train.tsv").read_bytes().splitlines(True)[:11]))

    sources = benchmark.read_sources(args, specs)
    subset = output / "subsets" / "RTE" / "train-first10" / "train.tsv"
    assert sources["RTE"]["train.tsv"] == provenance.file_identity(str(subset))
    assert subset.stat().st_size == runs[0].train_bytes


@pytest.mark.parametrize("parallel", [1, pytest.param(2, marks=pytest.mark.skipif(
    parallel_module.cpu_cores() < 2, reason="two runs at once need two cores here"))])
@pytest.mark.slow
def test_rte_starts_from_the_selected_mnli_run(argv, tiny_bert, tmp_path, parallel):
    glue_dir = tmp_path / "glue_data"
    write_rte_subset(glue_dir / "RTE", train_rows=48, dev_rows=24)
    shutil.copytree(FIXTURES / "MNLI", glue_dir / "MNLI")
    output = tmp_path / "bench"
    argv("--tasks", "RTE,MNLI", "--data_dir", glue_dir, "--model", tiny_bert, "--seeds", 2, "--output_dir", output,
         "--rte.epochs", 1, "--rte.batch_size", 8, "--rte.max_seq_len", 64, "--rte.seeds", 1, "--mnli.seeds", 0,
         "--mnli.epochs", 1, "--mnli.batch_size", 4, "--mnli.max_seq_len", 64, "--checkpoint_steps", 0,
         "--rte.init_from", "mnli", "--parallel", parallel)
    benchmark.main()

    mnli_runs = sorted((output / "runs" / "MNLI").glob("*/seed*"))
    [rte_run] = (output / "runs" / "RTE").glob("*/seed42")
    assert rte_run.parent.name == "lr5e-05-bs8-ep1-len64-fromMNLI"
    summary = json.loads((output / "results.json").read_text())
    [cell] = summary["tasks"]["MNLI"]["cells"]
    best = max(cell["runs"], key=lambda run: run["score"])["seed"]
    selected = output / "runs" / "MNLI" / cell["name"] / f"seed{best}"
    settings = json.loads((rte_run / "benchmark_run.json").read_text())["settings"]
    assert settings["init_from"] == f"runs/MNLI/{cell['name']}/seed{best}"
    command = (rte_run / "train.log").read_text().split("\n")[0]
    assert f"--model.hf_model {selected} --model.ignore_mismatched_sizes true" in command
    # MNLI's runs finished before RTE's started (seed-major order would have put RTE first; --parallel 2 would
    # have started it beside MNLI's first run)
    records = [json.loads((run / "benchmark_run.json").read_text()) for run in (*mnli_runs, rte_run)]
    assert [record["settings"]["task"] for record in records] == ["MNLI", "MNLI", "RTE"]
    assert max((run / "results.json").stat().st_mtime for run in mnli_runs) < (rte_run / "train.log").stat().st_mtime
    # the selected MNLI model stays for a later command; the other MNLI run's and RTE's are removed
    assert [bool(benchmark.model_files(str(run))) for run in mnli_runs] == [run == selected for run in mnli_runs]
    assert not benchmark.model_files(str(rte_run))

    benchmark.main()  # again: every run, RTE's too, is the same experiment, and skipped
    assert json.loads((rte_run / "benchmark_run.json").read_text())["attempts"] == 1


@pytest.mark.parametrize("changes, refusal", [
    ({"rte.init_from": "QNLI"}, r"--rte.init_from QNLI: QNLI is not among --tasks \(RTE, MNLI\); add it"),
    ({"rte.init_from": "MNLI", "mnli.init_from": "RTE"},
     r"--rte.init_from MNLI: the tasks' starts form a loop \(RTE -> MNLI -> RTE\); one of them must start from"),
    ({"rte.init_from": "RTE"}, r"--rte.init_from RTE: the tasks' starts form a loop \(RTE -> RTE\)"),
    ({"rte.init_from": "XNLI"}, r"--rte.init_from XNLI: unknown GLUE task .XNLI.; expected one of"),
])
def test_bad_starts_are_refused_before_any_work(argv, tiny_bert, tmp_path, changes, refusal):
    glue_dir = tmp_path / "glue_data"
    write_rte_subset(glue_dir / "RTE", train_rows=48, dev_rows=24)
    shutil.copytree(FIXTURES / "MNLI", glue_dir / "MNLI")
    argv("--tasks", "RTE,MNLI", "--data_dir", glue_dir, "--model", tiny_bert, "--output_dir", tmp_path / "bench",
         *(part for key, value in changes.items() for part in (f"--{key}", value)))
    with pytest.raises(SystemExit, match=refusal):
        benchmark.main()
    assert not (tmp_path / "bench" / "runs").exists()


@pytest.mark.slow
def test_selected_runs_predict_the_submission(argv, tiny_bert, glue_dir, tmp_path, fixture_counts, monkeypatch,
                                              caplog):
    output = tmp_path / "bench"
    benchmark_options = ["--tasks", "RTE,MNLI", "--data_dir", glue_dir, "--model", tiny_bert, "--seeds", 2,
                         "--output_dir", output, "--rte.epochs", 1, "--rte.batch_size", 8, "--rte.max_seq_len", 64,
                         "--mnli.epochs", 1, "--mnli.seeds", 1, "--mnli.max_seq_len", 64, "--checkpoint_steps", 0,
                         "--predict", "true", "--wnli.majority", "true"]
    argv(*benchmark_options)
    with caplog.at_level(logging.WARNING):
        benchmark.main()

    folder = output / "submission"
    assert sorted(path.name for path in folder.iterdir()) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv",
                                                              "WNLI.tsv"]
    # every file written passes the leaderboard's checks; the missing ones are all that is wrong, and refuse the zip
    missing = [f"{folder / name}: missing (the {entry.what} predictions)"
               for name, entry in submission.leaderboard_files().items() if not (folder / name).exists()]
    assert submission.check_submission(str(folder)) == missing
    assert not (output / "glue_submission.zip").exists()
    assert f"glue_submission.zip not written: {folder} lacks 6 of the leaderboard's 11 files" in caplog.text
    assert "  CoLA.tsv: no CoLA test predictions" in caplog.text

    # RTE: the better of its two seeds predicted, and only its model was kept
    summary = json.loads((output / "results.json").read_text())
    [cell] = summary["tasks"]["RTE"]["cells"]
    best = max(cell["runs"], key=lambda run: run["score"])["seed"]
    runs = output / "runs" / "RTE" / cell["name"]
    record = json.loads((output / "predictions" / "RTE" / "prediction.json").read_text())
    assert record["run"] == f"runs/RTE/{cell['name']}/seed{best}"
    assert (folder / "RTE.tsv").read_text() == (output / "predictions" / "RTE" / "submission" / "RTE.tsv").read_text()
    assert [bool(benchmark.model_files(str(runs / f"seed{seed}"))) for seed in (42, 43)] == [best == 42, best == 43]
    assert (folder / "WNLI.tsv").read_text().split("\n")[1:3] == ["0\t1", "1\t1"]  # the fixture's majority: 1

    def refuse(*args, **kwargs):
        raise AssertionError("nothing should run again")

    # --report_only true --predict true: no training, but predictions where they are missing; an earlier zip goes
    shutil.rmtree(output / "predictions" / "RTE")
    (output / "glue_submission.zip").write_bytes(b"an earlier command's")
    argv(*benchmark_options, "--report_only", "true")
    monkeypatch.setattr(benchmark, "start_training", refuse)
    benchmark.main()
    assert json.loads((output / "predictions" / "RTE" / "prediction.json").read_text()) == record
    assert (folder / "RTE.tsv").read_text() == (output / "predictions" / "RTE" / "submission" / "RTE.tsv").read_text()
    assert not (output / "glue_submission.zip").exists()

    # the same command again: nothing is trained, featurized or predicted again
    argv(*benchmark_options)
    monkeypatch.setattr(data, "featurize", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    benchmark.main()
    assert json.loads((output / "predictions" / "RTE" / "prediction.json").read_text()) == record


@pytest.mark.slow
def test_a_selected_run_without_its_model_is_refused(argv, tiny_bert, glue_dir, tmp_path):
    output = tmp_path / "bench"
    common = ["--tasks", "RTE", "--data_dir", glue_dir, "--model", tiny_bert, "--seeds", 1, "--output_dir", output,
              "--rte.epochs", 1, "--rte.batch_size", 8, "--rte.max_seq_len", 64, "--checkpoint_steps", 0]
    argv(*common)
    benchmark.main()  # without --predict: the model is removed
    argv(*common, "--predict", "true")
    with pytest.raises(ValueError, match=r"seed42: RTE's selected run kept no model to predict with \(removed when it "
                                         r"finished, not needed then\); delete that run folder to train it again"):
        benchmark.main()


def test_missing_test_files_are_refused_before_any_work(argv, tiny_bert, glue_dir, tmp_path):
    shutil.rmtree(glue_dir / "diagnostic")
    argv("--tasks", "MNLI", "--data_dir", glue_dir, "--model", tiny_bert, "--output_dir", tmp_path / "bench",
         "--predict", "true")
    with pytest.raises(SystemExit, match=rf"{glue_dir}/diagnostic/diagnostic.tsv: no such file; get the GLUE files "
                                         rf"with python download_glue.py --tasks diagnostic --data_dir {glue_dir}"):
        benchmark.main()
    assert not (tmp_path / "bench").exists()


def bench_options(tiny_bert: str, data_dir: Path, output: Path) -> list[str]:
    """RTE, one seed, one epoch of the tiny BERT."""
    return ["--tasks", "RTE", "--data_dir", str(data_dir), "--model", tiny_bert, "--seeds", "1",
            "--output_dir", str(output), "--rte.epochs", "1", "--rte.batch_size", "8", "--rte.max_seq_len", "64",
            "--checkpoint_steps", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """A benchmark run to the end on 48 RTE training rows (trained once for the module): its GLUE folder and its
    output folder, which the tests copy before running again into it."""
    root = tmp_path_factory.mktemp("identity")
    glue = root / "glue"
    write_rte_subset(glue / "RTE", train_rows=48, dev_rows=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # a train.py process on a tiny model: one thread is fastest
        patch.setattr(sys, "argv", ["benchmark.py", *bench_options(tiny_bert, glue, root / "bench")])
        benchmark.main()
    return glue, root / "bench"


@pytest.fixture
def output(finished, tmp_path) -> Path:
    """A copy of the finished benchmark's output folder, for this test to run into."""
    return Path(shutil.copytree(finished[1], tmp_path / "bench"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


RUN = Path("runs") / "RTE" / "lr5e-05-bs8-ep1-len64" / "seed42"  # the run, in the folder of its settings


def refuse(*args, **kwargs):
    raise AssertionError("nothing should be featurized or trained")


@pytest.mark.slow
def test_results_name_the_data_its_example_counts_and_the_versions(finished):
    glue, output = finished
    run = json.loads((output / RUN / "results.json").read_text())
    for option, name, rows in (("trainpath", "train.tsv", 48), ("valpath", "dev.tsv", 24)):
        source = glue / "RTE" / name
        assert run["data"][option] == {name: {"source": str(source), "bytes": source.stat().st_size,
                                              "sha256": sha256(source), "examples": rows}}
    assert run["task"] == "RTE" and run["dev.tsv"]["examples"] == 24
    versions = run["versions"]
    assert versions == provenance.versions() and list(versions) == ["python", *provenance.LIBRARIES]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3])) and all(versions.values())

    summary = json.loads((output / "results.json").read_text())
    assert summary["tasks"]["RTE"]["data"] == {**run["data"]["trainpath"], **run["data"]["valpath"]}
    assert summary["versions"] == [{"versions": versions, "runs": ["RTE seed 42"]}]
    table = (output / "results.md").read_text()
    for name, rows in (("train.tsv", 48), ("dev.tsv", 24)):
        assert f"| RTE | RTE/{name} | {rows} | `{sha256(glue / 'RTE' / name)}` |" in table  # no machine's path
    assert f"Made with python {versions['python']}, torch {versions['torch']}, transformers " in table

    record = json.loads((output / RUN / "benchmark_run.json").read_text())
    assert record["data_dir"] == str(glue)
    assert record["settings"]["data"] == {name: {"bytes": (glue / "RTE" / name).stat().st_size,
                                                 "sha256": sha256(glue / "RTE" / name)}
                                          for name in ("train.tsv", "dev.tsv")}


@pytest.mark.slow
def test_the_same_bytes_in_another_folder_reuse_the_features_and_the_finished_run(
        finished, output, tiny_bert, tmp_path, argv, monkeypatch):
    moved = Path(shutil.copytree(finished[0], tmp_path / "elsewhere"))
    monkeypatch.setattr(data, "featurize", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    argv(*bench_options(tiny_bert, moved, output))
    benchmark.main()
    assert json.loads((output / "results.json").read_text()) == json.loads((finished[1] / "results.json").read_text())


@pytest.mark.slow
def test_other_data_refuses_the_finished_run_naming_the_file_and_rebuilds_only_its_features(
        finished, output, tiny_bert, tmp_path, argv, caplog):
    glue = finished[0]
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=40, dev_rows=24).parent  # dev.tsv: same bytes
    features = output / "features" / "RTE" / f"{benchmark_plan.model_slug(tiny_bert)}-len64"
    dev_file = (features / "dev" / "dev.tsv").stat()
    argv(*bench_options(tiny_bert, other, output))
    refusal = (f"{output / RUN} holds a RTE seed 42 run with other data ({other}/RTE/train.tsv sha256 "
               f"{sha256(glue / 'RTE' / 'train.tsv')[:12]} -> {sha256(other / 'RTE' / 'train.tsv')[:12]}): "
               "choose another --bench.output_dir, or delete that folder to run it again")
    with pytest.raises(SystemExit, match=re.escape(refusal)):
        benchmark.main()
    assert data.read_metadata(str(features / "train" / "train.tsv"))["count"] == 48  # refused before any work

    shutil.rmtree(output / RUN)  # as the refusal says
    with caplog.at_level("INFO"):
        benchmark.main()
    assert (f"RTE train features: building them ({other}/RTE/train.tsv is not the file they were made from: "
            f"{(glue / 'RTE' / 'train.tsv').stat().st_size} -> {(other / 'RTE' / 'train.tsv').stat().st_size} bytes"
            ) in caplog.text
    assert "RTE dev features: building" not in caplog.text
    assert (features / "dev" / "dev.tsv").stat().st_mtime_ns == dev_file.st_mtime_ns
    run = json.loads((output / RUN / "results.json").read_text())
    assert run["data"]["trainpath"]["train.tsv"]["examples"] == 40
    assert run["data"]["trainpath"]["train.tsv"]["sha256"] == sha256(other / "RTE" / "train.tsv")
    assert run["data"]["valpath"]["dev.tsv"]["source"] == str(glue / "RTE" / "dev.tsv")  # reused: made from there


@pytest.mark.slow
def test_an_interrupted_run_on_other_data_is_refused_too(finished, output, tiny_bert, tmp_path, argv, monkeypatch):
    record_path = output / RUN / "benchmark_run.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "status": "running"}))
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=48, dev_rows=20).parent
    monkeypatch.setattr(data, "featurize", refuse)
    argv(*bench_options(tiny_bert, other, output))
    with pytest.raises(SystemExit, match=re.escape(f"run with other data ({other}/RTE/dev.tsv sha256 ")):
        benchmark.main()


@pytest.mark.slow
def test_settings_and_data_changed_together_are_both_named(finished, output, tiny_bert, tmp_path, argv):
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=40, dev_rows=24).parent
    argv(*bench_options(tiny_bert, other, output), "--train_options", "--stats.log_steps 3")  # in the same cell
    with pytest.raises(SystemExit, match=r"run with other data and settings \(\S+/RTE/train.tsv sha256 \w{12} -> "
                                         r"\w{12}, train_options '' -> '--stats.log_steps 3'\)"):
        benchmark.main()
