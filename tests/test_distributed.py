"""train.py under torchrun with 2 processes on CPU (pymarlin's DDP backend, gloo): validation counts every example
exactly once, so metrics equal the single-process ones, and only rank 0 writes outputs."""
from __future__ import annotations

import json

import pytest
import torch

import train
from conftest import FIXTURES, featurize, torchrun, write_rte_subset

pytestmark = pytest.mark.slow


@pytest.fixture
def rte(tiny_bert, tmp_path):
    """25 dev examples: 2 processes get 13 each, one of them a repeat (DistributedSampler's padding)."""
    raw = write_rte_subset(tmp_path / "RTE", train_rows=40, dev_rows=25)
    return {set_type: featurize(raw, tmp_path / set_type, tiny_bert, "RTE", set_type).parent
            for set_type in ("train", "dev")}


@pytest.fixture
def classifier(tiny_bert, tmp_path):
    """An RTE classifier with fixed weights (a saved head), so every process scores the same model."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(5)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, id2label={0: "entailment",
                                                          1: "not_entailment"})
    model.save_pretrained(tmp_path / "classifier")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "classifier")
    return tmp_path / "classifier"


def test_two_process_validation_equals_single_process(argv, classifier, rte, tmp_path):
    argv("--model.hf_model", classifier, "--tmod.valpath", rte["dev"], "--tmod.output_dir", tmp_path / "one",
         "--trainer.val_batch_size", 4, "--trainer.disable_tqdm", "true")
    single = train.main().results["dev.tsv"]
    torchrun("--model.hf_model", classifier, "--tmod.valpath", rte["dev"], "--tmod.output_dir", tmp_path / "two",
             "--trainer.val_batch_size", 4, cwd=tmp_path)
    double = json.loads((tmp_path / "two" / "results.json").read_text())["dev.tsv"]
    assert single["examples"] == double["examples"] == 25
    assert double["accuracy"] == single["accuracy"]
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_two_process_training_writes_rank_zero_outputs_once(tiny_bert, rte, tmp_path):
    output = tmp_path / "out"
    test = featurize(FIXTURES / "RTE", tmp_path / "test", tiny_bert, "RTE", "test").parent
    result = torchrun("--model.hf_model", tiny_bert, "--tmod.trainpath", rte["train"], "--tmod.valpath", rte["dev"],
                      "--tmod.predictpath", test, "--tmod.output_dir", output, "--trainer.epochs", 2,
                      "--trainer.train_batch_size", 8, "--ckpt.checkpoint", "true", "--tmod.max_lr", "1.0e-3",
                      cwd=tmp_path)
    results = json.loads((output / "results.json").read_text())["dev.tsv"]
    # global batch 8 over 2 processes: 4 per process, 40 examples -> 5 optimizer steps an epoch
    assert (results["epoch"], results["step"], results["examples"]) == (2, 10, 25)
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == [
        "marlin_glue_step00000005.pt", "marlin_glue_step00000010.pt"]
    assert len(list((output / "logs").iterdir())) == 1 and (output / "model.safetensors").is_file()
    assert "Process 1 of 2: trainer.backend ddp, process group gloo" in result.stderr
    assert result.stderr.count("Saved the fine-tuned model") == 1
    assert result.stderr.count("RTE dev.tsv after epoch 2") == 1
    rows = (output / "submission" / "RTE.tsv").read_text().splitlines()  # 6 test rows over 2 processes
    assert rows[0] == "index\tprediction" and [row.split("\t")[0] for row in rows[1:]] == list("012345")
