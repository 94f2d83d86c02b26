"""End to end. data.py and train.py as a user runs them (subprocesses, default config) with the real embedded
MiniLM: a few steps on an RTE subset, and a short STS-B regression run that must learn and writes its leaderboard
file. The whole GLUE benchmark as CI runs it, on a tiny random BERT: the nine tasks and AX from the fixtures in the
official layout, a grid of two learning rates on RTE, the best checkpoint kept, RTE started from MNLI, and a
leaderboard zip that check_submission accepts."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

import benchmark
import data
from conftest import FIXTURES, ROOT, python_env, write_rte_subset
from glue_processors import TASKS
from glue_support import embedded_model, submission

pytestmark = pytest.mark.slow


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=python_env(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_rte_from_tsv_to_results_and_a_saved_model(tmp_path):
    raw = write_rte_subset(tmp_path / "RTE", train_rows=64, dev_rows=32)
    for set_type in ("train", "dev"):
        run(ROOT / "data.py", "--dmod.input_dir", raw, "--dmod.output_dir", f"processed_data/{set_type}",
            "--dproc.task", "RTE", "--dproc.set_type", set_type, cwd=tmp_path)
    result = run(ROOT / "train.py", "--tmod.task", "RTE", "--tmod.trainpath", "processed_data/train",
                 "--tmod.valpath", "processed_data/dev", "--tmod.output_dir", "training_output",
                 "--trainer.epochs", "1", "--trainer.max_train_steps_per_epoch", "3", "--trainer.disable_tqdm", "true",
                 cwd=tmp_path)

    output = tmp_path / "training_output"
    results = json.loads((output / "results.json").read_text())
    assert results["task"] == "RTE" and results["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    dev = results["dev.tsv"]
    assert dev["examples"] == 32 and dev["step"] == 3 and dev["epoch"] == 1
    assert f"RTE dev.tsv (32 examples, epoch 1): accuracy = {dev['accuracy']:.4f}" in result.stdout

    model = AutoModelForSequenceClassification.from_pretrained(output).eval()
    # the saved model, scored independently of train.py, has the accuracy results.json reports
    batch = data.TaskDataset.collate(list(data.TaskDataset(str(tmp_path / "processed_data/dev/dev.tsv"))))
    with torch.no_grad():
        predictions = model(**{key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert dev["accuracy"] == (predictions.argmax(-1) == batch["labels"]).float().mean().item()
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384  # the embedded MiniLM
    with torch.no_grad():
        logits = model(**tokenizer("A man is sleeping.", "Someone sleeps.", return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    base = AutoModel.from_pretrained(embedded_model.resolve(embedded_model.DEFAULT_MODEL))
    tuned, original = model.bert.encoder.layer[5].output.dense.weight, base.encoder.layer[5].output.dense.weight
    assert tuned.shape == original.shape and not torch.equal(tuned, original)  # three steps changed the weights


def test_stsb_regression_learns_and_writes_its_submission(tmp_path):
    """479 training pairs spread over STS-B train, 3 epochs: the dev correlation is clearly positive (0.34 when
    measured; an untrained head is near 0), and the test predictions are scores in 0-5, one per test row."""
    for set_type in ("train", "dev", "test"):
        run(ROOT / "data.py", "--dmod.input_dir", FIXTURES / "STS-B", "--dmod.output_dir", f"features/{set_type}",
            "--dproc.task", "STS-B", "--dproc.set_type", set_type, cwd=tmp_path)
    result = run(ROOT / "train.py", "--tmod.trainpath", "features/train", "--tmod.valpath", "features/dev",
                 "--tmod.predictpath", "features/test", "--tmod.output_dir", "out", "--trainer.epochs", "3",
                 "--trainer.disable_tqdm", "true", cwd=tmp_path)
    dev = json.loads((tmp_path / "out" / "results.json").read_text())["dev.tsv"]
    assert dev["examples"] == 200 and dev["pearson"] > 0.2 and dev["spearmanr"] > 0.2
    assert "Submission files (STS-B.tsv)" in result.stdout
    lines = (tmp_path / "out" / "submission" / "STS-B.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == list("012345")
    assert all(0.0 <= float(line.split("\t")[1]) <= 5.0 for line in lines[1:])


@pytest.fixture
def one_thread(monkeypatch):
    """train.py processes on the tiny BERT: one thread each is fastest (the MiniLM runs above keep the machine's)."""
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


@pytest.mark.usefixtures("one_thread")
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
