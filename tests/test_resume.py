"""Checkpoints and resuming train.py: a run stopped (by SIGTERM, Ctrl-C, or between checkpoints) and resumed ends
as the uninterrupted run does, mid-epoch, under a step cap, across a gradient accumulation, inside the second
training file, and with the best validation and early stopping's count; checkpoints of another task, of an earlier
train.py or that are no checkpoints are refused in one line. The benchmark's own stop and resume is
tests/test_benchmark.py's and tests/test_parallel.py's."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import pytest
import torch

import train
from conftest import (
    FIXTURES,
    featurize,
    featurize_splits,
    read_json,
    run_command,
    run_train,
    scored_by_step,
    validated_steps,
    write_rte_subset,
)
from glue_support.checkpoints import StepCheckpointer
from glue_support.marlin import DefaultCheckpointerArguments


def test_a_resumed_run_ends_with_the_metrics_of_an_uninterrupted_one(argv, tiny_bert, features, tmp_path, caplog):
    """6 optimizer steps an epoch; checkpoints every 4 steps and every epoch. Resuming from step 4 (mid-epoch) or
    step 6 (an epoch boundary) replays the same data order and dropout: identical final metrics."""
    with caplog.at_level(logging.INFO):
        full = run_train(argv, tiny_bert, features, tmp_path / "full", "--ckpt.checkpoint", "true",
                         "--ckpt.period_steps", 4, "--stats.log_steps", 3).results["dev.tsv"]
    names = sorted(path.name for path in (tmp_path / "full" / "checkpoints").iterdir())
    assert names == [f"marlin_glue_step{step:08d}.pt" for step in (4, 6, 8, 12)]
    # step 12: the period's checkpoint, then the epoch's (after its validation, another state); pymarlin's
    # end-of-training call right after that does not write the same state a third time
    assert [int(line.split("at step ")[1].split(" ")[0]) for line in caplog.messages
            if line.startswith("Saved a resumable checkpoint")] == [4, 6, 8, 12, 12]
    for step in (4, 6):
        resumed = run_train(argv, tiny_bert, features, tmp_path / f"from{step}", "--ckpt.load_dir",
                            tmp_path / "full" / "checkpoints", "--ckpt.load_filename",
                            f"marlin_glue_step{step:08d}.pt", "--stats.log_steps", 3).results["dev.tsv"]
        assert resumed == full
        curves = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("full", f"from{step}")]
        assert curves[1] == curves[0]  # the curves from before the checkpoint are kept


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_mid_epoch_saves_a_checkpoint_exits_non_zero_and_resume_matches(
        argv, tiny_bert, features, tmp_path, monkeypatch, stop):
    full = run_train(argv, tiny_bert, features, tmp_path / "full").results["dev.tsv"]
    train_step = train.Recipe.train_step

    sent = []

    def terminated_at_step_9(self, global_step, batch, device):
        if global_step == 9 and not sent:
            sent.append(stop)
            os.kill(os.getpid(), stop)  # as a scheduler's preemption, or Ctrl-C, would
        return train_step(self, global_step, batch, device)

    monkeypatch.setattr(train.Recipe, "train_step", terminated_at_step_9)
    output = tmp_path / "run"
    stopped = rf"Stopped by {stop.name} after step 9; resume with --ckpt.resume true"
    with pytest.raises(SystemExit, match=stopped) as exit:
        run_train(argv, tiny_bert, features, output)
    assert exit.value.code != 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert [path.name for path in (output / "checkpoints").iterdir()] == ["marlin_glue_step00000009.pt"]
    logs_before = sorted((output / "logs").iterdir())

    monkeypatch.setattr(train.Recipe, "train_step", train_step)
    resumed = run_train(argv, tiny_bert, features, output, "--ckpt.resume", "true").results["dev.tsv"]
    assert resumed == full
    assert set(logs_before) < set((output / "logs").iterdir())  # the first run's logs are still there


def test_resume_mid_epoch_under_a_step_cap_and_across_an_accumulation_matches(argv, tiny_bert, features, tmp_path):
    """A step cap counts the steps the epoch took before the checkpoint; an epoch that ends inside a gradient
    accumulation (48 examples, micro-batch 8, 4 per step: 6 micro-batches an epoch) is not checkpointed there."""
    capped = ("--trainer.max_train_steps_per_epoch", 4, "--ckpt.period_steps", 2)
    full = run_train(argv, tiny_bert, features, tmp_path / "capped", *capped).results["dev.tsv"]
    resumed = run_train(argv, tiny_bert, features, tmp_path / "capped-resumed", *capped, "--ckpt.load_dir",
                        tmp_path / "capped" / "checkpoints", "--ckpt.load_filename", "marlin_glue_step00000002.pt")
    assert resumed.results["dev.tsv"] == full and full["step"] == 8

    accumulated = ("--trainer.gpu_batch_size_limit", 8, "--ckpt.checkpoint", "true", "--ckpt.period_steps", 1)
    full = run_train(argv, tiny_bert, features, tmp_path / "ga", *accumulated, batch_size=32).results["dev.tsv"]
    names = sorted(path.name for path in (tmp_path / "ga" / "checkpoints").iterdir())
    assert names == ["marlin_glue_step00000001.pt", "marlin_glue_step00000002.pt", "marlin_glue_step00000003.pt"]
    resumed = run_train(argv, tiny_bert, features, tmp_path / "ga-resumed", *accumulated, "--ckpt.load_dir",
                        tmp_path / "ga" / "checkpoints", "--ckpt.load_filename", "marlin_glue_step00000001.pt",
                        batch_size=32).results["dev.tsv"]
    assert resumed == full


def test_resume_inside_the_second_training_file_matches(argv, tiny_bert, tmp_path):
    """Training data in two feature files (24 + 24 examples, 3 steps each): resuming at step 4, inside the second
    file, orders that file as the uninterrupted run did."""
    raw = {}
    for part, rows in (("a", range(1, 25)), ("b", range(25, 49))):
        lines = (FIXTURES.parent.parent / "RTE" / "train.tsv").read_text(encoding="utf-8").split("\n")
        raw[part] = tmp_path / f"raw-{part}"
        raw[part].mkdir()
        (raw[part] / "train.tsv").write_text("\n".join([lines[0], *(lines[i] for i in rows)]) + "\n", encoding="utf-8")
    train_files = tmp_path / "train"
    for part in ("a", "b"):
        path = featurize(raw[part], tmp_path / f"features-{part}", tiny_bert, "RTE", "train")
        train_files.mkdir(exist_ok=True)
        path.rename(train_files / f"{part}.tsv")
    folders = {"train": train_files, "dev": featurize_splits(write_rte_subset(tmp_path / "RTE", 8, 16),
                                                            tmp_path / "dev", tiny_bert, ("dev",))["dev"]}
    full = run_train(argv, tiny_bert, folders, tmp_path / "full", "--ckpt.period_steps", 4).results["dev.tsv"]
    resumed = run_train(argv, tiny_bert, folders, tmp_path / "resumed", "--ckpt.load_dir", tmp_path / "full" /
                        "checkpoints", "--ckpt.load_filename", "marlin_glue_step00000004.pt").results["dev.tsv"]
    assert resumed == full and full["step"] == 12


@pytest.mark.parametrize("stop_step", [9, 8, 6])
def test_a_run_stopped_by_sigterm_and_resumed_ends_byte_identical(argv, tiny_bert, features, tmp_path, monkeypatch,
                                                                  stop_step):
    """keep_best, eval_steps 2 and patience 3, the best at step 4: the run stops early at step 10. SIGTERM during
    step 9 (between validations), 8 (a validation step: it validates, then checkpoints) or 6 (also the epoch's end,
    which the resumed run does not validate again); the resumed run ends with the same bytes: the best validation,
    its model and the patience count came back with the checkpoint."""
    scored_by_step(monkeypatch, {2: 0.5, 4: 0.9, 6: 0.6, 8: 0.7, 10: 0.8, 12: 0.95})
    options = ("--tmod.eval_steps", 2, "--tmod.keep_best", "true", "--tmod.early_stopping_patience", 3,
               "--stats.log_steps", 3)
    run_train(argv, tiny_bert, features, tmp_path / "full", *options, epochs=3)
    assert [step for _, step in validated_steps(tmp_path / "full")] == [2, 4, 6, 8, 10]
    assert read_json(tmp_path / "full", "results.json")["best"]["step"] == 4

    train_step = train.Recipe.train_step
    sent = []

    def terminated(self, global_step, batch, device):
        if global_step == stop_step and not sent:
            sent.append(signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return train_step(self, global_step, batch, device)

    monkeypatch.setattr(train.Recipe, "train_step", terminated)
    output = tmp_path / "run"
    with pytest.raises(SystemExit, match=f"Stopped by SIGTERM after step {stop_step}"):
        run_train(argv, tiny_bert, features, output, *options, epochs=3)
    monkeypatch.setattr(train.Recipe, "train_step", train_step)
    run_train(argv, tiny_bert, features, output, *options, "--ckpt.resume", "true", epochs=3)
    for name in ("results.json", "history.json", "model.safetensors"):
        assert (output / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_resume_with_nothing_to_resume_starts_fresh_and_a_damaged_checkpoint_is_named(argv, tiny_bert, features,
                                                                                      tmp_path):
    fresh = run_train(argv, tiny_bert, features, tmp_path / "a", "--ckpt.resume", "true", epochs=1)
    assert fresh.results["dev.tsv"]["step"] == 6
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "marlin_glue_step00000003.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="marlin_glue_step00000003.pt: not a loadable marlin-glue checkpoint"):
        run_train(argv, tiny_bert, features, tmp_path / "b", "--ckpt.load_dir", tmp_path / "bad", epochs=1)


def test_resuming_from_a_checkpoint_of_another_task_is_refused_in_one_line(monkeypatch, capsys, tiny_bert, rte_subset,
                                                                             tmp_path):
    rte = {set_type: featurize(rte_subset, tmp_path / "rte" / set_type, tiny_bert, "RTE", set_type).parent
           for set_type in ("train", "dev")}
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, (
        "--model.hf_model", tiny_bert, "--tmod.trainpath", rte["train"], "--tmod.valpath", rte["dev"],
        "--tmod.output_dir", tmp_path / "rte-run", "--trainer.epochs", 1, "--ckpt.checkpoint", "true"))])
    train.main()
    [checkpoint] = (tmp_path / "rte-run" / "checkpoints").iterdir()
    # WNLI has two labels too: the same shapes as RTE's head, told apart by the task the checkpoint records
    for task in ("MNLI", "WNLI"):
        other = featurize(FIXTURES / task, tmp_path / task.lower(), tiny_bert, task, "train").parent
        code, _, stderr = run_command(monkeypatch, capsys, "train.py", "--model.hf_model", tiny_bert,
                                      "--tmod.trainpath", other, "--tmod.output_dir", tmp_path / f"{task.lower()}-run",
                                      "--ckpt.load_dir", checkpoint.parent, "--trainer.disable_tqdm", "true")
        assert code == 1 and stderr.splitlines()[-1].startswith(
            f"train.py: {checkpoint}: a checkpoint of another run (--tmod.task RTE -> {task}; ")


def test_a_pytorch_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path):
    torch.save({"classifier.weight": torch.zeros(2, 4)}, tmp_path / "marlin_glue_step00000001.pt")
    checkpointer = StepCheckpointer(DefaultCheckpointerArguments(load_dir=str(tmp_path), file_prefix="marlin_glue"),
                                    identity={})
    with pytest.raises(ValueError, match=r"marlin_glue_step00000001.pt: a PyTorch file, but not a marlin-glue "
                                         r"checkpoint \(no training state: a model's weights\?\)"):
        checkpointer.load()
