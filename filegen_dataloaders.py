"""Dataloaders over folders of feature files written by ``data.py``, as in PyMarlin's GLUE example.

Training streams one file at a time (``FilesGenDataloader``; ``DataOrder`` keeps its place for exact resumes);
validation gets one loader per file, so each file has its own metrics (``FilesDictDataloader``).
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from data import TaskData, read_metadata
from glue_support.checkpoints import rng_state, set_rng_state
from glue_support.marlin import getlogger

logger = getlogger(__name__)


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


def batches_per_process(counts: list[int], batch_size: int, processes: int) -> int:
    """Batches of a whole epoch over files of ``counts`` examples for each of ``processes``
    (``DistributedSampler`` pads to equal shares; each file ends with its own partial batch)."""
    return sum(math.ceil(math.ceil(count / processes) / batch_size) for count in counts)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, in random order: the cost of a dynamically padded batch is set by its
    longest member, so grouping lengths cuts the padding work (GLUE's lengths are skewed: most random batches
    hold one long example; bench/RESULTS.md (b)).

    The examples come in the order of ``sampler`` (random; under DDP, this process's share); each run of
    ``group_batches`` batches is sorted by length and cut into batches, and all full batches are shuffled.
    The one partial batch, if any, comes last, so ``len()`` is ``ceil(n / batch_size)`` as without grouping.
    """

    def __init__(self, sampler: Sampler, lengths: list[int], batch_size: int, group_batches: int = 50,
                 generator: Optional[torch.Generator] = None):
        self.sampler = sampler
        self.generator = generator  # None: torch's global generator
        self.lengths = lengths
        self.batch_size = batch_size
        self.group_size = batch_size * group_batches

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.group_size):
            group = sorted(order[start:start + self.group_size], key=self.lengths.__getitem__, reverse=True)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        partial = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        for position in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[position]
        yield from partial


class LengthOrderedBatchSampler(Sampler[list[int]]):
    """Validation and prediction batches in length order, longest first: a dynamically padded batch costs its
    longest member, so batches of alike lengths spend almost nothing on padding, and the first batch is the
    largest, so memory peaks at once (a batch size that does not fit fails at the start, not at the end).

    It orders the examples ``sampler`` gives, so under DDP each process keeps its share (with the repeats
    ``DistributedSampler`` pads the shares with, which the example index lets the results drop). Ties keep the
    sampler's order. Outputs carry their example index and results are put back in index order, so the order
    changes results only by float rounding (an example padded to another length goes through matrix products of
    other shapes, as with another batch size in file order).
    """

    def __init__(self, sampler: Sampler, lengths: list[int], batch_size: int):
        self.sampler = sampler
        self.lengths = lengths
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = sorted(self.sampler, key=self.lengths.__getitem__, reverse=True)
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]


class FilesGenDataloader:
    """Training batches from every feature file under ``path``, one file loaded at a time.

    ``sampler`` is a sampler *class* (pymarlin passes ``RandomSampler``, or ``DistributedSampler`` under
    DDP); it orders the examples within each file, and with ``group_by_length`` batches are then formed
    from examples of similar length (``LengthGroupedBatchSampler``). ``len()`` is the number of batches,
    from the files' metadata, without loading them.

    A run resumed mid-epoch passes ``skip_batches``: the epoch's order is drawn as before (the caller has
    restored the random state of the epoch's start), the batches already trained on are passed over, and
    ``on_resumed`` is called before the first new one (to restore the random state of the checkpoint).
    """

    def __init__(self, datamodule: TaskData, path: str, batch_size: int, sampler: Callable[..., Sampler],
                 group_by_length: bool = False, skip_batches: int = 0,
                 on_resumed: Optional[Callable[[], None]] = None, epoch: int = 0, seed: int = 0,
                 max_batches: Optional[int] = None):
        self.datamodule = datamodule
        self.epoch, self.seed = epoch, seed
        self.files = feature_files(path)
        self.batch_size = batch_size
        self.sampler = sampler
        self.group_by_length = group_by_length
        self.counts = [read_metadata(file)["count"] for file in self.files]
        self.skip_batches = skip_batches
        self.on_resumed = on_resumed
        self.max_batches = max_batches  # a resumed epoch under a step cap: only what the cap still allows

    def get_datacount(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        """Batches this process will yield (under DDP, its share)."""
        distributed = self._sampler_is(DistributedSampler) and torch.distributed.is_initialized()
        processes = torch.distributed.get_world_size() if distributed else 1
        return batches_per_process(self.counts, self.batch_size, processes) - self.skip_batches

    def _sampler_is(self, kind: type) -> bool:
        return isinstance(self.sampler, type) and issubclass(self.sampler, kind)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = self._all_batches()
        for _ in itertools.islice(batches, self.skip_batches):
            pass
        if self.on_resumed:
            self.on_resumed()
        yield from itertools.islice(batches, self.max_batches)

    def _all_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The first file is ordered with torch's global generator; every later file with its own generator,
        seeded from a copy of the global state taken when the epoch starts, so its order does not depend on
        the random numbers training drew meanwhile (a resumed run passes over batches without training)."""
        later_files = torch.Generator()
        later_files.set_state(torch.get_rng_state())
        for number, file in enumerate(self.files):
            dataset = self.datamodule.get_train_dataset(file)
            generator = None
            if number:
                generator = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=later_files)))
            seeded = generator is not None and self._sampler_is(RandomSampler)
            sampler = self.sampler(dataset, generator=generator) if seeded else self.sampler(dataset)
            if isinstance(sampler, DistributedSampler):  # pymarlin passes the class: a new order each epoch
                sampler.seed = self.seed
                sampler.set_epoch(self.epoch)
            if self.group_by_length:
                lengths = dataset.lengths.tolist()  # Python ints: the sampler sorts with them as keys
                batches = LengthGroupedBatchSampler(sampler, lengths, self.batch_size, generator=generator)
                loader = DataLoader(dataset, batch_sampler=batches, collate_fn=dataset.collate_batch)
            else:
                loader = DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                                    collate_fn=dataset.collate_batch)
            yield from loader
            del dataset, loader


class DataOrder:
    """The training batches of each epoch, and how far training has come through them: what a checkpoint holds so
    that a resumed run, even one stopped mid-epoch, trains on the batches the uninterrupted run would have, in the
    same order, with the same dropout.

    An epoch's order is drawn from the random state at its start. ``state()`` records the epoch, the batches of it
    trained on, and the random states at the epoch's start and now. After ``resume(state)``, the epoch the state
    was taken in starts again from its first random state, its loader passes over the batches already trained on,
    and the random state of the checkpoint comes back before the first new one; a state taken at an epoch's end
    only brings back the random state the next epoch starts from.
    """

    def __init__(self, datamodule: TaskData, path: str, group_by_length: bool, seed: int):
        self.datamodule = datamodule
        self.path = path
        self.group_by_length = group_by_length
        self.seed = seed
        self.epoch = 0  # the epoch under way, from 1 (validation after it reports it completed); 0 before training
        self.batches = 0  # batches of this epoch trained on, those before a resume included
        self.skip = 0  # batches of this epoch a resumed run passes over
        self.rng_epoch_start: Optional[dict[str, Any]] = None
        self.rng_at_checkpoint: Optional[dict[str, Any]] = None
        self.resumed: Optional[dict[str, Any]] = None  # a checkpoint's state(), until the next epoch begins

    def begin_epoch(self, epoch: int) -> None:
        """pymarlin's epoch ``epoch`` (from 0) begins: its random state is fixed (a resumed one's restored)."""
        self.epoch = epoch + 1
        resumed, self.resumed = self.resumed, None
        self.skip = 0
        if resumed and resumed["epoch"] == epoch and resumed["batches"]:
            # mid-epoch: the epoch's data order again, then its first batches passed over
            set_rng_state(resumed["rng_epoch_start"])
            self.skip = resumed["batches"]
            self.rng_at_checkpoint = resumed["rng"]
            logger.info(f"Resuming epoch {self.epoch} after its first {self.skip} batches")
        elif resumed:
            set_rng_state(resumed["rng"])
        self.batches = self.skip
        self.rng_epoch_start = rng_state()

    def loader(self, sampler: Callable[..., Sampler], batch_size: int,
               max_batches: Optional[int] = None) -> FilesGenDataloader:
        """This epoch's batches (``sampler``: the class pymarlin passes). ``max_batches``, the batches a step cap
        allows the whole epoch, limits a resumed epoch to those it has left: pymarlin counts the cap again from
        the resume."""
        return FilesGenDataloader(self.datamodule, self.path, batch_size, sampler,
                                  group_by_length=self.group_by_length, skip_batches=self.skip,
                                  on_resumed=self._restore_checkpoint_rng if self.skip else None,
                                  epoch=self.epoch, seed=self.seed,
                                  max_batches=max_batches - self.skip if self.skip and max_batches else None)

    def _restore_checkpoint_rng(self) -> None:
        set_rng_state(self.rng_at_checkpoint)

    def count_batch(self) -> None:
        """One more batch trained on."""
        self.batches += 1

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch - 1, "batches": self.batches, "rng_epoch_start": self.rng_epoch_start,
                "rng": rng_state()}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``state()`` when the next epoch begins."""
        self.resumed = state


class FilesDictDataloader:
    """One validation (or prediction) ``DataLoader`` per feature file under ``path``, keyed by file name; batches
    longest first (``LengthOrderedBatchSampler``), or in file order with ``by_length=False``."""

    def __init__(self, datamodule: TaskData, path: str, by_length: bool = True):
        self.datamodule = datamodule
        self.files = feature_files(path)
        self.by_length = by_length

    def get_dataloaders(self, sampler: Callable[..., Sampler], batch_size: int) -> dict[str, DataLoader]:
        """``sampler``: the class pymarlin passes (``SequentialSampler``, or a ``DistributedSampler`` under DDP)."""
        loaders = {}
        for file in self.files:
            dataset = self.datamodule.get_val_dataset(file)
            if self.by_length:
                batches = LengthOrderedBatchSampler(sampler(dataset), dataset.lengths.tolist(), batch_size)
                loader = DataLoader(dataset, batch_sampler=batches, collate_fn=dataset.collate_batch)
            else:
                loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler(dataset),
                                    collate_fn=dataset.collate_batch)
            loaders[os.path.basename(file)] = loader
        return loaders
