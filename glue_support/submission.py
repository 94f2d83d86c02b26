"""GLUE leaderboard files: written from a model's test predictions (``<output_dir>/submission/RTE.tsv``, ...) or
from a training set's majority class, checked the way the leaderboard reads them, and zipped.

Loads no torch, so neither does ``benchmark.py --check_submission``.
"""
from __future__ import annotations

import difflib
import itertools
import lzma
import math
import os
import struct
import zipfile
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Optional

from glue_processors import TASKS, GlueProcessor, TaskSpec, get_task
from glue_support.atomic_write import atomic_path
from glue_support.marlin import getlogger
from glue_support.path_checks import require_regular_file

if TYPE_CHECKING:
    import torch

logger = getlogger(__name__)

HEADER = "index\tprediction"  # the first line of every leaderboard file
LISTED = 10  # problems of one kind listed per file; the rest are counted in one line
# How much of a file is read, whatever it inflates to: the header, its official rows and EXTRA_LINES more lines
# (reported row by row), each line up to twice as wide as the widest row the leaderboard takes
EXTRA_LINES = 1000
SCORE_WIDTH = 24  # the longest float Python writes: -1.2345678901234567e-308
CHUNK = 1 << 20  # bytes read at a time
DIRECTORY_BYTES = 1 << 16  # a zip's directory read at most (zipfile holds all of it): the 11 files' take 1 KiB


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

    @property
    def max_lines(self) -> int:
        """The lines read at most: the header, the official rows and ``EXTRA_LINES`` more."""
        return self.rows + 1 + EXTRA_LINES

    @property
    def max_bytes(self) -> int:
        """The bytes read at most: ``max_lines`` lines, each twice as wide as the widest row the leaderboard takes
        (the last index, a tab, the longest label or a score, CRLF)."""
        labels = self.spec.trained_as.labels
        widest = len(str(self.rows - 1)) + 1 + (max(map(len, labels)) if labels else SCORE_WIDTH) + 2
        return self.max_lines * 2 * widest


class Unreadable(ValueError):
    """A leaderboard file that cannot be read, or not within the bounds of its rows: a problem of the submission,
    listed with the others."""


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
    and its line where it has one; [] for a submission ready to upload. Every file is read within the bounds of
    its official rows (``LeaderboardFile.max_bytes``), a zip member before and while it is unzipped. A path that
    is not a folder or a regular file raises ValueError, one that cannot be read OSError."""
    files = leaderboard_files()
    if os.path.isdir(path):
        problems = [unexpected(shown_path(path, name), name, files) for name in sorted(os.listdir(path))
                    if name not in files]
        return problems + check_files(path, folder_reader(path))
    with open(require_regular_file(path, "a leaderboard zip, or a folder of its files"), "rb") as stream:
        directory = directory_bytes(stream)
        if directory is not None and directory > DIRECTORY_BYTES:
            return [f"{path}: a zip whose directory declares {directory} bytes of entries, expected the leaderboard's "
                    f"{len(files)} files (at most {DIRECTORY_BYTES} bytes of directory are read)"]
        try:
            archive = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as error:
            return [f"{path}: neither a zip file nor a folder ({error})"]
        with archive:
            counts = Counter(info.filename for info in archive.infolist() if not info.filename.endswith("/"))
            problems = []
            for name, count in counts.items():
                where = shown_path(path, name)
                if "/" in name:
                    problems.append(f"{where}: inside a folder of the zip; the leaderboard reads only the files at its "
                                    "top level (zip the files, not their folder)")
                elif name not in files:
                    problems.append(unexpected(where, name, files))
                elif count > 1:
                    problems.append(f"{where}: {count} files of this name in the zip; it needs one")
            return problems + check_files(path, member_reader(path, archive, counts))


def shown_path(path: str, name: str) -> str:
    """``path/name`` for a message, a name with a line break or another unprintable character escaped: each
    problem stays on one line."""
    return os.path.join(path, name if name.isprintable() else name.encode("unicode_escape").decode("ascii"))


def directory_bytes(stream: BinaryIO) -> Optional[int]:
    """The size of a zip's central directory as its end record declares it (its zip64 record's, where it has
    one): what ``zipfile`` reads whole, then holds an entry for every 46 bytes of, before anything can be checked.
    None where there is no end record (not a zip: ``zipfile`` says so)."""
    end_size, locator_size, zip64_size = 22, 20, 56
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - end_size - (1 << 16) - locator_size - zip64_size))  # a comment < 64 KiB
    tail = stream.read()
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) - end < end_size:
        return None
    declared = struct.unpack_from("<I", tail, end + 12)[0]
    zip64 = end - locator_size - zip64_size
    if zip64 >= 0 and tail[end - locator_size:end - locator_size + 4] == b"PK\x06\x07" and \
            tail[zip64:zip64 + 4] == b"PK\x06\x06":
        declared = max(declared, struct.unpack_from("<Q", tail, zip64 + 40)[0])
    return declared


def read_bounded(stream: BinaryIO, where: str, entry: LeaderboardFile) -> bytes:
    """The bytes of one leaderboard file from ``stream``, read a chunk at a time and stopped (``Unreadable``) past
    ``entry.max_bytes`` or ``entry.max_lines``: however far it inflates, no more than that is held."""
    chunks, size, lines = [], 0, 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        lines += chunk.count(b"\n")
        if size > entry.max_bytes or lines > entry.max_lines:
            found = f"more than {entry.max_bytes} bytes" if size > entry.max_bytes else \
                f"more than {entry.max_lines} lines"
            raise Unreadable(f"{where}: {found}, expected the header and the {entry.rows} rows of the official "
                             f"{entry.what} set; not read further")
        chunks.append(chunk)
    return b"".join(chunks)


def member_reader(path: str, archive: zipfile.ZipFile, counts: Counter[str]
                  ) -> Callable[[LeaderboardFile], Optional[bytes]]:
    """``check_files``'s ``read`` for the members of the zip at ``path``: each checked before it is unzipped (not
    encrypted, a compression method zipfile reads, a declared size within ``max_bytes``), then unzipped within
    that bound (``read_bounded``), its CRC checked."""
    def read(entry: LeaderboardFile) -> Optional[bytes]:
        if entry.name not in counts:
            return None
        info, where = archive.getinfo(entry.name), os.path.join(path, entry.name)
        if info.flag_bits & 0x1:
            raise Unreadable(f"{where}: encrypted, expected a zip without a password (the leaderboard cannot open it)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise Unreadable(f"{where}: compression method {info.compress_type}, which cannot be unzipped here; "
                             "expected deflate, as zip programs write by default")
        if info.file_size > entry.max_bytes:
            raise Unreadable(f"{where}: {info.file_size} bytes once unzipped, expected at most {entry.max_bytes} for "
                             f"the header and the {entry.rows} rows of the official {entry.what} set; not unzipped")
        try:
            with archive.open(info) as member:
                return read_bounded(member, where, entry)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, RuntimeError, NotImplementedError,
                UnicodeDecodeError) as error:  # a damaged member: its header, its data or its CRC
            raise Unreadable(f"{where}: cannot be read from the zip ({error})") from None
    return read


def unexpected(where: str, name: str, files: dict[str, LeaderboardFile]) -> str:
    """The problem of a file that is none of the leaderboard's, with the name it most likely meant."""
    close = difflib.get_close_matches(name.lower(), [known.lower() for known in files], n=1, cutoff=0.6)
    hint = f"; did you mean {next(known for known in files if known.lower() == close[0])}?" if close else ""
    return f"{where}: not one of the leaderboard's {len(files)} files{hint}"


def folder_reader(folder: str) -> Callable[[LeaderboardFile], Optional[bytes]]:
    """``check_files``'s ``read`` for the files of ``folder``: each a regular file, read within its bound."""
    def read(entry: LeaderboardFile) -> Optional[bytes]:
        path = os.path.join(folder, entry.name)
        if not os.path.exists(path):
            return None
        try:
            require_regular_file(path, f"the {entry.what} predictions")
        except ValueError as error:
            raise Unreadable(str(error)) from None
        with open(path, "rb") as stream:
            return read_bounded(stream, path, entry)
    return read


def check_files(path: str, read: Callable[[LeaderboardFile], Optional[bytes]]) -> list[str]:
    """The problems of each leaderboard file of the submission at ``path``; ``read``: a file's bytes, None for one
    that is not there, ``Unreadable`` for one that cannot be read within its bounds."""
    problems = []
    for name, entry in leaderboard_files().items():
        where = os.path.join(path, name)
        try:
            raw = read(entry)
        except Unreadable as problem:
            problems.append(str(problem))
            continue
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
    lines = text_lines(text)
    header = next(lines)
    first = 1  # the line of the first row
    if header != HEADER:
        if header.partition("\t")[0].isdigit():
            first = 0
            lines = itertools.chain([header], lines)
            problems.append(f"{where}, line 1: a row where the header {HEADER!r} belongs")
        else:
            problems.append(f"{where}, line 1: header {header!r}, expected {HEADER!r}")

    listed: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()

    def add(kind: str, line: Optional[int], message: str) -> None:
        counts[kind] += 1
        if counts[kind] <= LISTED:
            listed.setdefault(kind, []).append(f"{where}{'' if line is None else f', line {line}'}: {message}")

    labels = entry.spec.trained_as.labels
    lines_of = array("i", [0]) * entry.rows  # index -> the line that first held it, 0 for none yet
    beyond: dict[int, int] = {}  # the same for indexes out of range
    previous: Optional[tuple[int, int]] = None  # the last row's index and line
    number = first  # the last line read
    for number, line in enumerate(lines, start=first + 1):
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
            seen = lines_of[index] if index < entry.rows else beyond.get(index, 0)
            if seen:
                add("repeated indexes", number, f"index {index} repeats line {seen}'s")
            elif index >= entry.rows:
                add("indexes out of range", number, f"index {index} is outside 0-{entry.rows - 1} (the official "
                                                    f"{entry.what} set has {entry.rows} rows)")
                beyond[index] = number
            else:
                if previous is not None and index < previous[0]:
                    add("rows out of order", number, f"index {index} comes after index {previous[0]} (line "
                                                     f"{previous[1]}); rows go in index order")
                lines_of[index] = number
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
    if number - first != entry.rows:
        problems.append(f"{where}: {number - first} rows, expected {entry.rows} (the official {entry.what} set)")
    for index in range(entry.rows):
        if not lines_of[index]:
            add("missing indexes", None, f"no row with index {index} (line {index + 2})")
    for kind, messages in listed.items():
        problems += messages
        if counts[kind] > LISTED:
            problems.append(f"{where}: {counts[kind] - LISTED} more {kind}")
    return problems


def text_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (``split`` would hold them all), cut at "\\n" with a "\\r" before it
    dropped, and no empty line after the final newline."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end].removesuffix("\r")
        start = end + 1
    if text[start:].removesuffix("\r"):
        yield text[start:].removesuffix("\r")


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
