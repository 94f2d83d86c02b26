"""The GLUE task table (``TASKS``, one row per task) and the reader of GLUE files (TSV -> ``InputExample`` s).

Everything the code knows about a task is its row: every script reads it, so adding a task is one edit. The cheap
commands read the table too, so this module imports neither torch nor transformers, and of the project only the
check every file read goes through (``glue_support.path_checks``).
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import numpy as np

from glue_support.path_checks import require_regular_file


@dataclass(slots=True)
class InputExample:
    """One row of a GLUE file. ``label`` is None for test files; ``index`` is the row's own id
    (test files number their rows, and predictions must be written back in that order)."""

    text_a: str
    text_b: Optional[str]
    label: Optional[str]
    index: int


@dataclass
class InputFeatures:
    """One tokenized example. Ids are unpadded int32 arrays (read from a features file: views into its
    ``FeatureTable``); batches are padded when they are built (``TaskDataset.collate_batch``: to the longest
    member, or to ``max_seq_len``). ``label`` is a class id, a float score for STS-B, or None for test data."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    label: Optional[Union[int, float]]
    index: int


@dataclass
class FeatureTable:
    """The features of many examples as five flat arrays: a few large arrays pickle, load and sit in memory
    at the cost of their bytes, where one ``InputFeatures`` per example costs its object overhead (several times
    its ids: bench/RESULTS.md, finding 2) and a pickling round trip each.

    Example ``i`` is ``input_ids[offsets[i]:offsets[i + 1]]``. ``token_type_ids`` are stored, aligned with the
    ids, rather than derived from a first-segment length: one byte per token (a fifth of the ids) keeps every
    example a zero-copy slice and holds whatever the tokenizer's template gives (all zeros for RoBERTa pairs,
    segment 2 on XLNet's final [CLS]), with no assumption about it. ``labels`` are int64 class ids, float32
    scores (STS-B), or None for test files."""

    COLUMNS = ("input_ids", "token_type_ids", "offsets", "labels", "indexes")  # the order ``checksum`` hashes

    input_ids: np.ndarray  # int32, every example's ids end to end
    token_type_ids: np.ndarray  # int8, aligned with input_ids
    offsets: np.ndarray  # int64, one more than there are examples; offsets[0] == 0
    labels: Optional[np.ndarray]
    indexes: np.ndarray  # int64, each example's row id (InputExample.index)

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, i: int) -> InputFeatures:
        """Example ``i`` (negative counts from the end) with views into the table's arrays, not copies."""
        count = len(self)
        if not -count <= i < count:
            raise IndexError(f"feature {i} out of range: the table holds {count}")
        i %= count
        start, end = self.offsets[i], self.offsets[i + 1]
        return InputFeatures(input_ids=self.input_ids[start:end], token_type_ids=self.token_type_ids[start:end],
                             label=None if self.labels is None else self.labels[i].item(),
                             index=int(self.indexes[i]))

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example, from the offsets (no copy of the ids)."""
        return np.diff(self.offsets)

    @classmethod
    def concatenate(cls, tables: list["FeatureTable"]) -> "FeatureTable":
        """One table holding the examples of ``tables`` in order (shards, or one table per tokenizer batch)."""
        if not tables:
            raise ValueError("no feature tables to concatenate")
        if len(tables) == 1:
            return tables[0]
        if len({table.labels is None for table in tables}) > 1:
            raise ValueError("cannot concatenate labeled features with unlabeled (test) ones")
        starts = np.cumsum([0] + [len(table.input_ids) for table in tables[:-1]])
        return cls(
            input_ids=np.concatenate([table.input_ids for table in tables]),
            token_type_ids=np.concatenate([table.token_type_ids for table in tables]),
            offsets=np.concatenate([[0]] + [table.offsets[1:] + start for table, start in zip(tables, starts)]),
            labels=None if tables[0].labels is None else np.concatenate([table.labels for table in tables]),
            indexes=np.concatenate([table.indexes for table in tables]),
        )

    def check(self) -> None:
        """Raise ValueError unless the arrays fit together as ``data.py`` writes them: a table read from a
        file is checked once, so indexing it later cannot go out of bounds or hand out wrong dtypes."""
        if set(vars(self)) != set(self.COLUMNS):  # unpickling sets whatever fields the file names, bytes ones too
            raise ValueError(f"a table with fields {', '.join(map(str, vars(self)))}, expected "
                             f"{', '.join(self.COLUMNS)}")
        columns = {"input_ids": (self.input_ids, (np.int32,)), "token_type_ids": (self.token_type_ids, (np.int8,)),
                   "offsets": (self.offsets, (np.int64,)), "indexes": (self.indexes, (np.int64,))}
        if self.labels is not None:
            columns["labels"] = (self.labels, (np.int64, np.float32))
        for name, (column, dtypes) in columns.items():
            if not isinstance(column, np.ndarray) or column.ndim != 1 or column.dtype not in dtypes:
                raise ValueError(f"{name} is not a 1-D array of {' or '.join(np.dtype(d).name for d in dtypes)}")
        count = len(self.indexes)
        if len(self.offsets) != count + 1 or (self.labels is not None and len(self.labels) != count):
            raise ValueError(f"{count} indexes, {len(self.offsets)} offsets, "
                             f"{'no' if self.labels is None else len(self.labels)} labels: the columns disagree")
        if len(self.token_type_ids) != len(self.input_ids):
            raise ValueError(f"{len(self.input_ids)} input ids but {len(self.token_type_ids)} token type ids")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.input_ids) or (np.diff(self.offsets) < 0).any():
            raise ValueError("offsets do not cut input_ids into consecutive examples")
        ordered = np.sort(self.indexes)
        repeats = ordered[1:][ordered[1:] == ordered[:-1]]
        if repeats.size:  # predictions and scores are keyed by index: a repeat would be scored once
            raise ValueError(f"index {repeats[0]} is on more than one example; every example needs its own index")

    def checksum(self) -> str:
        """SHA-256 of the arrays, as ``data.py`` records it: per column in ``COLUMNS`` order, its name, dtype and
        length, then its bytes (absent labels: a marker), so a changed byte, a swapped column or an array read
        with another dtype all change it. Call ``check`` first: it hashes 1-D numpy arrays."""
        digest = hashlib.sha256()
        for name in self.COLUMNS:
            column = getattr(self, name)
            if column is None:
                digest.update(f"{name}:none;".encode())
                continue
            digest.update(f"{name}:{column.dtype.str}:{len(column)};".encode())
            digest.update(np.ascontiguousarray(column))
        return digest.hexdigest()


@dataclass(frozen=True)
class Columns:
    """Zero-based columns of one file layout; negative numbers count from the end of the row."""

    text_a: int
    text_b: Optional[int]
    label: Optional[int]
    index: Optional[int]
    header: bool = True
    width: Optional[int] = None  # the column count, for files without a header

    @property
    def min_width(self) -> int:
        """The fewest columns a row can have and still hold every column this layout reads."""
        used = [column for column in (self.text_a, self.text_b, self.label, self.index) if column is not None]
        return max(column + 1 if column >= 0 else -column for column in used)


GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
SENTEVAL_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/"


@dataclass(frozen=True)
class Download:
    """Where ``download_glue.py`` gets one task's files (the URLs of the GLUE authors' ``download_glue_data.py``)
    and what the download must hold."""

    folder: str  # under data_dir
    kind: str  # "zip": one archive; "tsv": one file, saved as files[0]; "mrpc": built from the MSR corpus
    downloads: tuple[tuple[str, str], ...]  # (official file name, official folder URL)
    files: tuple[str, ...]  # the files checked (and checksummed) in <data_dir>/<folder>/


def _zip(folder: str, archive: str, stems: tuple[str, ...] = ("train", "dev", "test")) -> Download:
    """A task published as one GLUE zip holding ``<folder>/<stem>.tsv`` for each of ``stems``."""
    return Download(folder, "zip", ((archive, GLUE_URL),), tuple(f"{stem}.tsv" for stem in stems))


@dataclass(frozen=True)
class TaskSpec:
    """Everything the code knows about one GLUE task: one row of ``TASKS``."""

    name: str
    labels: Optional[tuple[str, ...]]  # None: regression (STS-B)
    labeled: Optional[Columns]  # train and dev files
    test: Columns
    metric: str  # the function of glue_metrics.METRICS that scores the task
    metric_label: str  # the metric(s) as the scoreboard heads them: "MCC", "F1/acc", ...
    hf_name: str  # Hugging Face's `glue` name and benchmark.yaml's group: --stsb.epochs (a dash dies in argparse)
    download: Download
    aliases: tuple[str, ...] = ()  # further names download_glue.py takes (download_glue_data.py's sst, sts, ...)
    set_types: tuple[str, ...] = ("train", "dev", "test")
    test_set_types: tuple[str, ...] = ("test",)
    submissions: tuple[str, ...] = ()  # leaderboard file stem per test set type; () = the task name
    test_rows: tuple[int, ...] = ()  # the official test file's row count per test set type: its leaderboard file's
    model_task: Optional[str] = None  # the task whose models predict it (AX: MNLI); None = itself

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def dev_set_types(self) -> tuple[str, ...]:
        """The labeled validation files: ``dev`` (MNLI: ``dev_matched`` and ``dev_mismatched``; AX: none)."""
        return tuple(name for name in self.set_types if name != "train" and name not in self.test_set_types)

    @property
    def scored_files(self) -> tuple[str, ...]:
        """The validation files the task's GLUE score is taken on (every labeled dev file), named as data.py names
        features: ``<set_type>.tsv``."""
        return tuple(f"{set_type}.tsv" for set_type in self.dev_set_types)

    @property
    def trained_as(self) -> "TaskSpec":
        """The task a model must be fine-tuned on to predict this one (itself, except AX: MNLI)."""
        return get_task(self.model_task) if self.model_task else self

    def submission_file(self, set_type: str) -> str:
        """The GLUE leaderboard's file name for predictions on ``set_type`` (``MNLI-m.tsv``, ``AX.tsv``, ...)."""
        if set_type not in self.test_set_types:
            raise ValueError(f"{self.name} {set_type} is not a test set; the leaderboard takes predictions on "
                             f"{', '.join(self.test_set_types)}")
        stems = self.submissions or (self.name,)
        return f"{stems[self.test_set_types.index(set_type)]}.tsv"


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("contradiction", "entailment", "neutral")
_PAIR_BY_INDEX = Columns(text_a=1, text_b=2, label=None, index=0)
_MNLI_FILES = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")

TASKS: dict[str, TaskSpec] = {
    spec.name.lower(): spec
    for spec in (
        TaskSpec(
            "CoLA", _BINARY,
            labeled=Columns(text_a=3, text_b=None, label=1, index=None, header=False, width=4),
            test=Columns(text_a=1, text_b=None, label=None, index=0),
            metric="matthews_correlation", metric_label="MCC", hf_name="cola", download=_zip("CoLA", "CoLA.zip"),
            test_rows=(1063,),
        ),
        TaskSpec(
            "SST-2", _BINARY,
            labeled=Columns(text_a=0, text_b=None, label=1, index=None),
            test=Columns(text_a=1, text_b=None, label=None, index=0),
            metric="accuracy", metric_label="acc", hf_name="sst2", download=_zip("SST-2", "SST-2.zip"),
            aliases=("sst",), test_rows=(1821,),
        ),
        TaskSpec(
            "MRPC", _BINARY,
            labeled=Columns(text_a=3, text_b=4, label=0, index=None),
            test=Columns(text_a=3, text_b=4, label=None, index=0),
            metric="accuracy_and_f1", metric_label="F1/acc", hf_name="mrpc",
            download=Download("MRPC", "mrpc", (("msr_paraphrase_train.txt", SENTEVAL_URL),
                                               ("msr_paraphrase_test.txt", SENTEVAL_URL),
                                               ("mrpc_dev_ids.tsv", GLUE_URL)), ("train.tsv", "dev.tsv", "test.tsv")),
            test_rows=(1725,),
        ),
        TaskSpec(
            "STS-B", None,
            labeled=Columns(text_a=7, text_b=8, label=-1, index=0),
            test=Columns(text_a=7, text_b=8, label=None, index=0),
            metric="correlations", metric_label="Pearson/Spearman", hf_name="stsb", download=_zip("STS-B", "STS-B.zip"),
            aliases=("sts",), test_rows=(1379,),
        ),
        TaskSpec(
            "QQP", _BINARY,
            labeled=Columns(text_a=3, text_b=4, label=5, index=0),
            test=_PAIR_BY_INDEX,
            metric="accuracy_and_f1", metric_label="acc/F1", hf_name="qqp", download=_zip("QQP", "QQP-clean.zip"),
            test_rows=(390965,),
        ),
        TaskSpec(
            "MNLI", _NLI3,
            labeled=Columns(text_a=8, text_b=9, label=-1, index=0),
            test=Columns(text_a=8, text_b=9, label=None, index=0),
            metric="accuracy", metric_label="acc (m/mm)", hf_name="mnli",
            download=_zip("MNLI", "MNLI.zip", _MNLI_FILES), set_types=_MNLI_FILES,
            test_set_types=("test_matched", "test_mismatched"),
            submissions=("MNLI-m", "MNLI-mm"), test_rows=(9796, 9847),
        ),
        TaskSpec("QNLI", _NLI2, labeled=Columns(text_a=1, text_b=2, label=3, index=0), test=_PAIR_BY_INDEX,
                 metric="accuracy", metric_label="acc", hf_name="qnli", download=_zip("QNLI", "QNLIv2.zip"),
                 test_rows=(5463,)),
        TaskSpec("RTE", _NLI2, labeled=Columns(text_a=1, text_b=2, label=3, index=0), test=_PAIR_BY_INDEX,
                 metric="accuracy", metric_label="acc", hf_name="rte", download=_zip("RTE", "RTE.zip"),
                 test_rows=(3000,)),
        TaskSpec("WNLI", _BINARY, labeled=Columns(text_a=1, text_b=2, label=3, index=0), test=_PAIR_BY_INDEX,
                 metric="accuracy", metric_label="acc", hf_name="wnli", download=_zip("WNLI", "WNLI.zip"),
                 test_rows=(146,)),
        # the diagnostic set: predicted by MNLI models, downloaded as one file into <data_dir>/diagnostic/
        TaskSpec("AX", _NLI3, labeled=None, test=_PAIR_BY_INDEX,
                 metric="matthews_correlation", metric_label="MCC", hf_name="ax",
                 download=Download("diagnostic", "tsv", (("AX.tsv", GLUE_URL),), ("diagnostic.tsv",)),
                 aliases=("diagnostic",), set_types=("test", "diagnostic"), test_set_types=("test", "diagnostic"),
                 submissions=("AX", "AX"), test_rows=(1104, 1104), model_task="MNLI"),
    )
}


def get_task(name: str) -> TaskSpec:
    """The spec of a task, by case-insensitive name; a clear error naming the known tasks otherwise."""
    try:
        return TASKS[name.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(spec.name for spec in TASKS.values())
        raise ValueError(f"unknown GLUE task {name!r}; expected one of: {known}") from None


class GlueFormatError(ValueError):
    """A GLUE file does not have the layout its task expects; the message names file and line."""


@dataclass
class GlueProcessor:
    """Reads ``<input_dir>/<set_type>.tsv`` of one task into ``InputExample`` s, with pymarlin's DataProcessor
    interface but not its class (which loads torch; reading a file needs nothing of it).

    A row that does not fit the layout (wrong column count, unknown label, bad index) is an error naming
    file and line; with ``skip_malformed`` it is reported with its line number and left out instead (the
    official QQP train file has a few rows with missing fields). An index that repeats an earlier row's is an
    error either way: it is not a malformed row to leave out, but a sign of a wrong file (two concatenated).

    ``source_bytes`` and ``source_sha256`` are the size and SHA-256 of the bytes last read, so features can
    record exactly which file they were made from."""

    task: str
    skip_malformed: bool = False
    examples: list[InputExample] = field(default_factory=list, init=False)
    skipped: list[int] = field(default_factory=list, init=False)  # line numbers of skipped rows
    skip_reasons: list[str] = field(default_factory=list, init=False)  # "<file>, line N: skipped: <why>", to log
    source_bytes: Optional[int] = field(default=None, init=False)
    source_sha256: Optional[str] = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.spec = get_task(self.task)

    def get_labels(self) -> Optional[tuple[str, ...]]:
        return self.spec.labels

    def process(self, input_dir: str, set_type: str) -> list[InputExample]:
        return list(self.stream(input_dir, set_type))

    def stream(self, input_dir: str, set_type: str) -> Iterator[InputExample]:
        """The examples one by one as the rows are parsed, so ``data.py`` tokenizes while it parses. The file is
        read and its header checked before this returns; each example is also kept in ``self.examples`` for
        ``summary``, complete once the stream is exhausted. No example at all is an error at the end."""
        if set_type not in self.spec.set_types:
            raise ValueError(
                f"task {self.spec.name} has no set_type {set_type!r}; expected one of: {', '.join(self.spec.set_types)}"
            )
        is_test = set_type in self.spec.test_set_types
        columns = self.spec.test if is_test else self.spec.labeled
        path = os.path.join(input_dir, f"{set_type}.tsv")
        self.skipped = []
        self.skip_reasons = []
        self.examples = []
        return self._read(path, set_type, columns, is_test)

    def summary(self) -> str:
        """One line on the examples read: their count and labels (or scores), and the rows skipped. The reader logs
        nothing itself (``data.py`` does): this module holds the task table, which every command imports, and
        stays free of the project's machinery."""
        if self.examples[0].label is None:
            summary = "no labels (test file)"
        elif self.spec.is_regression:
            scores = np.array([float(example.label) for example in self.examples])
            summary = f"scores mean {scores.mean():.3f}, min {scores.min():.3f}, max {scores.max():.3f}"
        else:
            counts = Counter(example.label for example in self.examples)
            summary = "labels " + ", ".join(f"{label}: {counts[label]}" for label in self.spec.labels)
        if self.skipped:
            summary += f"; {len(self.skipped)} malformed rows skipped"
        return f"{self.spec.name}: {len(self.examples)} examples; {summary}"

    def _read(self, path: str, set_type: str, columns: Columns, is_test: bool) -> Iterator[InputExample]:
        """Reads and hashes the file and checks its header now; the rows are parsed, and kept in
        ``self.examples``, as the returned iterator is consumed."""
        try:
            with open(require_regular_file(path, f"the {self.spec.name} {set_type}.tsv"), "rb") as stream:
                raw = stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file (expected the {self.spec.name} {set_type}.tsv)") from None
        self.source_bytes, self.source_sha256 = len(raw), hashlib.sha256(raw).hexdigest()  # the bytes parsed
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = error.object[: error.start].count(b"\n") + 1
            raise GlueFormatError(f"{path}, line {line}: bytes that are not UTF-8 ({error.reason})") from None
        if "\n" not in text and "\r" in text.rstrip("\r"):  # rows are cut at "\n" only: this would be one row
            raise GlueFormatError(f"{path}: its lines end in a carriage return alone (old Mac line endings), so the "
                                  "whole file reads as one line; convert them to newlines, e.g. with "
                                  f"sed -i 's/\\r/\\n/g' {path}")
        lines = text.split("\n")  # "\r" is stripped per row: CRLF files read the same
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        width = columns.width
        first = 0
        if columns.header:
            if not lines:
                raise GlueFormatError(f"{path}: empty file (expected a header line)")
            width = len(lines[0].rstrip("\r").split("\t"))
            first = 1
            if width < columns.min_width:
                raise GlueFormatError(f"{path}, line 1: the header has {width} tab-separated columns, a "
                                      f"{self.spec.name} {set_type} file has at least {columns.min_width} "
                                      "(is this file from another task?)")

        lines_of: dict[int, int] = {}  # index -> its line, for files with an index column (else: row numbers)

        def parsed() -> Iterator[InputExample]:
            for number, line in enumerate(lines[first:], start=first + 1):
                fields = line.rstrip("\r").split("\t")
                try:
                    if len(fields) != width and not line.strip():
                        raise GlueFormatError(f"blank line, expected {width} tab-separated columns for "
                                              f"{self.spec.name} {set_type}")
                    if len(fields) != width:
                        raise GlueFormatError(f"{len(fields)} tab-separated columns, expected {width} "
                                              f"for {self.spec.name} {set_type}")
                    example = InputExample(
                        text_a=fields[columns.text_a],
                        text_b=None if columns.text_b is None else fields[columns.text_b],
                        label=None if is_test else self._label(fields[columns.label]),
                        index=number - first - 1 if columns.index is None else self._index(fields[columns.index]),
                    )
                except GlueFormatError as error:
                    if not self.skip_malformed:
                        raise GlueFormatError(f"{path}, line {number}: {error} "
                                              "(--dproc.skip_malformed true leaves such rows out)") from None
                    self.skip_reasons.append(f"{path}, line {number}: skipped: {error}")
                    self.skipped.append(number)
                    continue
                if columns.index is not None:
                    self._claim_index(lines_of, example.index, number, path)
                self.examples.append(example)
                yield example
            if not self.examples:
                raise GlueFormatError(f"{path}: no data rows (expected a {self.spec.name} {set_type} file)")
        return parsed()

    def _label(self, value: str) -> str:
        if self.spec.is_regression:
            try:
                score = float(value)
            except ValueError:
                raise GlueFormatError(f"score {value!r} is not a number (expected a float 0-5)") from None
            if not 0.0 <= score <= 5.0:  # also refuses nan and inf
                raise GlueFormatError(f"score {value!r} is outside 0-5 (expected a float 0-5)")
        elif value not in self.spec.labels:
            raise GlueFormatError(f"label {value!r} is not one of {', '.join(self.spec.labels)}")
        return value

    @staticmethod
    def _claim_index(lines_of: dict[int, int], index: int, number: int, path: str) -> None:
        """Line ``number`` holds ``index``; one seen before is an error, even with ``skip_malformed``: predictions
        and scores are keyed by index, so a repeat would be scored once and the row it hides silently dropped."""
        first = lines_of.setdefault(index, number)
        if first != number:
            raise GlueFormatError(f"{path}, line {number}: index {index} repeats line {first}'s (two files "
                                  "concatenated?); every example needs its own index (an error even with "
                                  "--dproc.skip_malformed true)")

    @staticmethod
    def _index(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise GlueFormatError(f"index {value!r} is not an integer") from None
