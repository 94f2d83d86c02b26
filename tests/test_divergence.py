"""A diverged run is a failure, not a score: a training loss (or weights) that is not finite stops train.py at that
step with one line and exit 1; results.json says where, in strict JSON, with no validation; no model is saved; under
DDP every process stops together. And no JSON the project writes holds a NaN. 48 RTE training examples, batch 8: 6
optimizer steps an epoch."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT, featurize, featurize_splits, python_env, write_rte_subset
from glue_support.atomic_write import write_json
from glue_support.exit_codes import run_main

DIVERGED = ("script: training diverged at step {step} ({found}): the model is not saved; try a lower --tmod.max_lr "
            "(now {lr}) or a longer --tmod.warmup_prop (now 0.1)")


@pytest.fixture
def features(tiny_bert, rte_subset, tmp_path):
    return featurize_splits(rte_subset, tmp_path / "features", tiny_bert)


def strict_json(path) -> dict:
    """A JSON file read as any JSON reader but Python's would: ``NaN`` and ``Infinity`` are not JSON."""
    def refuse(constant):
        raise AssertionError(f"{path}: {constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def train_until_refused(argv, capsys, tiny_bert, features, output, *extra, max_lr="1.0e-3") -> str:
    """train.py as a command, in-process (``run_main``), on the RTE features, with ``extra``: asserted to exit 1;
    its last line on stderr."""
    argv("--model.hf_model", tiny_bert, "--tmod.trainpath", features["train"], "--tmod.valpath", features["dev"],
         "--tmod.output_dir", output, "--trainer.epochs", 2, "--trainer.train_batch_size", 8,
         "--trainer.disable_tqdm", "true", "--tmod.max_lr", max_lr, *extra)
    with pytest.raises(SystemExit) as exit:
        run_main(train.main)
    assert exit.value.code == 1
    return capsys.readouterr().err.splitlines()[-1]


def loss_at(monkeypatch, step: int, value: float) -> list[int]:
    """Training's loss becomes ``value`` at optimizer step ``step`` (each step is one batch here); the steps
    trained, as they are."""
    train_step, trained = train.Recipe.train_step, []

    def poisoned(self, global_step, batch, device):
        trained.append(global_step)
        loss = train_step(self, global_step, batch, device)
        return loss * value if global_step == step else loss
    monkeypatch.setattr(train.Recipe, "train_step", poisoned)
    return trained


def assert_failed_run(output, step: int, epoch: int, loss: str) -> None:
    """``output`` holds a diverged run: results.json says where, with no validation and no best, and no model."""
    results = strict_json(output / "results.json")
    assert list(results) == ["task", "model", "diverged", "data", "versions"]
    assert results["diverged"] == {"step": step, "epoch": epoch, "loss": loss}
    assert not any((output / name).exists() for name in ("model.safetensors", "config.json", "tokenizer.json"))


@pytest.mark.parametrize("value, shown", [(math.nan, "nan"), (math.inf, "inf")])
def test_a_loss_that_is_not_finite_stops_the_run_at_its_step_with_one_line_and_no_model(
        argv, capsys, monkeypatch, tiny_bert, features, tmp_path, value, shown):
    """Step 8, in the second epoch, after the best validation at step 6 (keep_best: its weights are in memory):
    neither that model nor that validation is reported."""
    trained = loss_at(monkeypatch, 8, value)
    output = tmp_path / "out"
    line = train_until_refused(argv, capsys, tiny_bert, features, output, "--tmod.keep_best", "true",
                               "--ckpt.period_steps", 4)
    assert line == DIVERGED.format(step=8, found=f"loss {shown}", lr=0.001)
    assert max(trained) == 8  # stopped at once
    assert_failed_run(output, step=8, epoch=2, loss=shown)
    # history.json still holds what was validated before, all of it finite
    assert [point["step"] for point in strict_json(output / "history.json")["dev.tsv"]] == [6]
    # the checkpoints are of steps before the divergence
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["marlin_glue_step00000004.pt"]


def test_a_learning_rate_that_sends_the_loss_to_nan_fails_the_run(argv, capsys, tiny_bert, features, tmp_path):
    """No monkeypatch: a learning rate of 10^6 diverges within the first epoch; the validation before it is not
    reported either."""
    output = tmp_path / "out"
    line = train_until_refused(argv, capsys, tiny_bert, features, output, "--tmod.eval_steps", 2, max_lr="1.0e6")
    step = strict_json(output / "results.json")["diverged"]["step"]
    assert 2 < step <= 12 and line == DIVERGED.format(step=step, found="loss nan", lr=1000000.0)
    assert_failed_run(output, step=step, epoch=1 if step <= 6 else 2, loss="nan")


def test_weights_that_are_not_finite_are_found_before_a_validation_scores_them(argv, capsys, monkeypatch, tiny_bert,
                                                                             features, tmp_path):
    """Step 4's update leaves a weight NaN while its loss was finite; the validation due at step 4 does not run."""
    on_end_train_step = train.Recipe.on_end_train_step

    def poisoned(self, global_step, *outputs):
        on_end_train_step(self, global_step, *outputs)
        if global_step == 4:
            with torch.no_grad():
                self.model.classifier.weight[0, 0] = math.nan
    monkeypatch.setattr(train.Recipe, "on_end_train_step", poisoned)
    output = tmp_path / "out"
    line = train_until_refused(argv, capsys, tiny_bert, features, output, "--tmod.eval_steps", 2)
    assert line == DIVERGED.format(step=4, found="its weights are not finite after it", lr=0.001)
    results = strict_json(output / "results.json")
    assert results["diverged"]["step"] == 4 and math.isfinite(float(results["diverged"]["loss"]))
    assert [point["step"] for point in strict_json(output / "history.json")["dev.tsv"]] == [2]
    assert not (output / "model.safetensors").exists()


def test_weights_that_are_not_finite_are_never_checkpointed(argv, capsys, monkeypatch, tiny_bert, features, tmp_path):
    on_end_train_step = train.Recipe.on_end_train_step

    def poisoned(self, global_step, *outputs):
        on_end_train_step(self, global_step, *outputs)
        if global_step == 3:
            with torch.no_grad():
                self.model.classifier.bias[0] = math.inf
    monkeypatch.setattr(train.Recipe, "on_end_train_step", poisoned)
    output = tmp_path / "out"
    line = train_until_refused(argv, capsys, tiny_bert, features, output, "--ckpt.period_steps", 3)
    assert line == DIVERGED.format(step=3, found="its weights are not finite after it", lr=0.001)
    assert not (output / "checkpoints").exists()


def test_json_with_a_nan_or_an_infinity_is_refused_naming_the_file_and_the_key(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match=r"results.json: dev.tsv > loss is nan, which JSON cannot hold: not "
                                         r"written$"):
        write_json(str(path), {"task": "RTE", "dev.tsv": {"accuracy": 0.5, "loss": math.nan}})
    with pytest.raises(ValueError, match=r"results.json: train > 1 > loss is -inf"):
        write_json(str(path), {"train": [{"loss": 0.5}, {"loss": -math.inf}]})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    write_json(str(path), {"loss": 0.5})
    assert strict_json(path) == {"loss": 0.5}


WRAPPER = """
import math, sys
sys.path.insert(0, sys.argv.pop(1))
import torch.distributed
import train
from glue_support.exit_codes import run_main

train_step = train.Recipe.train_step

def poisoned(self, global_step, batch, device):
    loss = train_step(self, global_step, batch, device)
    return loss * math.nan if global_step == 3 and torch.distributed.get_rank() == 1 else loss

train.Recipe.train_step = poisoned
run_main(train.main)
"""


@pytest.mark.slow
def test_under_ddp_a_loss_that_is_not_finite_on_one_process_stops_them_all(tiny_bert, tmp_path):
    """The loss of step 3 is NaN on the second process only: both stop at step 3 (neither waits for the other: a
    hang would run into the timeout), and the first writes where."""
    raw = write_rte_subset(tmp_path / "RTE", train_rows=40, dev_rows=8)
    folders = {set_type: featurize(raw, tmp_path / set_type, tiny_bert, "RTE", set_type).parent
               for set_type in ("train", "dev")}
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               tmp_path / "wrapper.py", ROOT, "--model.hf_model", tiny_bert, "--tmod.trainpath", folders["train"],
               "--tmod.valpath", folders["dev"], "--tmod.output_dir", output, "--trainer.epochs", 2,
               "--trainer.train_batch_size", 8, "--trainer.disable_tqdm", "true"]
    result = subprocess.run(list(map(str, command)), cwd=tmp_path, env=python_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "training diverged at step 3 (loss nan)" in result.stderr, result.stderr
    assert_failed_run(output, step=3, epoch=1, loss="nan")  # the first process found the second's loss
