"""The Recipe on a tiny random BERT: optimizer and schedule, training, results.json, the saved model,
validate-only mode and seeding. Runs train.py's ``main()`` in-process with command-line overrides."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import SequentialSampler
from transformers import AutoModelForSequenceClassification

import data
import train
from conftest import write_rte_subset


def featurize_splits(raw, output, tokenizer, set_types=("train", "dev")) -> dict:
    """Featurize RTE files in ``raw`` into ``output/<set_type>/``; the folders by set type."""
    folders = {}
    for set_type in set_types:
        folders[set_type] = output / set_type
        data.featurize(data.DataInterfaceArguments(str(raw), str(folders[set_type])),
                       data.DataProcessorArguments(task="RTE", set_type=set_type, max_seq_len=64, tokenizer=tokenizer,
                                                   workers=1, tokenize_batch_size=16))
    return folders


@pytest.fixture
def features(tiny_bert, rte_subset, tmp_path):
    return featurize_splits(rte_subset, tmp_path / "features", tiny_bert)


def run_train(argv, tiny_bert, features, output_dir, *extra, epochs: int = 2, batch_size: int = 8) -> train.Recipe:
    argv("--model.hf_model", tiny_bert, "--tmod.trainpath", features["train"], "--tmod.valpath", features["dev"],
         "--tmod.output_dir", output_dir, "--trainer.epochs", epochs, "--trainer.train_batch_size", batch_size,
         "--trainer.disable_tqdm", "true", "--tmod.max_lr", "1.0e-3", *extra)
    return train.main()


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


def test_same_seed_same_metrics_other_seed_other_metrics(argv, tiny_bert, features, tmp_path):
    first = run_train(argv, tiny_bert, features, tmp_path / "a").results["dev.tsv"]
    second = run_train(argv, tiny_bert, features, tmp_path / "b").results["dev.tsv"]
    third = run_train(argv, tiny_bert, features, tmp_path / "c", "--tmod.seed", 7).results["dev.tsv"]
    assert first == second
    assert third["loss"] != first["loss"]


def recipe(tiny_bert, features, tmp_path, **trainer_overrides):
    args = train.ModuleInterfaceArguments(task=None, trainpath=str(features["train"]), valpath=str(features["dev"]),
                                          output_dir=str(tmp_path), max_lr=1e-3, warmup_prop=0.25, weight_decay=0.01,
                                          seed=1, group_by_length=True)
    trainer_args = train.TrainerArguments(**{"train_batch_size": 8, **trainer_overrides})
    return train.Recipe(args, train.ModelArguments(tiny_bert), trainer_args, data.TaskData())


def test_no_weight_decay_on_biases_and_layernorm(tiny_bert, features, tmp_path):
    module = recipe(tiny_bert, features, tmp_path)
    module.get_train_dataloader(SequentialSampler, 8)
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
    module = recipe(tiny_bert, features, tmp_path, **overrides)
    micro = min(8, overrides.get("gpu_batch_size_limit", 8))
    module.get_train_dataloader(SequentialSampler, micro)
    [optimizer], [scheduler] = module.get_optimizers_schedulers(0, 2)
    assert module.optimizer_steps(2) == steps
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = round(0.25 * steps)
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == warmup
    assert optimizer.param_groups[0]["lr"] == 0.0  # reaches zero exactly at the last step


def test_features_of_another_task_are_refused(tiny_bert, features, tmp_path):
    args = train.ModuleInterfaceArguments(task="MRPC", trainpath=str(features["train"]), valpath=None,
                                          output_dir=str(tmp_path), max_lr=1e-3, warmup_prop=0.1, weight_decay=0.0,
                                          seed=1, group_by_length=True)
    with pytest.raises(ValueError, match="disagree on the task"):
        train.task_of_features(args, train.features_metadata(args))


def test_val_step_returns_per_example_losses(tiny_bert, features, tmp_path):
    module = recipe(tiny_bert, features, tmp_path)
    module.eval()
    batch = next(iter(module.get_val_dataloaders(SequentialSampler, 5)["dev.tsv"]))
    with torch.no_grad():
        losses, logits, labels = module.val_step(0, batch, torch.device("cpu"))
        mean = module.model(**{k: v for k, v in batch.items() if k != "index"}).loss
    assert losses.shape == (5,) and logits.shape == (5, 2) and labels.shape == (5,)
    assert losses.mean().item() == pytest.approx(mean.item(), rel=1e-5)


def test_validating_on_unlabeled_test_features_is_a_clear_error(tiny_bert, features, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "test.tsv").write_text("index\tsentence1\tsentence2\n0\tA cat.\tAn animal.\n", encoding="utf-8")
    test = featurize_splits(raw, tmp_path, tiny_bert, set_types=("test",))["test"]
    module = recipe(tiny_bert, {**features, "dev": test}, tmp_path)
    with pytest.raises(ValueError, match="test.tsv: features without labels"):
        module.get_val_dataloaders(SequentialSampler, 8)


def test_gradient_accumulation_through_pymarlin_ends_the_schedule_at_zero(argv, tiny_bert, tmp_path):
    """45 examples, global batch 6, device limit 4: pymarlin steps every 2 micro-batches of 3, 15 micro-batches
    an epoch, so one accumulation carries over into the second epoch; 15 optimizer steps in all."""
    raw = write_rte_subset(tmp_path / "RTE45", train_rows=45, dev_rows=8)
    folders = featurize_splits(raw, tmp_path / "f45", tiny_bert)
    module = run_train(argv, tiny_bert, folders, tmp_path / "out", "--trainer.gpu_batch_size_limit", 4, batch_size=6)
    assert module.train_micro_batch_size == 3 and module.train_batches_per_epoch == 15
    assert module.optimizer_steps(2) == 15 == module.results["dev.tsv"]["step"]
    assert module.optimizer.param_groups[0]["lr"] == 0.0


def test_features_from_another_vocabulary_are_refused(tiny_bert, features, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    other = tmp_path / "other-vocab"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizerFast(str(other / "vocab.txt")).save_pretrained(other)
    BertModel(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(other)
    with pytest.raises(ValueError, match="featurize again with --dproc.tokenizer"):
        recipe(str(other), features, tmp_path)


def test_a_run_resumes_from_its_checkpoint_folder(argv, tiny_bert, features, tmp_path):
    """With the default checkpoint settings, ``--ckpt.load_dir`` alone picks the newest training-state
    checkpoint (not a model-only file) and training continues where it stopped."""
    run_train(argv, tiny_bert, features, tmp_path / "first", "--ckpt.checkpoint", "true", epochs=1)
    assert sorted(path.name for path in (tmp_path / "first" / "checkpoints").iterdir()) == ["marlin_glue_0.pt"]

    resumed = run_train(argv, tiny_bert, features, tmp_path / "resumed", "--ckpt.checkpoint", "true",
                        "--ckpt.load_dir", tmp_path / "first" / "checkpoints").results["dev.tsv"]
    assert (resumed["epoch"], resumed["step"]) == (2, 2 * 6)
