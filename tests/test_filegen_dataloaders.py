"""The loaders and the order of the data: training batches stream file by file, grouped by length where asked;
validation gets one loader per file, its batches longest first, every example once and each process its share under
DDP, with the same results.json metrics (the loss to float32 rounding) and submission bytes as in file order, on the
real RTE files."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

import data
import train
from conftest import ROOT, config_defaults
from filegen_dataloaders import (
    FilesDictDataloader,
    FilesGenDataloader,
    LengthGroupedBatchSampler,
    LengthOrderedBatchSampler,
)
from glue_processors import FeatureTable


def write(path, indices):
    ids = [np.array([101] + [7] * (i % 5) + [102], dtype=np.int32) for i in indices]
    table = FeatureTable(input_ids=np.concatenate(ids), token_type_ids=np.zeros(sum(map(len, ids)), dtype=np.int8),
                         offsets=np.cumsum([0] + [len(row) for row in ids], dtype=np.int64),
                         labels=np.array([i % 2 for i in indices], dtype=np.int64),
                         indexes=np.array(indices, dtype=np.int64))
    data.write_features(str(path), {"task": "RTE"}, table)


@pytest.fixture
def two_files(tmp_path):
    write(tmp_path / "a.tsv", range(0, 10))
    write(tmp_path / "b.tsv", range(10, 17))
    return tmp_path


def test_every_training_example_comes_once_per_epoch_file_by_file(two_files):
    loader = FilesGenDataloader(data.TaskData(), str(two_files), batch_size=4, sampler=RandomSampler)
    assert loader.get_datacount() == 17 and len(loader) == 3 + 2
    batches = list(loader)
    assert len(batches) == len(loader)
    seen = [index for batch in batches for index in batch["index"].tolist()]
    assert sorted(seen) == list(range(17))
    assert set(seen[:10]) == set(range(10))  # the first file is finished before the second starts


def test_one_validation_loader_per_file_keyed_by_name(two_files):
    loaders = FilesDictDataloader(data.TaskData(), str(two_files)).get_dataloaders(SequentialSampler, 8)
    assert list(loaders) == ["a.tsv", "b.tsv"]
    assert sorted(i for batch in loaders["b.tsv"] for i in batch["index"].tolist()) == list(range(10, 17))


def test_a_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such feature file or folder"):
        FilesDictDataloader(data.TaskData(), str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="holds no feature files"):
        FilesGenDataloader(data.TaskData(), str(tmp_path), 4, RandomSampler)


def test_length_grouped_batches_hold_every_example_once_and_cut_padding():
    torch.manual_seed(0)
    lengths = torch.randint(5, 128, (1000,)).tolist()
    sampler = LengthGroupedBatchSampler(RandomSampler(range(1000)), lengths, batch_size=16, group_batches=8)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert all(len(batch) == 16 for batch in batches[:-1]) and len(batches[-1]) == 1000 % 16
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    random_batches = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    padded_random = sum(len(batch) * max(lengths[i] for i in batch) for batch in random_batches)
    assert padded < 0.75 * padded_random
    assert batches != list(sampler)  # a new order every epoch


def test_grouped_training_stream_covers_each_file(two_files):
    loader = FilesGenDataloader(data.TaskData(), str(two_files), batch_size=4, sampler=RandomSampler,
                                group_by_length=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    assert sorted(i for batch in batches for i in batch["index"].tolist()) == list(range(17))


RTE_TEST = ROOT.parent / "shared" / "glue_data" / "RTE" / "test.tsv"


def flat(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


def test_batches_come_longest_first_with_every_example_once():
    lengths = [5, 9, 9, 2, 7, 9, 1, 7, 3, 3, 8]
    batches = list(LengthOrderedBatchSampler(SequentialSampler(lengths), lengths, batch_size=4))
    assert [len(batch) for batch in batches] == [4, 4, 3] and len(LengthOrderedBatchSampler(
        SequentialSampler(lengths), lengths, batch_size=4)) == 3
    assert sorted(flat(batches)) == list(range(len(lengths)))
    assert [lengths[i] for i in flat(batches)] == sorted(lengths, reverse=True)
    assert flat(batches)[:3] == [1, 2, 5]  # ties keep the sampler's order


def test_under_two_processes_each_orders_its_own_share_and_the_repeats_drop_by_index():
    """25 examples, 2 processes: ``DistributedSampler`` (pymarlin's ``SequentialDistributedSampler`` is one without
    shuffling) gives each 13, repeating example 0 as padding; each process keeps exactly its share."""
    lengths = [(7 * i) % 11 + 1 for i in range(25)]
    gathered = []
    for rank in (0, 1):
        share = DistributedSampler(lengths, num_replicas=2, rank=rank, shuffle=False)
        batches = list(LengthOrderedBatchSampler(share, lengths, batch_size=4))
        assert len(batches) == len(LengthOrderedBatchSampler(share, lengths, batch_size=4)) == 4
        assert sorted(flat(batches)) == sorted(share)
        assert [lengths[i] for i in flat(batches)] == sorted((lengths[i] for i in share), reverse=True)
        gathered += flat(batches)
    assert len(gathered) == 26
    indexes, first = train.unique_examples(torch.tensor(gathered))
    assert indexes.tolist() == list(range(25)) and sorted(torch.tensor(gathered)[first].tolist()) == list(range(25))


def featurize(raw_dir, output, tokenizer: str, set_type: str):
    """RTE ``set_type`` features at config.yaml's max_seq_len (128), as a user makes them."""
    proc = config_defaults("dproc", task="RTE", set_type=set_type, tokenizer=tokenizer, workers=1)
    data.featurize(data.DataInterfaceArguments(str(raw_dir), str(output)), data.DataProcessorArguments(**proc))
    return output


@pytest.fixture
def classifier(tiny_bert, tmp_path):
    """A tiny RTE classifier with fixed weights, so both orders score the same model. Its weights are drawn 10x
    wider than BERT's default: at the default every example gets the same label, and a submission of one label
    would be identical whatever the order."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(5)
    config = BertConfig.from_pretrained(tiny_bert, initializer_range=0.2, num_labels=2,
                                        id2label={0: "entailment", 1: "not_entailment"})
    BertForSequenceClassification(config).save_pretrained(tmp_path / "classifier")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "classifier")
    return tmp_path / "classifier"


def run_in_both_orders(argv, monkeypatch, output, *options) -> dict[str, dict]:
    """train.py with ``options`` in length order (ours) and in file order (before); per order, the indexes of the
    batches it ran and the padded tokens they cost."""
    runs = {}
    for order in ("length", "file"):
        batches: list[list[int]] = []
        tokens = []
        original = train.Recipe.val_step

        def val_step(self, global_step, batch, device, seen=batches, cost=tokens, step=original):
            seen.append(batch["index"].tolist())
            cost.append(batch["input_ids"].numel())
            return step(self, global_step, batch, device)

        with monkeypatch.context() as patch:
            patch.setattr(train.Recipe, "val_step", val_step)
            if order == "file":
                patch.setattr(train, "FilesDictDataloader", functools.partial(FilesDictDataloader, by_length=False))
            argv(*options, "--tmod.output_dir", output / order, "--trainer.val_batch_size", 64,
                 "--trainer.disable_tqdm", "true")
            train.main()
        runs[order] = {"batches": batches, "tokens": sum(tokens)}
    assert runs["length"]["batches"] != runs["file"]["batches"]
    assert sorted(flat(runs["length"]["batches"])) == sorted(flat(runs["file"]["batches"]))
    assert runs["length"]["tokens"] < runs["file"]["tokens"]
    return runs


def test_rte_dev_metrics_are_those_of_file_order(argv, monkeypatch, classifier, tmp_path):
    dev = featurize(ROOT / "RTE", tmp_path / "dev", str(classifier), "dev")
    run_in_both_orders(argv, monkeypatch, tmp_path, "--model.hf_model", classifier, "--tmod.valpath", dev)
    by_length, by_file = (json.loads((tmp_path / order / "results.json").read_text()) for order in ("length", "file"))
    assert by_length["dev.tsv"]["examples"] == 277
    # An example padded to another length goes through matrix products of other shapes, whose sums round
    # differently in the last bits (as with another val_batch_size in file order): per-example losses move by
    # float32 rounding, and the mean loss with them, by at most about that much; everything else is equal.
    loss = by_length["dev.tsv"].pop("loss")
    assert loss == pytest.approx(by_file["dev.tsv"].pop("loss"), rel=1e-6, abs=0)
    assert by_length["dev.tsv"] == by_file["dev.tsv"]


@pytest.mark.skipif(not RTE_TEST.is_file(), reason=f"the official RTE test.tsv is not at {RTE_TEST} (CI has it)")
def test_rte_test_submission_is_byte_identical_to_file_order(argv, monkeypatch, classifier, tmp_path):
    test = featurize(RTE_TEST.parent, tmp_path / "test", str(classifier), "test")
    run_in_both_orders(argv, monkeypatch, tmp_path, "--model.hf_model", classifier, "--tmod.predictpath", test)
    by_length, by_file = ((tmp_path / order / "submission" / "RTE.tsv").read_bytes() for order in ("length", "file"))
    assert by_length == by_file
    rows = by_length.decode().split("\n")[1:-1]
    assert len(rows) == 3000 and {row.split("\t")[1] for row in rows} == {"entailment", "not_entailment"}
