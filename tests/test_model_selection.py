"""The best validation and early stopping: ``glue_support.model_selection.BestValidation`` on its own (given
validations and a score, which one is best, which weights are kept, when patience is spent, what a checkpoint brings
back), then in train.py: validation every ``tmod.eval_steps`` optimizer steps and after each epoch, the best
validation by the task's GLUE score in results.json, its model saved and predicting with ``tmod.keep_best``, early
stopping after ``tmod.early_stopping_patience`` validations without improvement, alike in every process under DDP.
In train.py: 48 RTE training examples, batch 8: 6 optimizer steps an epoch. Resuming: tests/test_resume.py."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import data
import glue_metrics
import train
from conftest import (
    FIXTURES,
    featurize,
    featurize_splits,
    read_json,
    read_submission,
    run_train,
    scored_by_step,
    torchrun,
    validated_steps,
    write_rte_subset,
)
from glue_support.model_selection import BestValidation


def by_accuracy(results: dict) -> float:
    return results["dev.tsv"]["accuracy"]


def validation(accuracy: float) -> dict:
    return {"dev.tsv": {"accuracy": accuracy, "loss": 1 - accuracy}}


class Weights:
    """A model's ``state_dict`` as the Recipe hands it over: counts the calls, returns tensors it goes on changing."""

    def __init__(self) -> None:
        self.tensor = torch.zeros(2)
        self.calls = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"w": self.tensor}


def test_a_higher_score_replaces_the_best_and_a_tie_does_not():
    best = BestValidation(by_accuracy, keep_weights=False, patience=None)
    for step, accuracy in ((2, 0.5), (4, 0.7), (6, 0.7), (8, 0.6)):
        assert best.record(validation(accuracy), epoch=step // 4 + 1, step=step, weights=Weights()) == accuracy
    assert best.result == {"score": 0.7, "epoch": 2, "step": 4, **validation(0.7)}
    assert best.since_best == 2


def test_the_weights_are_a_copy_taken_only_with_keep_weights():
    weights = Weights()
    kept = BestValidation(by_accuracy, keep_weights=True, patience=None)
    kept.record(validation(0.5), 1, 2, weights)
    weights.tensor += 1  # training goes on
    kept.record(validation(0.4), 1, 4, weights)  # not better: not copied
    assert torch.equal(kept.weights["w"], torch.zeros(2)) and weights.calls == 1
    kept.record(validation(0.9), 1, 6, weights)
    assert torch.equal(kept.weights["w"], torch.ones(2)) and kept.weights["w"] is not weights.tensor

    weights = Weights()
    reported = BestValidation(by_accuracy, keep_weights=False, patience=None)
    reported.record(validation(0.5), 1, 2, weights)
    assert reported.weights is None and weights.calls == 0


def test_patience_counts_validations_without_improvement_since_the_best():
    best = BestValidation(by_accuracy, keep_weights=False, patience=2)
    spent = []
    for accuracy in (0.5, 0.4, 0.6, 0.6, 0.5):
        best.record(validation(accuracy), 1, 0, Weights())
        spent.append(best.patience_spent())
    assert spent == [False, False, False, False, True]
    never = BestValidation(by_accuracy, keep_weights=False, patience=None)
    for _ in range(5):
        never.record(validation(0.5), 1, 0, Weights())
    assert never.since_best == 4 and not never.patience_spent()


def test_its_state_brings_back_the_best_its_weights_and_the_count():
    weights = Weights()
    before = BestValidation(by_accuracy, keep_weights=True, patience=3)
    for accuracy in (0.6, 0.5, 0.4):
        before.record(validation(accuracy), 1, 0, weights)
    after = BestValidation(by_accuracy, keep_weights=True, patience=3)
    after.restore(before.state())
    assert (after.result, after.since_best) == (before.result, 2) and torch.equal(after.weights["w"], torch.zeros(2))
    after.record(validation(0.3), 2, 8, weights)
    assert after.patience_spent()


@pytest.fixture
def features(tiny_bert, rte_subset, tmp_path):
    folders = featurize_splits(rte_subset, tmp_path / "features", tiny_bert)
    folders["test"] = featurize(FIXTURES / "RTE", tmp_path / "features" / "test", tiny_bert, "RTE", "test").parent
    return folders


def test_eval_steps_validates_every_n_steps_and_each_epoch_end_once(argv, tiny_bert, features, tmp_path,
                                                                    monkeypatch):
    """eval_steps 4 over 2 epochs of 6 steps: steps 4 and 8, and the epochs' ends 6 and 12 (12 once). Training
    after a mid-epoch validation is in train mode again."""
    modes = []
    train_step = train.Recipe.train_step

    def recording_step(self, global_step, batch, device):
        modes.append(self.model.training)
        return train_step(self, global_step, batch, device)

    monkeypatch.setattr(train.Recipe, "train_step", recording_step)
    output = tmp_path / "out"
    run_train(argv, tiny_bert, features, output, "--tmod.eval_steps", 4)
    assert validated_steps(output) == [(1, 4), (1, 6), (2, 8), (2, 12)]
    assert len(modes) == 12 and all(modes)

    results, history = read_json(output, "results.json"), read_json(output, "history.json")["dev.tsv"]
    assert results["dev.tsv"] == history[-1]  # the last validation
    best = results["best"]
    accuracies = [point["accuracy"] for point in history]
    first_best = history[accuracies.index(max(accuracies))]
    assert set(best) == {"score", "epoch", "step", "dev.tsv"}
    assert (best["score"], best["epoch"], best["step"], best["dev.tsv"]) == (
        max(accuracies), first_best["epoch"], first_best["step"], first_best)
    assert best["score"] == glue_metrics.glue_score("RTE", best)


def test_keep_best_saves_and_predicts_with_the_model_of_the_best_validation(argv, tiny_bert, features, tmp_path,
                                                                           monkeypatch):
    scored_by_step(monkeypatch, {step: 1 - step / 100 for step in range(2, 13, 2)})  # the first is the best
    output = tmp_path / "out"
    module = run_train(argv, tiny_bert, features, output, "--tmod.eval_steps", 2, "--tmod.keep_best", "true",
                       "--tmod.predictpath", features["test"])
    results = read_json(output, "results.json")
    assert (results["best"]["step"], results["best"]["epoch"], results["dev.tsv"]["step"]) == (2, 1, 12)

    # the saved model scores what the best validation scored, not what the last one did
    argv("--model.hf_model", output, "--tmod.valpath", features["dev"], "--tmod.output_dir", tmp_path / "val",
         "--trainer.disable_tqdm", "true")
    validated = train.main().results["dev.tsv"]
    assert validated["accuracy"] == results["best"]["dev.tsv"]["accuracy"]
    assert validated["loss"] == pytest.approx(results["best"]["dev.tsv"]["loss"], rel=1e-5)
    assert validated["loss"] != pytest.approx(results["dev.tsv"]["loss"], rel=1e-5)

    # and it wrote the predictions
    saved = AutoModelForSequenceClassification.from_pretrained(output).eval()
    for name, parameter in module.model.state_dict().items():
        assert torch.equal(parameter, saved.state_dict()[name]), name
    batch = data.TaskDataset.collate(list(data.TaskDataset(str(features["test"] / "test.tsv"))))
    with torch.no_grad():
        logits = saved(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    expected = [(str(i), module.spec.labels[p]) for i, p in zip(batch["index"].tolist(), logits.argmax(-1).tolist())]
    assert read_submission(output / "submission" / "RTE.tsv") == expected


def test_without_keep_best_the_last_model_is_saved_and_the_best_reported(argv, tiny_bert, features, tmp_path,
                                                                        monkeypatch):
    scored_by_step(monkeypatch, {6: 0.9, 12: 0.1})
    output = tmp_path / "out"
    module = run_train(argv, tiny_bert, features, output)
    assert read_json(output, "results.json")["best"]["step"] == 6 and module.best.weights is None
    saved = AutoModelForSequenceClassification.from_pretrained(output)
    assert torch.equal(saved.classifier.weight, module.model.classifier.weight)  # the last model, as trained


@pytest.mark.parametrize("options, patience, steps", [
    (("--tmod.eval_steps", 2), 2, [(1, 2), (1, 4), (1, 6)]),  # best at 2, then 4 and 6 not better: stop at 6
    ((), 1, [(1, 6), (2, 12)]),  # after each epoch only: the best at 6, not bettered at 12, so no third epoch
])
def test_early_stopping_ends_training_after_n_validations_without_improvement(argv, tiny_bert, features, tmp_path,
                                                                             monkeypatch, options, patience, steps):
    """A constant score: no validation after the first is better (a tie is not). Training stops cleanly: the model
    saved (the best, with keep_best), results written, predictions made; resuming the stopped run's final
    checkpoint trains no further."""
    scored_by_step(monkeypatch, {step: 0.5 for step in range(1, 19)})
    trained = []
    train_step = train.Recipe.train_step

    def recording_step(self, global_step, batch, device):
        trained.append(global_step)
        return train_step(self, global_step, batch, device)

    monkeypatch.setattr(train.Recipe, "train_step", recording_step)
    output = tmp_path / "out"
    stopping = (*options, "--tmod.early_stopping_patience", patience, "--tmod.keep_best", "true",
                "--tmod.predictpath", features["test"], "--ckpt.checkpoint", "true")
    module = run_train(argv, tiny_bert, features, output, *stopping, epochs=3)
    last = steps[-1][1]
    assert validated_steps(output) == steps and max(trained) == last
    results = read_json(output, "results.json")
    assert (results["best"]["step"], results["dev.tsv"]["step"]) == (steps[0][1], last)
    assert module.best.since_best == patience
    assert (output / "model.safetensors").is_file() and (output / "submission" / "RTE.tsv").is_file()
    best_model = AutoModelForSequenceClassification.from_pretrained(output)
    for name, parameter in best_model.state_dict().items():
        assert torch.equal(parameter, module.best.weights[name]), name

    trained.clear()
    before = {name: (output / name).read_bytes() for name in ("results.json", "history.json", "model.safetensors")}
    run_train(argv, tiny_bert, features, output, *stopping, "--ckpt.resume", "true", epochs=3)
    assert trained == []
    assert {name: (output / name).read_bytes() for name in before} == before


def test_mnli_validated_without_dev_matched_reports_no_best(argv, tiny_bert, tmp_path):
    for set_type in ("train", "dev_mismatched"):
        featurize(FIXTURES / "MNLI", tmp_path / set_type, tiny_bert, "MNLI", set_type)
    folders = {"train": tmp_path / "train", "dev": tmp_path / "dev_mismatched"}
    module = run_train(argv, tiny_bert, folders, tmp_path / "out", epochs=1)
    assert module.best.result is None and "best" not in read_json(tmp_path / "out", "results.json")


@pytest.mark.slow
def test_two_processes_validate_mid_epoch_together_and_stop_early_together(tiny_bert, tmp_path):
    """Under DDP every process validates at the same steps and takes the same decisions (the metrics are gathered):
    40 examples over 2 processes, 5 steps an epoch, eval_steps 2; patience 1 stops at the first validation that
    does not beat the best."""
    raw = write_rte_subset(tmp_path / "RTE", train_rows=40, dev_rows=25)
    folders = {set_type: featurize(raw, tmp_path / set_type, tiny_bert, "RTE", set_type).parent
               for set_type in ("train", "dev")}
    output = tmp_path / "out"
    torchrun("--model.hf_model", tiny_bert, "--tmod.trainpath", folders["train"], "--tmod.valpath", folders["dev"],
             "--tmod.output_dir", output, "--trainer.epochs", 3, "--trainer.train_batch_size", 8,
             "--tmod.max_lr", "1.0e-3", "--tmod.eval_steps", 2, "--tmod.keep_best", "true",
             "--tmod.early_stopping_patience", 1, cwd=tmp_path)
    history = read_json(output, "history.json")["dev.tsv"]
    every = [2, 4, 5, 6, 8, 10, 12, 14, 15]
    scores = [point["accuracy"] for point in history]
    stop = next((i for i in range(1, len(scores)) if scores[i] <= max(scores[:i])), len(every) - 1)
    assert [point["step"] for point in history] == every[:stop + 1]
    best = read_json(output, "results.json")["best"]
    assert best["score"] == max(scores) and best["step"] == history[scores.index(max(scores))]["step"]
    assert (output / "model.safetensors").is_file()
