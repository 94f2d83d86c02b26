"""benchmark.py --predict true on a tiny random BERT: the selected run of each task predicts its test sets (MNLI's
model also AX), WNLI from its majority class, the files gathered into submission/, the zip refused while tasks are
missing, unselected models removed, and a second run reusing the predictions."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

import benchmark
import data
from conftest import FIXTURES, write_rte_subset
from glue_support import submission


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
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
