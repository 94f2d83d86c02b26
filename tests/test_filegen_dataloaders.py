"""Training batches stream file by file; validation gets one loader per file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler

import data
from filegen_dataloaders import FilesDictDataloader, FilesGenDataloader, LengthGroupedBatchSampler
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
