"""train.py's Recipe on a tiny random BERT: optimizer and schedule (gradient accumulation, each process's steps
under DDP), training as transformers' Trainer trains, results.json, history.json and the saved model, validation
alone, prediction (STS-B's clipped scores, MNLI's three files), seeding, AMP on CPU and MLflow. Runs train.py's
``main()`` in-process with command-line overrides. Resuming: tests/test_resume.py; the output folder:
tests/test_output_dir.py."""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForSequenceClassification

import data
import train
from conftest import (
    FIXTURES,
    assert_trainers_arithmetic,
    featurize,
    featurize_splits,
    read_submission,
    recipe,
    run_train,
    write_rte_subset,
)
from glue_support.exit_codes import ConfigError
from glue_support.marlin import DistributedTrainingArguments, Trainer
from glue_support.submission import SubmissionWriter


def test_train_validates_writes_results_and_a_loadable_model(argv, tiny_bert, features, tmp_path):
    output = tmp_path / "out"
    results = run_train(argv, tiny_bert, features, output).results
    saved = json.loads((output / "results.json").read_text())
    assert saved["task"] == "RTE" and saved["dev.tsv"] == results["dev.tsv"]
    assert saved["dev.tsv"]["epoch"] == 2 and saved["dev.tsv"]["step"] == 2 * 6 and saved["dev.tsv"]["examples"] == 24
    assert 0.0 <= saved["dev.tsv"]["accuracy"] <= 1.0 and saved["dev.tsv"]["loss"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert any((output / "logs").iterdir())  # TensorBoard events

    # validating the saved model alone reproduces the final validation of training
    argv("--model.hf_model", output, "--tmod.valpath", features["dev"], "--tmod.output_dir", tmp_path / "val",
         "--trainer.disable_tqdm", "true")
    validated = train.main().results
    assert validated["dev.tsv"]["accuracy"] == saved["dev.tsv"]["accuracy"]
    assert validated["dev.tsv"]["loss"] == pytest.approx(saved["dev.tsv"]["loss"], rel=1e-5)
    assert validated["dev.tsv"]["epoch"] == 0


def test_history_holds_the_loss_curve_and_every_validation(argv, tiny_bert, features, tmp_path):
    """6 steps an epoch, a loss point every 4 steps and at each validation: steps 4, 6, 8, 12."""
    output = tmp_path / "out"
    module = run_train(argv, tiny_bert, features, output, "--stats.log_steps", 4)
    history = json.loads((output / "history.json").read_text())
    assert [(point["step"], point["epoch"]) for point in history["train"]] == [(4, 1), (6, 1), (8, 2), (12, 2)]
    assert all(point["loss"] > 0 and point["lr"] >= 0 for point in history["train"])
    assert history["train"][-1]["lr"] == 0.0  # the schedule ends at zero
    assert [point["epoch"] for point in history["dev.tsv"]] == [1, 2]
    assert history["dev.tsv"][-1] == module.results["dev.tsv"]


def test_same_seed_same_metrics_other_seed_other_metrics(argv, tiny_bert, features, tmp_path):
    first = run_train(argv, tiny_bert, features, tmp_path / "a").results["dev.tsv"]
    second = run_train(argv, tiny_bert, features, tmp_path / "b").results["dev.tsv"]
    third = run_train(argv, tiny_bert, features, tmp_path / "c", "--tmod.seed", 7).results["dev.tsv"]
    assert first == second
    assert third["loss"] != first["loss"]


def test_no_weight_decay_on_biases_and_layernorm(tiny_bert, features, tmp_path):
    module = recipe(tiny_bert, features, tmp_path)
    [optimizer], _ = module.get_optimizers_schedulers(0, 2)
    names = {id(p): n for n, p in module.model.named_parameters()}
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    plain = {names[id(p)] for p in optimizer.param_groups[1]["params"]}
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert plain and all(n.endswith("bias") or "LayerNorm" in n for n in plain)
    assert decayed and not any(n.endswith("bias") or "LayerNorm" in n for n in decayed)
    assert len(decayed) + len(plain) == len(names)


@pytest.mark.parametrize("overrides, steps", [({}, 12), ({"max_train_steps_per_epoch": 4}, 8),
                                              ({"gpu_batch_size_limit": 4}, 12)])
def test_warmup_and_decay_span_the_real_number_of_optimizer_steps(tiny_bert, features, tmp_path, overrides, steps):
    module = recipe(tiny_bert, features, tmp_path, **overrides)  # sized from the features, before any loader
    [optimizer], [scheduler] = module.get_optimizers_schedulers(0, 2)
    assert module.optimizer_steps(2) == steps
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = math.ceil(0.25 * steps)
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == warmup
    assert optimizer.param_groups[0]["lr"] == 0.0  # reaches zero exactly at the last step


def test_val_step_returns_logits_indexes_labels_and_per_example_losses(tiny_bert, features, tmp_path):
    module = recipe(tiny_bert, features, tmp_path)
    module.eval()
    batch = next(iter(module.get_val_dataloaders(SequentialSampler, 5)["dev.tsv"]))
    with torch.no_grad():
        logits, index, labels, losses = module.val_step(0, batch, torch.device("cpu"))
        mean = module.model(**{k: v for k, v in batch.items() if k != "index"}).loss
    assert losses.shape == (5,) and logits.shape == (5, 2) and labels.shape == (5,)
    assert index.tolist() == batch["index"].tolist()
    assert losses.mean().item() == pytest.approx(mean.item(), rel=1e-5)


def test_gradient_accumulation_through_pymarlin_ends_the_schedule_at_zero(argv, tiny_bert, tmp_path):
    """45 examples, global batch 6, device limit 4: pymarlin steps every 2 micro-batches of 3, 15 micro-batches
    an epoch, so one accumulation carries over into the second epoch; 15 optimizer steps in all."""
    raw = write_rte_subset(tmp_path / "RTE45", train_rows=45, dev_rows=8)
    folders = featurize_splits(raw, tmp_path / "f45", tiny_bert)
    module = run_train(argv, tiny_bert, folders, tmp_path / "out", "--trainer.gpu_batch_size_limit", 4, batch_size=6)
    assert module.train_micro_batch_size == 3 and module.train_batches_per_epoch == 15
    assert module.optimizer_steps(2) == 15 == module.results["dev.tsv"]["step"]
    assert module.optimizer.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("limit", [8, 4])
def test_training_is_the_trainers_arithmetic_on_the_same_batches(argv, tiny_bert, features, tmp_path, monkeypatch,
                                                                  limit):
    """Limit 4: two micro-batches of 4 per step of 8 (``assert_trainers_arithmetic``)."""
    assert_trainers_arithmetic(argv, monkeypatch, tiny_bert, features, tmp_path / "out", limit)


def test_stsb_is_a_regression_with_correlations_and_clipped_float_submissions(argv, tiny_bert, tmp_path):
    folders = featurize_splits(FIXTURES / "STS-B", tmp_path / "features", tiny_bert, ("train", "dev", "test"),
                               task="STS-B")
    module = run_train(argv, tiny_bert, folders, tmp_path / "out", "--tmod.predictpath", folders["test"], epochs=1,
                       batch_size=32)
    assert module.model.config.problem_type == "regression" and module.model.config.num_labels == 1
    dev = module.results["dev.tsv"]
    assert set(dev) == {"pearson", "spearmanr", "combined_score", "loss", "epoch", "step", "examples"}
    assert dev["examples"] == 200 and -1.0 <= dev["pearson"] <= 1.0

    rows = read_submission(tmp_path / "out" / "submission" / "STS-B.tsv")
    assert [index for index, _ in rows] == ["0", "1", "2", "3", "4", "5"]
    features = list(data.TaskDataset(str(folders["test"] / "test.tsv")))
    batch = data.TaskDataset.collate(features)
    with torch.no_grad():
        scores = module.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert [float(score) for _, score in rows] == pytest.approx(scores.squeeze(-1).clamp(0, 5).tolist(), abs=5e-4)
    assert all(0.0 <= float(score) <= 5.0 for _, score in rows)


def test_stsb_submissions_are_clipped_sorted_by_index_and_each_example_once(tiny_bert, tmp_path):
    """Outputs gathered under DDP come interleaved by process, with the first examples repeated as padding."""
    folders = featurize_splits(FIXTURES / "STS-B", tmp_path, tiny_bert, ("train", "test"), task="STS-B")
    module = recipe(tiny_bert, folders, tmp_path)
    gathered = [torch.tensor([[-1.0], [2.5], [7.0], [0.1234], [5.0], [4.9999], [-1.0], [2.5]]),
                torch.tensor([5, 4, 3, 2, 1, 0, 5, 4])]
    backend = types.SimpleNamespace(validate_dl=lambda loader: gathered)  # as pymarlin's DDP backend returns them
    trainer = types.SimpleNamespace(trainer_backend=backend, val_sampler=SequentialSampler, val_step_batch_size=8)
    writer = SubmissionWriter(module.spec, {"test.tsv": data.read_metadata(str(folders["test"] / "test.tsv"))},
                              str(tmp_path), is_main_process=True)
    train.predict(trainer, module, writer)
    assert read_submission(tmp_path / "submission" / "STS-B.tsv") == [
        ("0", "5.000"), ("1", "5.000"), ("2", "0.123"), ("3", "5.000"), ("4", "2.500"), ("5", "0.000")]
    assert writer.written == {"test.tsv": str(tmp_path / "submission" / "STS-B.tsv")}


@pytest.fixture
def mnli(tiny_bert, tmp_path):
    """MNLI fixture features: train, a validation folder with both dev files, a prediction folder with both test
    files and AX (which MNLI models predict)."""
    root = tmp_path / "mnli"
    featurize(FIXTURES / "MNLI", root / "train", tiny_bert, "MNLI", "train")
    for set_type in ("dev_matched", "dev_mismatched"):
        featurize(FIXTURES / "MNLI", root / "dev", tiny_bert, "MNLI", set_type)
    for set_type in ("test_matched", "test_mismatched"):
        featurize(FIXTURES / "MNLI", root / "test", tiny_bert, "MNLI", set_type)
    featurize(FIXTURES / "AX", root / "test", tiny_bert, "AX", "test")
    return {name: root / name for name in ("train", "dev", "test")}


def test_mnli_validates_matched_and_mismatched_in_one_run_and_writes_three_submissions(argv, tiny_bert, mnli, tmp_path):
    output = tmp_path / "out"
    module = run_train(argv, tiny_bert, mnli, output, "--tmod.predictpath", mnli["test"], epochs=1)
    saved = json.loads((output / "results.json").read_text())
    assert saved["task"] == "MNLI"
    assert (saved["dev_matched.tsv"]["examples"], saved["dev_mismatched.tsv"]["examples"]) == (6, 5)
    assert saved["dev_matched.tsv"]["accuracy"] == module.results["dev_matched.tsv"]["accuracy"]
    assert AutoModelForSequenceClassification.from_pretrained(output).config.id2label == {
        0: "contradiction", 1: "entailment", 2: "neutral"}

    written = sorted(path.name for path in (output / "submission").iterdir())
    assert written == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
    for name, features in (("MNLI-m.tsv", "test_matched.tsv"), ("MNLI-mm.tsv", "test_mismatched.tsv"),
                           ("AX.tsv", "test.tsv")):
        batch = data.TaskDataset.collate(list(data.TaskDataset(str(mnli["test"] / features))))
        with torch.no_grad():
            logits = module.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
        expected = [(str(i), module.spec.labels[p])
                    for i, p in zip(batch["index"].tolist(), logits.argmax(-1).tolist())]
        assert read_submission(output / "submission" / name) == expected


def test_prediction_alone_from_a_saved_model(argv, tiny_bert, mnli, tmp_path):
    run_train(argv, tiny_bert, mnli, tmp_path / "trained", epochs=1)
    argv("--model.hf_model", tmp_path / "trained", "--tmod.predictpath", mnli["test"] / "test_matched.tsv",
         "--tmod.output_dir", tmp_path / "predicted", "--trainer.disable_tqdm", "true")
    module = train.main()
    assert module.results == {} and [path.name for path in (tmp_path / "predicted" / "submission").iterdir()] == [
        "MNLI-m.tsv"]
    rows = read_submission(tmp_path / "predicted" / "submission" / "MNLI-m.tsv")
    assert len(rows) == 3 and {label for _, label in rows} <= {"contradiction", "entailment", "neutral"}


def test_an_incomplete_prediction_is_refused_before_any_work(argv, tiny_bert, mnli, tmp_path):
    argv("--model.hf_model", tiny_bert, "--tmod.predictpath", mnli["test"], "--tmod.output_dir", tmp_path / "out",
         "--trainer.val_batch_size", 2, "--trainer.max_val_steps_per_epoch", 1, "--trainer.disable_tqdm", "true")
    with pytest.raises(ConfigError, match="--trainer.max_val_steps_per_epoch limits prediction too"):
        train.main()
    assert not (tmp_path / "out").exists()


def test_amp_on_cpu_trains_in_bfloat16_and_ignores_float16_with_a_warning(argv, tiny_bert, features, tmp_path,
                                                                        caplog):
    plain = run_train(argv, tiny_bert, features, tmp_path / "sp", epochs=1).results["dev.tsv"]
    with caplog.at_level("INFO"):
        bf16 = run_train(argv, tiny_bert, features, tmp_path / "bf16", "--trainer.backend", "sp-amp",
                         "--amp.dtype", "bfloat16", epochs=1).results["dev.tsv"]
    assert "AMP: bfloat16 autocast on CPU" in caplog.text
    assert bf16["examples"] == plain["examples"] and math.isfinite(bf16["loss"])
    assert bf16["loss"] != plain["loss"]  # computed in bfloat16: the same run, other rounding
    assert bf16["loss"] == pytest.approx(plain["loss"], rel=0.05)
    caplog.clear()
    with caplog.at_level("WARNING"):
        fp16 = run_train(argv, tiny_bert, features, tmp_path / "fp16", "--trainer.backend", "sp-amp",
                         "--amp.dtype", "float16", epochs=1).results["dev.tsv"]
    assert "amp.dtype float16 needs a GPU: ignored on CPU (training in float32)" in caplog.text
    assert fp16 == plain
    with pytest.raises(SystemExit, match="--amp.dtype fp8: expected one of float16, bfloat16"):
        run_train(argv, tiny_bert, features, tmp_path / "bad", "--amp.dtype", "fp8", epochs=1)


def test_inside_an_azure_ml_job_metrics_also_go_to_mlflow(argv, tiny_bert, features, tmp_path, monkeypatch):
    logged = []
    fake = types.ModuleType("mlflow")
    fake.get_tracking_uri = lambda: "azureml://fake"
    fake.log_metric = lambda name, value, step: logged.append((name, value, step))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "azureml://fake")
    dev = run_train(argv, tiny_bert, features, tmp_path / "out", "--stats.log_steps", 1, epochs=1).results["dev.tsv"]
    metrics = {name: (value, step) for name, value, step in logged}
    assert metrics["dev.tsv/val_accuracy"] == (pytest.approx(dev["accuracy"]), 6)
    assert {step for name, _, step in logged if name == "lr"} == set(range(1, 7))  # every optimizer step

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    logged.clear()
    run_train(argv, tiny_bert, features, tmp_path / "plain", epochs=1)
    assert logged == []


def test_under_ddp_the_schedule_spans_each_process_s_real_steps(tiny_bert, tmp_path):
    """36 examples over 2 processes: 18 each, micro-batch 4 (global batch 8) -> 5 steps an epoch, not 36/8."""
    raw = write_rte_subset(tmp_path / "RTE36", train_rows=36, dev_rows=4)
    ranks = DistributedTrainingArguments(world_size=2)  # either process of two, as torchrun starts them
    module = recipe(tiny_bert, featurize_splits(raw, tmp_path / "f36", tiny_bert), tmp_path,
                    distributed_training_args=ranks)
    assert module.train_batches_per_epoch == 5 and module.optimizer_steps(2) == 10


@pytest.mark.parametrize("batch, processes, limit", [(16, 1, 512), (8, 1, 4), (6, 1, 4), (48, 1, 10), (8, 2, 512),
                                                     (12, 2, 4), (100, 4, 7)])
def test_the_recipe_s_micro_batch_is_the_one_pymarlin_trains_with(batch, processes, limit):
    arguments = train.TrainerArguments(train_batch_size=batch, gpu_batch_size_limit=limit,
                                       distributed_training_args=DistributedTrainingArguments(world_size=processes))
    pymarlin = types.SimpleNamespace(args=arguments, pergpu_global_batch_size=batch // processes)
    assert train.micro_batch_size(arguments) == Trainer.train_step_batch_size.fget(pymarlin)
