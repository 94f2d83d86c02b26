"""GLUE leaderboard files: written from a model's test predictions (``<output_dir>/submission/RTE.tsv``, ...) or
from a training set's majority class, checked the way the leaderboard reads them, and zipped.

Loads no torch, so neither does ``benchmark.py --check_submission``.
"""
from __future__ import annotations

import difflib
import math
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from glue_processors import TASKS, GlueProcessor, TaskSpec, get_task
from glue_support.atomic_write import atomic_path
from glue_support.marlin import getlogger

if TYPE_CHECKING:
    import torch

logger = getlogger(__name__)

HEADER = "index\tprediction"  # the first line of every leaderboard file
LISTED = 10  # problems of one kind listed per file; the rest are counted in one line


class SubmissionWriter:
    """Writes the submission file of each test features file from the model's outputs on it.

    ``spec`` is the task the model was fine-tuned for (AX is predicted by an MNLI model, with MNLI's labels);
    ``test_features`` holds each test file's metadata by file name. Under DDP every process predicts, and only
    the main process writes. ``written``: test file name -> submission file.
    """

    def __init__(self, spec: TaskSpec, test_features: dict[str, dict[str, Any]], output_dir: str,
                 is_main_process: bool):
        self.spec = spec
        self.test_features = test_features
        self.output_dir = output_dir
        self.is_main_process = is_main_process
        self.written: dict[str, str] = {}

    def write(self, key: str, logits: torch.Tensor, indexes: torch.Tensor) -> str:
        """The submission file of test file ``key``: one row per example in index order (``indexes`` sorted, each
        once); label names for classification, scores clipped to 0-5 for STS-B."""
        metadata = self.test_features[key]
        spec = get_task(metadata["task"])
        if len(indexes) != metadata["count"]:
            raise RuntimeError(f"{key}: {len(indexes)} of its {metadata['count']} examples were predicted "
                               "(trainer.max_val_steps_per_epoch limits prediction too); no submission written")
        logits = logits.float().cpu()
        if self.spec.is_regression:
            predictions = [f"{score:.3f}" for score in logits.squeeze(-1).clamp(0.0, 5.0).tolist()]
        else:
            predictions = [self.spec.labels[label] for label in logits.argmax(dim=-1).tolist()]
        path = os.path.join(self.output_dir, "submission", spec.submission_file(metadata["set_type"]))
        self.written[key] = path
        if not self.is_main_process:
            return path
        write_predictions(path, indexes.tolist(), predictions)
        logger.info(f"Wrote {len(predictions)} {spec.name} {metadata['set_type']} predictions to {path}")
        return path


def write_predictions(path: str, indexes: Iterable[int], predictions: Iterable[str]) -> None:
    """A leaderboard file at ``path``, atomically: the header, then ``index<TAB>prediction`` per row as given."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="\n") as stream:
        stream.write(f"{HEADER}\n")
        stream.writelines(f"{index}\t{prediction}\n" for index, prediction in zip(indexes, predictions))


@dataclass(frozen=True)
class LeaderboardFile:
    """One file of the leaderboard's zip: the task and test set it predicts, and that set's official row count."""

    name: str
    spec: TaskSpec
    set_type: str
    rows: int

    @property
    def what(self) -> str:
        return f"{self.spec.name} {self.set_type}"


def leaderboard_files() -> dict[str, LeaderboardFile]:
    """The files the leaderboard takes, by name, in the task table's order (AX's two set types, ``test`` and
    ``diagnostic``, are one file under two names: one entry)."""
    files: dict[str, LeaderboardFile] = {}
    for spec in TASKS.values():  # a row without official test row counts is not on the leaderboard
        for set_type, rows in zip(spec.test_set_types, spec.test_rows) if spec.test_rows else ():
            name = spec.submission_file(set_type)
            files.setdefault(name, LeaderboardFile(name, spec, set_type, rows))
    return files


def check_submission(path: str) -> list[str]:
    """Every problem the leaderboard would refuse (or score wrongly) in the submission at ``path``, a zip or a
    folder: missing, unexpected or misplaced files, then each file's own (``check_file``). Each names its file,
    and its line where it has one; [] for a submission ready to upload. A path that cannot be read raises
    OSError."""
    files = leaderboard_files()
    if os.path.isdir(path):
        problems = [unexpected(os.path.join(path, name), name, files) for name in sorted(os.listdir(path))
                    if name not in files]
        return problems + check_files(path, folder_reader(path))
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        return [f"{path}: neither a zip file nor a folder ({error})"]
    with archive:
        counts = Counter(info.filename for info in archive.infolist() if not info.is_dir())
        problems = []
        for name, count in counts.items():
            where = os.path.join(path, name)
            if "/" in name:
                problems.append(f"{where}: inside a folder of the zip; the leaderboard reads only the files at its top "
                                "level (zip the files, not their folder)")
            elif name not in files:
                problems.append(unexpected(where, name, files))
            elif count > 1:
                problems.append(f"{where}: {count} files of this name in the zip; it needs one")

        def read(name: str) -> Optional[bytes]:
            try:
                return archive.read(name) if name in counts else None
            except zipfile.BadZipFile as error:  # a damaged member: its CRC or its header
                raise ValueError(f"{os.path.join(path, name)}: cannot be read from the zip ({error})") from None

        return problems + check_files(path, read)


def unexpected(where: str, name: str, files: dict[str, LeaderboardFile]) -> str:
    """The problem of a file that is none of the leaderboard's, with the name it most likely meant."""
    close = difflib.get_close_matches(name.lower(), [known.lower() for known in files], n=1, cutoff=0.6)
    hint = f"; did you mean {next(known for known in files if known.lower() == close[0])}?" if close else ""
    return f"{where}: not one of the leaderboard's {len(files)} files{hint}"


def folder_reader(folder: str) -> Callable[[str], Optional[bytes]]:
    """``check_files``'s ``read`` for the files of ``folder``."""
    def read(name: str) -> Optional[bytes]:
        if not os.path.isfile(os.path.join(folder, name)):
            return None
        with open(os.path.join(folder, name), "rb") as stream:
            return stream.read()
    return read


def check_files(path: str, read: Callable[[str], Optional[bytes]]) -> list[str]:
    """The problems of each leaderboard file of the submission at ``path``; ``read``: a file's bytes by name, None
    for one that is not there."""
    problems = []
    for name, entry in leaderboard_files().items():
        raw = read(name)
        where = os.path.join(path, name)
        if raw is None:
            problems.append(f"{where}: missing (the {entry.what} predictions)")
        else:
            problems += check_file(where, raw, entry)
    return problems


def check_file(where: str, raw: bytes, entry: LeaderboardFile) -> list[str]:
    """The problems of one leaderboard file's bytes, ``where`` being its name in messages: it must be UTF-8, start
    with the header, then hold one ``index<TAB>prediction`` row per test example with the indexes 0 to rows - 1
    in order, and predictions among the labels of the task whose model predicts it (AX: MNLI's), or STS-B scores
    in 0-5. A systematic problem (every row of QQP) is listed for its first ``LISTED`` rows, then counted."""
    if not raw.strip():
        return [f"{where}: empty file; expected the header {HEADER!r} and {entry.rows} rows"]
    problems = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        problems.append(f"{where}, line {line}: bytes that are not UTF-8 ({error.reason}); the leaderboard reads UTF-8")
        text = raw.decode("utf-8", errors="replace")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines[-1] == "":
        lines.pop()  # the final newline
    first = 1  # the line of the first row
    if lines[0] != HEADER:
        if lines[0].partition("\t")[0].isdigit():
            first = 0
            problems.append(f"{where}, line 1: a row where the header {HEADER!r} belongs")
        else:
            problems.append(f"{where}, line 1: header {lines[0]!r}, expected {HEADER!r}")
    rows = lines[first:]
    if len(rows) != entry.rows:
        problems.append(f"{where}: {len(rows)} rows, expected {entry.rows} (the official {entry.what} set)")

    listed: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()

    def add(kind: str, line: Optional[int], message: str) -> None:
        counts[kind] += 1
        if counts[kind] <= LISTED:
            listed.setdefault(kind, []).append(f"{where}{'' if line is None else f', line {line}'}: {message}")

    labels = entry.spec.trained_as.labels
    lines_of: dict[int, int] = {}  # index -> the line that first held it
    previous: Optional[tuple[int, int]] = None  # the last row's index and line
    for number, line in enumerate(rows, start=first + 1):
        fields = line.split("\t")
        if len(fields) != 2:
            found = "a blank line" if not line.strip() else f"{len(fields)} tab-separated fields"
            add("malformed rows", number, f"{found}, expected 2: index<TAB>prediction")
            continue
        value, prediction = fields
        if not (value.isascii() and value.isdigit()):
            add("indexes that are not row numbers", number, f"index {value!r} is not a row number (0, 1, ...)")
        else:
            index = int(value)
            if index in lines_of:
                add("repeated indexes", number, f"index {index} repeats line {lines_of[index]}'s")
            elif index >= entry.rows:
                add("indexes out of range", number, f"index {index} is outside 0-{entry.rows - 1} (the official "
                                                    f"{entry.what} set has {entry.rows} rows)")
            elif previous is not None and index < previous[0]:
                add("rows out of order", number, f"index {index} comes after index {previous[0]} (line {previous[1]}); "
                                                 "rows go in index order")
            lines_of.setdefault(index, number)
            previous = (index, number)
        if labels is None:
            try:
                score = float(prediction)
            except ValueError:
                score = math.nan
            if not 0.0 <= score <= 5.0:  # also refuses nan and inf
                add("predictions that are not scores in 0-5", number, f"prediction {prediction!r} is not a score 0-5")
        elif prediction not in labels:
            model = "" if entry.spec.trained_as is entry.spec else f" ({entry.spec.trained_as.name}'s labels)"
            add("predictions outside the labels", number,
                f"prediction {prediction!r} is not one of {', '.join(labels)}{model}")
    for index in range(entry.rows):
        if index not in lines_of:
            add("missing indexes", None, f"no row with index {index} (line {index + 2})")
    for kind, messages in listed.items():
        problems += messages
        if counts[kind] > LISTED:
            problems.append(f"{where}: {counts[kind] - LISTED} more {kind}")
    return problems


def write_zip(folder: str, zip_path: str) -> None:
    """The leaderboard's zip at ``zip_path`` (atomically), its files at the top level, from ``folder`` (other
    files there are left out). Nothing is written if any file is missing (ValueError naming them all) or has a
    problem (ValueError with the first; ``benchmark.py --check_submission <folder>`` lists them all)."""
    files = leaderboard_files()
    missing = [name for name in files if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ValueError(f"{zip_path} not written: {folder} lacks {len(missing)} of the leaderboard's {len(files)} "
                         f"files: {', '.join(f'{name} ({files[name].what})' for name in missing)}")
    problems = check_files(folder, folder_reader(folder))
    if problems:
        raise ValueError(f"{zip_path} not written: {len(problems)} problems in {folder}, the first: {problems[0]}; "
                         f"python benchmark.py --check_submission {folder} lists them all")
    with atomic_path(zip_path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(os.path.join(folder, name), name)
    logger.info(f"Wrote the leaderboard's {len(files)} files to {zip_path}")


def write_majority_class(spec: TaskSpec, input_dir: str, output_dir: str) -> list[str]:
    """``spec``'s leaderboard files without a model: every row of each test file in ``input_dir`` predicted as the
    most frequent label of its ``train.tsv``, in index order, into ``<output_dir>/submission/``. What BERT
    submitted for WNLI, whose test set no fine-tuned model of its time scored above its majority class. A tie
    goes to the label listed first in the task table (WNLI: ``0``). The files written."""
    if spec.is_regression or spec.labeled is None:
        raise ValueError(f"{spec.name} has no training labels to take a majority class from")
    counts = Counter(example.label for example in GlueProcessor(spec.name).process(input_dir, "train"))
    majority = max(spec.labels, key=counts.__getitem__)  # the first of the most frequent: the tie-break
    paths = []
    for set_type in spec.test_set_types:
        indexes = sorted(example.index for example in GlueProcessor(spec.name).process(input_dir, set_type))
        paths.append(os.path.join(output_dir, "submission", spec.submission_file(set_type)))
        write_predictions(paths[-1], indexes, [majority] * len(indexes))
        logger.info(f"{spec.name} {set_type}: {len(indexes)} rows of {majority!r}, the majority class of train.tsv "
                    f"({', '.join(f'{label}: {counts[label]}' for label in spec.labels)}), in {paths[-1]}")
    return paths
