"""benchmark.py's quick checks: --tasks all, and runs on the first N training and dev examples, recorded as such;
planning them writes nothing."""
from __future__ import annotations

import json

import pytest

import benchmark
import data
from conftest import bench_arguments, write_rte_subset
from glue_support import benchmark_plan, provenance
from glue_support.command_line import parse_config


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


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
