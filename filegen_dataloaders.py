"""Dataloaders over folders of feature files written by ``data.py``, as in PyMarlin's GLUE example.

``FilesGenDataloader`` streams training batches file by file, holding one file in memory at a time, so a
task larger than memory can be split into several feature files. ``FilesDictDataloader`` gives one
validation loader per file, keyed by file name, so each file gets its own metrics (MNLI ``dev_matched.tsv``
and ``dev_mismatched.tsv`` in one run).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from data import TaskData, TaskDataset, read_metadata


def feature_files(path: str) -> list[str]:
    """The feature files at ``path``: the file itself, or every file in the folder (sorted, hidden and
    temporary files skipped)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such feature file or folder (write one with data.py)")
    files = [os.path.join(path, name) for name in sorted(os.listdir(path))
             if not name.startswith(".") and os.path.isfile(os.path.join(path, name))]
    if not files:
        raise FileNotFoundError(f"{path}: folder holds no feature files (write them with data.py)")
    return files


class FilesGenDataloader:
    """Training batches from every feature file under ``path``, one file loaded at a time.

    ``sampler`` is a sampler *class* (pymarlin passes ``RandomSampler``, or ``DistributedSampler`` under
    DDP); it orders the examples within each file. ``len()`` is the number of batches, from the files'
    metadata, without loading them.
    """

    def __init__(self, datamodule: TaskData, path: str, batch_size: int, sampler: Callable[..., Sampler]):
        self.datamodule = datamodule
        self.files = feature_files(path)
        self.batch_size = batch_size
        self.sampler = sampler
        self.counts = [read_metadata(file)["count"] for file in self.files]

    def get_datacount(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return sum(math.ceil(count / self.batch_size) for count in self.counts)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for file in self.files:
            dataset = self.datamodule.get_train_dataset(file)
            yield from DataLoader(dataset, batch_size=self.batch_size, sampler=self.sampler(dataset),
                                  collate_fn=TaskDataset.collate)
            del dataset


class FilesDictDataloader:
    """One validation ``DataLoader`` per feature file under ``path``, keyed by file name."""

    def __init__(self, datamodule: TaskData, path: str):
        self.datamodule = datamodule
        self.files = feature_files(path)

    def get_datacount(self) -> int:
        return sum(read_metadata(file)["count"] for file in self.files)

    def get_dataloaders(self, sampler: Callable[..., Sampler], batch_size: int) -> dict[str, DataLoader]:
        loaders = {}
        for file in self.files:
            dataset = self.datamodule.get_val_dataset(file)
            loaders[os.path.basename(file)] = DataLoader(dataset, batch_size=batch_size, sampler=sampler(dataset),
                                                         collate_fn=TaskDataset.collate)
        return loaders
