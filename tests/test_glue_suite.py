"""The whole GLUE benchmark as CI runs it, on a tiny random BERT: the nine tasks and AX from the fixtures in the
official layout, a grid of two learning rates on RTE, the best checkpoint kept, RTE started from MNLI, and a
leaderboard zip that check_submission accepts."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

import benchmark
from conftest import FIXTURES
from glue_processors import TASKS
from glue_support import submission

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")



def glue_data(folder: Path) -> Path:
    """A data_dir as download_glue.py lays it out, from the fixtures: one folder per task, the diagnostic set in
    diagnostic/. QQP's train.tsv loses its short row (line 6), which data.py refuses without dproc.skip_malformed."""
    for spec in TASKS.values():
        if spec.labeled:
            shutil.copytree(FIXTURES / spec.name, folder / spec.name)
    lines = (folder / "QQP" / "train.tsv").read_text(encoding="utf-8").split("\n")
    (folder / "QQP" / "train.tsv").write_text("\n".join(lines[:5] + lines[6:]), encoding="utf-8")
    (folder / "diagnostic").mkdir()
    shutil.copy(FIXTURES / "AX" / "diagnostic.tsv", folder / "diagnostic")
    return folder


def test_the_whole_suite_makes_a_submission_the_leaderboard_takes(argv, tiny_bert, tmp_path, fixture_counts):
    output = tmp_path / "bench"
    quick = [part for spec in TASKS.values() if spec.labeled
             for part in (f"--{spec.hf_name}.epochs", 1, f"--{spec.hf_name}.max_seq_len", 32,
                          f"--{spec.hf_name}.batch_size", 16, f"--{spec.hf_name}.seeds", 0)]
    argv("--tasks", "all", "--data_dir", glue_data(tmp_path / "glue_data"), "--model", tiny_bert, "--seeds", 1,
         "--output_dir", output, "--checkpoint_steps", 0, *quick,
         "--rte.max_lr", "5.0e-5,1.0e-4", "--rte.init_from", "MNLI", "--predict", "true")
    benchmark.main()

    summary = json.loads((output / "results.json").read_text())
    assert list(summary["tasks"]) == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"]
    assert [cell["name"] for cell in summary["tasks"]["RTE"]["cells"]] == [
        "lr5e-05-bs16-ep1-len32-fromMNLI", "lr0.0001-bs16-ep1-len32-fromMNLI"]
    assert all(entry["best_checkpoint"] for entry in summary["tasks"].values())
    assert submission.check_submission(str(output / "glue_submission.zip")) == []
    with zipfile.ZipFile(output / "glue_submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted(submission.leaderboard_files())
