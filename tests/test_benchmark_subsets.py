"""benchmark.py's quick checks: --tasks all, and runs on the first N training and dev examples, recorded as such."""
from __future__ import annotations

import json

import pytest

import benchmark
import data
from conftest import bench_arguments, write_rte_subset
from glue_support import benchmark_plan, provenance


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
