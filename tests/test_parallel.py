"""benchmark.py --parallel N: each run's share of the machine (threads on CPU, devices on GPUs), and runs at once
that stop and resume as one run does: two runs training together, stopped by Ctrl-C or by one of them crashing,
then resumed to the results of the same runs one after the other."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import benchmark
from conftest import ROOT, bench_arguments, python_env, write_rte_subset
from glue_support import benchmark_plan, parallel

THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_each_run_gets_its_share_of_cores_or_gpus():
    assert parallel.shares(1, 1, gpus=[], cores=2) == [{}]  # one run: the environment as it is
    assert parallel.shares(2, 1, gpus=[], cores=4) == [dict.fromkeys(THREADS, "2")] * 2
    assert parallel.shares(2, 2, gpus=[], cores=4) == [dict.fromkeys(THREADS, "1")] * 2  # per torchrun process
    assert parallel.shares(3, 1, gpus=[], cores=7) == [dict.fromkeys(THREADS, "2")] * 3
    with pytest.raises(ValueError, match=r"^--bench.parallel 3: 3 runs of 1 process\(es\) need 3 cores, and this "
                                         r"process may use 2: lower --bench.parallel$"):
        parallel.shares(3, 1, gpus=[], cores=2)
    # GPUs: a device (nproc_per_node devices) per run, threads left as they are
    assert parallel.shares(2, 1, gpus=["0", "1", "2"], cores=2) == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                                    {"CUDA_VISIBLE_DEVICES": "1"}]
    assert parallel.shares(2, 2, gpus=["4", "5", "6", "7"], cores=2) == [{"CUDA_VISIBLE_DEVICES": "4,5"},
                                                                         {"CUDA_VISIBLE_DEVICES": "6,7"}]
    with pytest.raises(ValueError, match=r"2 runs of 2 GPU\(s\) need 4 GPUs, and 3 are visible \(0,1,2\)"):
        parallel.shares(2, 2, gpus=["0", "1", "2"], cores=64)
    assert parallel.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert parallel.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []  # CUDA's way of hiding every device


def test_by_default_every_gpu_is_busy_and_a_cpu_runs_two_where_each_process_gets_a_core():
    assert parallel.auto_parallel(1, gpus=[str(index) for index in range(8)], cores=2) == 8
    assert parallel.auto_parallel(2, gpus=[str(index) for index in range(8)], cores=2) == 4  # torchrun's pairs
    assert parallel.auto_parallel(2, gpus=["0"], cores=2) == 1
    assert [parallel.auto_parallel(1, gpus=[], cores=cores) for cores in (1, 2, 16)] == [1, 2, 2]
    assert [parallel.auto_parallel(2, gpus=[], cores=cores) for cores in (3, 4)] == [1, 2]


def test_no_more_runs_at_once_than_are_left_to_run(monkeypatch):
    """A share left idle is a run's cores lost: one run under --parallel 0 on 2 cores trains on both, not on one."""
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 2)
    monkeypatch.setattr(parallel, "visible_gpus", lambda environ: [])

    def shares(option: int, to_run: int) -> list[dict[str, str]]:
        args = bench_arguments(nproc_per_node=1, parallel=option)
        return benchmark.run_shares(args, benchmark.runs_at_once(args), to_run)

    assert shares(0, 1) == shares(2, 1) == shares(1, 5) == [{}]  # the whole machine, as one run at a time
    assert shares(0, 5) == shares(2, 2) == [dict.fromkeys(THREADS, "1")] * 2
    with pytest.raises(benchmark.ConfigError, match=r"--bench.parallel 3: 3 runs .* need 3 cores"):
        shares(3, 1)  # refused as given, though one run is left


def test_within_a_seed_the_runs_with_most_training_start_first(tmp_path):
    """Runs at once end together when the longest start first: MNLI named last of nine would otherwise train alone
    for hours after the small tasks. The order stays seed-major (a benchmark stopped early has every task)."""
    data = tmp_path / "glue"
    for task, train_bytes in (("CoLA", 3000), ("RTE", 1000)):
        (data / task).mkdir(parents=True)
        (data / task / "train.tsv").write_bytes(b"x" * train_bytes)
        (data / task / "dev.tsv").write_bytes(b"x")
    args = bench_arguments(tasks="CoLA,RTE", data_dir=str(data), seeds=2, output_dir=str(tmp_path / "bench"))
    specs = benchmark_plan.parse_tasks(args, check_files=False)

    def order(cola_epochs: int, rte_epochs: list[int], files_read: bool = True) -> list[str]:
        config = {task: {"epochs": epochs, "max_lr": 5e-5, "batch_size": 16, "max_seq_len": 128, "seeds": 0,
                         "init_from": ""} for task, epochs in (("cola", cola_epochs), ("rte", rte_epochs))}
        sizes = benchmark_plan.training_sizes(args, specs) if files_read else None
        return [f"{run.spec.name} ep{run.settings.epochs} {run.seed}"
                for run in benchmark_plan.plan(args, config, specs, sizes)]

    # training work: bytes x epochs, CoLA 3000 x 2 = 6000, RTE 1000 x 5 = 5000 and 1000 x 1
    assert order(2, [1, 5]) == ["CoLA ep2 42", "RTE ep5 42", "RTE ep1 42", "CoLA ep2 43", "RTE ep5 43", "RTE ep1 43"]
    assert order(1, [1, 5]) == ["RTE ep5 42", "CoLA ep1 42", "RTE ep1 42", "RTE ep5 43", "CoLA ep1 43", "RTE ep1 43"]
    # without the files (an Azure ML pipeline's plan): the order named
    assert order(1, [1, 5], files_read=False) == ["CoLA ep1 42", "RTE ep1 42", "RTE ep5 42", "CoLA ep1 43",
                                                  "RTE ep1 43", "RTE ep5 43"]


def test_a_pool_runs_each_child_in_a_free_share(tmp_path):
    pool: parallel.ProcessPool[str] = parallel.ProcessPool([{"SHARE": "a"}, {"SHARE": "b"}], poll_s=0.01)
    script = "import os, sys, time; time.sleep(float(sys.argv[1])); print(os.environ['SHARE'])"
    logs = {}
    for key, seconds in (("slow", "2"), ("quick", "0")):
        logs[key] = tmp_path / f"{key}.log"
        with open(logs[key], "w") as log:
            pool.start(key, [sys.executable, "-c", script, seconds], log, cwd=str(tmp_path))
    assert not pool.has_room()
    [(child, code)] = pool.wait_any()
    assert (child.key, code, logs["quick"].read_text()) == ("quick", 0, "b\n")
    with open(tmp_path / "third.log", "w") as log:  # the share the quick one had
        pool.start("third", [sys.executable, "-c", script, "60"], log, cwd=str(tmp_path))
    pool.signal_all(signal.SIGTERM)
    ended = {child.key: code for _ in range(2) for child, code in pool.wait_any()}
    assert ended == {"slow": -signal.SIGTERM, "third": -signal.SIGTERM} and pool.wait_any() == []
    assert sorted(pool.free, key=str) == [{"SHARE": "a"}, {"SHARE": "b"}]


two_cores = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or parallel.cpu_cores() < 2,
                               reason="two runs at once need two cores here")


def options(tiny_bert, glue_dir: Path, output: Path, **changes) -> list[str]:
    """Two RTE runs (seeds 42 and 43) with a checkpoint every 3 of their 120 steps (160 rows, batch 4)."""
    values = {"tasks": "RTE", "data_dir": glue_dir, "model": tiny_bert, "seeds": 2, "output_dir": output,
              "rte.epochs": 3, "rte.batch_size": 4, "checkpoint_steps": 3, **changes}
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def train_processes(run_folder: Path) -> list[int]:
    """The pids of the train.py processes writing ``run_folder`` (from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"train.py") for part in command) and str(run_folder).encode() in command:
            pids.append(int(entry.name))
    return pids


def on_two_cores(tiny_bert, glue_dir: Path, output: Path) -> dict:
    """subprocess arguments of benchmark.py --parallel 2 on two of this machine's cores: 1 thread a run."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    return {"args": [sys.executable, str(ROOT / "benchmark.py"), *options(tiny_bert, glue_dir, output, parallel=2)],
            "env": python_env(), "text": True, "preexec_fn": lambda: os.sched_setaffinity(0, cores)}


def start_two_runs(tiny_bert, glue_dir: Path, output: Path) -> tuple[subprocess.Popen, list[Path]]:
    """benchmark.py --parallel 2 (``on_two_cores``), once both runs train at once: each has written a checkpoint,
    and a finished run's checkpoints are gone."""
    process = subprocess.Popen(**on_two_cores(tiny_bert, glue_dir, output), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    runs = [output / "runs" / "RTE" / "lr5e-05-bs4-ep3-len128" / f"seed{seed}" for seed in (42, 43)]
    while not all(list((run / "checkpoints").glob("marlin_glue_*.pt")) for run in runs):  # not the partial ones
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    return process, runs


def resume_and_compare(argv, tiny_bert, glue_dir: Path, output: Path, runs: list[Path], tmp_path: Path) -> None:
    """The same command again resumes both runs, to the results of the two runs one after the other."""
    resumed = subprocess.run(**on_two_cores(tiny_bert, glue_dir, output), capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for run in runs:
        assert "Resuming epoch" in (run / "train.log").read_text()
        record = json.loads((run / "benchmark_run.json").read_text())
        assert (record["status"], record["attempts"]) == ("done", 2)
    argv(*options(tiny_bert, glue_dir, tmp_path / "one_at_a_time"))
    benchmark.main()
    for run in runs:
        alone = tmp_path / "one_at_a_time" / run.relative_to(output)
        assert json.loads((run / "results.json").read_text()) == json.loads((alone / "results.json").read_text())


@pytest.fixture
def glue_dir(tmp_path) -> Path:
    """RTE's first 160 train and 24 dev rows."""
    write_rte_subset(tmp_path / "glue_data" / "RTE", train_rows=160, dev_rows=24)
    return tmp_path / "glue_data"


@two_cores
@pytest.mark.slow
def test_ctrl_c_stops_both_runs_at_a_checkpoint_and_they_resume(argv, tiny_bert, glue_dir, tmp_path):
    output = tmp_path / "bench"
    process, runs = start_two_runs(tiny_bert, glue_dir, output)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert "RTE seed 42: training in" in stderr and ", 1 thread (log:" in stderr
    assert ("stopped by SIGINT during RTE seed 42, RTE seed 43; run the same command again to resume them from "
            "their checkpoints") in stderr
    for run in runs:
        assert "Stopped by SIGINT after step" in (run / "train.log").read_text()
        assert json.loads((run / "benchmark_run.json").read_text())["status"] == "running"
    resume_and_compare(argv, tiny_bert, glue_dir, output, runs, tmp_path)


@two_cores
@pytest.mark.slow
def test_a_run_that_dies_stops_the_other_at_a_checkpoint_and_both_resume(argv, tiny_bert, glue_dir, tmp_path):
    output = tmp_path / "bench"
    process, runs = start_two_runs(tiny_bert, glue_dir, output)
    [pid] = train_processes(runs[0])
    os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer would: no checkpoint of its own at the end
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    assert f"RTE seed 42 failed (exit {-signal.SIGKILL}); the end of {runs[0] / 'train.log'}:" in stderr
    assert "Run the same command again to resume the runs stopped." in stderr
    assert "Stopped by SIGTERM after step" in (runs[1] / "train.log").read_text()
    resume_and_compare(argv, tiny_bert, glue_dir, output, runs, tmp_path)


@two_cores
@pytest.mark.slow
def test_ctrl_c_while_the_next_runs_features_build_stops_at_once(argv, tiny_bert, glue_dir, tmp_path, monkeypatch):
    """A stop while features build for the next run (here a second length's, taking minutes as MNLI's would) ends
    the build at once, and the run training meanwhile at its checkpoint: it waited for the build to finish."""
    import data

    output = tmp_path / "bench"
    first = output / "runs" / "RTE" / "lr5e-05-bs4-ep3-len128" / "seed42"
    featurize = data.featurize

    def slow_second_length(interface_args, processor_args):
        if processor_args.max_seq_len == 128:
            return featurize(interface_args, processor_args)
        while not list((first / "checkpoints").glob("marlin_glue_*.pt")):  # the first run trains meanwhile
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(300)

    monkeypatch.setattr(data, "featurize", slow_second_length)
    argv(*options(tiny_bert, glue_dir, output, seeds=1, parallel=2, **{"rte.max_seq_len": "128,64"}))
    start = time.perf_counter()
    with pytest.raises(SystemExit, match=r"^benchmark.py: stopped by SIGINT before the next run started \(RTE "
                                         r"lr5e-05-bs4-ep3-len128 seed 42 stopped at a checkpoint\); run the same "
                                         r"command again to go on$"):
        benchmark.main()
    assert time.perf_counter() - start < 300
    assert "Stopped by SIGINT after step" in (first / "train.log").read_text()
    record = json.loads((first / "benchmark_run.json").read_text())
    assert record["status"] == "running" and record["wall_s"] > 0
    assert not (output / "runs" / "RTE" / "lr5e-05-bs4-ep3-len64").exists()
