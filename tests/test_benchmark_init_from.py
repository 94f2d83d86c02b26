"""benchmark.py's intermediate-task start: --rte.init_from MNLI runs MNLI first, then starts RTE's runs from the
model of MNLI's selected run (a new head: the labels differ), recorded in the runs' identity."""
from __future__ import annotations

import json
import shutil

import pytest

import benchmark
from conftest import FIXTURES, write_rte_subset
from glue_support import parallel as parallel_module


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


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
