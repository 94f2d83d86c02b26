"""Property-based tests (hypothesis) of the GLUE TSV reader, the featurizer and batch collation.

Every GLUE layout (each task's train/dev/test file, headers taken from ``tests/fixtures``) is generated with
random Unicode texts: quotes, apostrophes, backslashes, non-ASCII, emoji, empty strings and the Unicode line
separators that ``str.splitlines`` would split on (U+2028, U+0085, VT, FF, ...). Texts never hold a tab, "\\n" or
"\\r": those are the field and row separators of a GLUE file.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

import data
from conftest import FIXTURES, config_defaults
from glue_processors import (
    TASKS,
    Columns,
    FeatureTable,
    GlueFormatError,
    GlueProcessor,
    InputExample,
    InputFeatures,
    TaskSpec,
)

# ---------------------------------------------------------------------------------------------------- texts

SEPARATORS = "\t\n\r"
# Characters that tempt a reader into quoting, escaping or line splitting, but are plain text in a GLUE file.
SPECIAL = ['"', "'", "\\", '""', '"\'"', "\\t", "\\n", "\\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c",
           "\x1d", "\x1e", "\ufeff", "\x00", "\u200b", "\xa0", " ", "é", "ß", "İ", "中文", "한국어", "עברית",
           "😀", "👩\u200d👩\u200d👧", "🇫🇷", "e\u0301"]
CHARACTERS = st.characters(codec="utf-8", exclude_characters=SEPARATORS)
TEXT = st.lists(st.one_of(CHARACTERS, st.sampled_from(SPECIAL)), max_size=24).map("".join)
TEXT_OR_EMPTY = st.one_of(st.just(""), TEXT)
WORDS = ["the", "cat", "sat", "on", "mat", "isn't", "don't", "Weapons", "Iraq", "unbelievably", "1.5", "42",
         "naïve", "café", "Straße", "東京", "😀", '"quoted"', "back\\slash", "—", "\u2028", "\x85"]
LONG_TEXT = st.lists(st.one_of(st.sampled_from(WORDS), TEXT), min_size=100, max_size=700).map(" ".join)


def _parses(convert, value: str) -> bool:
    try:
        convert(value)
    except ValueError:
        return False
    return True


# -------------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """One GLUE file layout: the task's spec, its columns (resolved to non-negative numbers) and header."""

    spec: TaskSpec
    set_type: str
    columns: Columns
    is_test: bool
    header: Optional[tuple[str, ...]]
    width: int

    def column(self, number: Optional[int]) -> Optional[int]:
        return None if number is None else number % self.width

    @property
    def first_data_line(self) -> int:
        return 2 if self.header else 1


def layout(task: str, set_type: str) -> Layout:
    spec = TASKS[task.lower()]
    is_test = set_type in spec.test_set_types
    columns = spec.test if is_test else spec.labeled
    header = None
    if columns.header:  # the official header, from the fixture file of that layout
        first = (FIXTURES / spec.name / f"{set_type}.tsv").read_text(encoding="utf-8-sig").split("\n")[0]
        header = tuple(first.rstrip("\r").split("\t"))
    return Layout(spec, set_type, columns, is_test, header, len(header) if header else columns.width)


LAYOUTS = [layout(spec.name, set_type) for spec in TASKS.values() for set_type in spec.set_types]
assert {(lay.spec.name, lay.set_type) for lay in LAYOUTS} >= {("RTE", "train"), ("CoLA", "train"), ("STS-B", "train"),
                                                            ("RTE", "test")}


@dataclass(frozen=True)
class Expected:
    """What the reader must give back for one valid row (index None: the row's position, for files without one)."""

    text_a: str
    text_b: Optional[str]
    label: Optional[str]
    index: Optional[int]


SCORE = st.builds(lambda value, style: style.format(value), st.floats(0, 5, allow_nan=False),
                  st.sampled_from(["{:.3f}", "{!r}", "{:g}", "{:.1f}", "{:.0f}"]))


@st.composite
def valid_rows(draw, lay: Layout) -> tuple[list[str], Expected]:
    """The fields of one valid row of ``lay`` (other columns: random text) and what the reader must return."""
    fields = draw(st.lists(TEXT_OR_EMPTY, min_size=lay.width, max_size=lay.width))
    columns = lay.columns
    text_a = fields[lay.column(columns.text_a)] = draw(TEXT_OR_EMPTY)
    text_b = None
    if columns.text_b is not None:
        text_b = fields[lay.column(columns.text_b)] = draw(TEXT_OR_EMPTY)
    label = None
    if not lay.is_test:
        label = draw(SCORE if lay.spec.is_regression else st.sampled_from(lay.spec.labels))
        fields[lay.column(columns.label)] = label
    index = None
    if columns.index is not None:
        index = draw(st.integers(-10**6, 10**12))
        fields[lay.column(columns.index)] = str(index)
    return fields, Expected(text_a, text_b, label, index)


@st.composite
def bad_rows(draw, lay: Layout) -> list[str]:
    """The fields of one row that ``lay`` must reject: a wrong column count (a tab inside a field, a missing
    field, a blank line), a label outside the label set, a score that is not a number, an index that is not
    an integer."""
    fields, _ = draw(valid_rows(lay))
    kinds = ["tab inside a field", "missing field", "blank line"]
    if not lay.is_test:
        kinds.append("bad score" if lay.spec.is_regression else "bad label")
    if lay.columns.index is not None:
        kinds.append("bad index")
    kind = draw(st.sampled_from(kinds))
    if kind == "tab inside a field":
        number = draw(st.integers(0, lay.width - 1))
        cut = draw(st.integers(0, len(fields[number])))
        fields[number] = fields[number][:cut] + "\t" + fields[number][cut:]
    elif kind == "missing field":
        del fields[draw(st.integers(0, lay.width - 1))]
    elif kind == "blank line":
        fields = [""]
    elif kind == "bad label":
        fields[lay.column(lay.columns.label)] = draw(TEXT_OR_EMPTY.filter(lambda s: s not in lay.spec.labels))
    elif kind == "bad score":
        fields[lay.column(lay.columns.label)] = draw(TEXT_OR_EMPTY.filter(lambda s: not _parses(float, s)))
    else:
        fields[lay.column(lay.columns.index)] = draw(TEXT_OR_EMPTY.filter(lambda s: not _parses(int, s)))
    return fields


@dataclass(frozen=True)
class FileStyle:
    newline: str  # "\n" or "\r\n" (the reader strips the "\r")
    bom: bool  # a UTF-8 byte-order mark first (the official MRPC files have one)
    final_newline: bool  # CoLA dev ends without one


STYLES = st.builds(FileStyle, st.sampled_from(["\n", "\r\n"]), st.booleans(), st.booleans())


def write_glue_file(folder: str, lay: Layout, rows: list[list[str]], style: FileStyle) -> str:
    lines = ([("\t".join(lay.header))] if lay.header else []) + ["\t".join(fields) for fields in rows]
    final_newline = style.final_newline or rows[-1] == [""]  # else a blank last row would read as the final newline
    text = style.newline.join(lines) + (style.newline if final_newline else "")
    path = os.path.join(folder, f"{lay.set_type}.tsv")
    with open(path, "wb") as stream:
        stream.write((b"\xef\xbb\xbf" if style.bom else b"") + text.encode("utf-8"))
    return path


def assert_reads_as(examples: list[InputExample], lay: Layout, expected: list[tuple[int, Expected]]) -> None:
    """``expected``: (line number, Expected) of each row the reader must return, in file order."""
    assert len(examples) == len(expected)
    for got, (line, want) in zip(examples, expected):
        assert got.text_a == want.text_a
        assert got.text_b == want.text_b
        assert got.label == want.label
        # files without an index column number their rows by position in the file (0 = first data line)
        assert got.index == (line - lay.first_data_line if want.index is None else want.index)


def index_key(row: tuple[list[str], Optional[Expected]]) -> object:
    """``unique_by`` key of a generated row: a valid row's index, which must not repeat in a file; rows without
    one (bad rows, rows of files numbered by position) never clash."""
    want = row[1]
    return object() if want is None or want.index is None else want.index


# ------------------------------------------------------------------------------------- 1. round trip


@st.composite
def valid_files(draw):
    lay = draw(st.sampled_from(LAYOUTS))
    rows = draw(st.lists(valid_rows(lay), min_size=1, max_size=10, unique_by=index_key))
    return lay, rows, draw(STYLES)


# every Unicode line separator in one RTE row, an empty text and a CRLF file without a final newline
SEPARATOR_ROW = (["7", "A\u2028B\u2029C\x85D\x0bE\x0cF\x1cG\x1dH\x1eI", "", "entailment"],
                 Expected("A\u2028B\u2029C\x85D\x0bE\x0cF\x1cG\x1dH\x1eI", "", "entailment", 7))
QUOTE_ROW = (["0", 'He said "stop', "it's a \\ \"\" 😀 naïve", "not_entailment"],
             Expected('He said "stop', "it's a \\ \"\" 😀 naïve", "not_entailment", 0))


@settings(max_examples=100, deadline=None)
@example(file=(layout("RTE", "train"), [SEPARATOR_ROW, QUOTE_ROW], FileStyle("\r\n", False, False)))
@example(file=(layout("CoLA", "train"), [(["gj04", "1", "", "\x85\u2028"], Expected("\x85\u2028", None, "1", None)),
                                         (["gj04", "0", "*", ""], Expected("", None, "0", None))],
               FileStyle("\n", True, True)))
@given(file=valid_files())
def test_valid_rows_read_back_verbatim(file):
    """Texts, labels, indexes and row count come back exactly as written, in every layout; an empty text is
    the empty string (fields are returned verbatim: not stripped, unquoted, unescaped, or turned into None)."""
    lay, rows, style = file
    with tempfile.TemporaryDirectory() as folder:
        write_glue_file(folder, lay, [fields for fields, _ in rows], style)
        processor = GlueProcessor(lay.spec.name)
        examples = processor.process(folder, lay.set_type)
    lines = range(lay.first_data_line, lay.first_data_line + len(rows))
    assert_reads_as(examples, lay, [(line, want) for line, (_, want) in zip(lines, rows)])
    assert processor.skipped == []


# ------------------------------------------------------------------------------- 2. invalid rows


@st.composite
def files_with_bad_rows(draw):
    lay = draw(st.sampled_from(LAYOUTS))
    rows = draw(st.lists(st.one_of(valid_rows(lay), bad_rows(lay).map(lambda fields: (fields, None))), max_size=10,
                         unique_by=index_key))
    rows.insert(draw(st.integers(0, len(rows))), (draw(bad_rows(lay)), None))  # at least one bad row
    return lay, rows, draw(STYLES)


@settings(max_examples=100, deadline=None)
@given(file=files_with_bad_rows())
def test_bad_rows_are_errors_naming_file_and_first_bad_line_or_are_skipped_by_line(file):
    lay, rows, style = file
    lines = list(range(lay.first_data_line, lay.first_data_line + len(rows)))
    bad_lines = [line for line, (_, want) in zip(lines, rows) if want is None]
    good = [(line, want) for line, (_, want) in zip(lines, rows) if want is not None]
    with tempfile.TemporaryDirectory() as folder:
        path = write_glue_file(folder, lay, [fields for fields, _ in rows], style)

        with pytest.raises(GlueFormatError) as error:
            GlueProcessor(lay.spec.name).process(folder, lay.set_type)
        assert f"{path}, line {bad_lines[0]}: " in str(error.value)

        processor = GlueProcessor(lay.spec.name, skip_malformed=True)
        if good:
            examples = processor.process(folder, lay.set_type)
            assert_reads_as(examples, lay, good)
        else:
            with pytest.raises(GlueFormatError, match="no data rows"):
                processor.process(folder, lay.set_type)
        assert processor.skipped == bad_lines


def _read_columns(lay: Layout) -> list[int]:
    columns = lay.columns
    return [c for c in (columns.text_a, columns.text_b, columns.label, columns.index) if c is not None]


# layouts with a header whose columns all count from the start (a column counted from the end, like STS-B's
# score, would land on some other field of a narrower row instead of past its end)
HEADER_LAYOUTS = [lay for lay in LAYOUTS if lay.header and min(_read_columns(lay)) >= 0 < max(_read_columns(lay))]


@settings(max_examples=20, deadline=None, report_multiple_bugs=False)  # one IndexError, not a group of them
@given(lay=st.sampled_from(HEADER_LAYOUTS), data=st.data())
def test_a_header_narrower_than_the_layout_is_a_format_error(lay, data):
    needed = 1 + max(_read_columns(lay))
    width = data.draw(st.integers(1, needed - 1))
    rows = [fields[:width] for fields, _ in data.draw(st.lists(valid_rows(lay), min_size=1, max_size=4))]
    narrow = Layout(lay.spec, lay.set_type, lay.columns, lay.is_test, lay.header[:width], width)
    with tempfile.TemporaryDirectory() as folder:
        path = write_glue_file(folder, narrow, rows, FileStyle("\n", False, True))
        for skip in (False, True):
            with pytest.raises(GlueFormatError) as error:
                GlueProcessor(lay.spec.name, skip_malformed=skip).process(folder, lay.set_type)
            assert path in str(error.value)


@st.composite
def files_with_a_repeated_index(draw):
    """A valid file of a layout with an index column, and a later row that repeats an earlier row's index (spelt
    as ``int`` reads it, maybe with spaces): (layout, rows, position of the first, position of the repeat, style)."""
    lay = draw(st.sampled_from([lay for lay in LAYOUTS if lay.columns.index is not None]))
    rows = draw(st.lists(valid_rows(lay), min_size=1, max_size=8, unique_by=index_key))
    first = draw(st.integers(0, len(rows) - 1))
    fields, want = draw(valid_rows(lay))
    fields[lay.column(lay.columns.index)] = draw(st.sampled_from(["{}", " {}", "{} "])).format(rows[first][1].index)
    repeat = draw(st.integers(first + 1, len(rows)))
    rows.insert(repeat, (fields, want))
    return lay, rows, first, repeat, draw(STYLES)


@settings(max_examples=50, deadline=None)
@given(file=files_with_a_repeated_index())
def test_a_repeated_index_is_an_error_naming_both_lines_even_when_skipping_malformed_rows(file):
    lay, rows, first, repeat, style = file
    with tempfile.TemporaryDirectory() as folder:
        path = write_glue_file(folder, lay, [fields for fields, _ in rows], style)
        for skip in (False, True):
            with pytest.raises(GlueFormatError) as error:
                GlueProcessor(lay.spec.name, skip_malformed=skip).process(folder, lay.set_type)
            assert str(error.value).startswith(
                f"{path}, line {lay.first_data_line + repeat}: index {rows[first][1].index} repeats line "
                f"{lay.first_data_line + first}'s (two files concatenated?)")


NOT_FINITE = st.tuples(st.sampled_from(["", " "]), st.sampled_from(["", "+", "-"]),
                       st.sampled_from(["nan", "NaN", "inf", "Infinity", "INF", "1e999"])).map("".join)
OUT_OF_RANGE = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not 0 <= x <= 5).map(repr)


@settings(max_examples=10, deadline=None)
@given(score=NOT_FINITE | OUT_OF_RANGE)
def test_sts_b_scores_that_are_not_finite_numbers_in_0_to_5_are_format_errors(score):
    lay = layout("STS-B", "train")
    row = ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "a", "b", score]
    with tempfile.TemporaryDirectory() as folder:
        write_glue_file(folder, lay, [row], FileStyle("\n", False, True))
        with pytest.raises(GlueFormatError, match="line 2: "):
            GlueProcessor("STS-B").process(folder, "train")


# ------------------------------------------------------------------------------------- 3. featurizer


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return AutoTokenizer.from_pretrained(tiny_bert)


FEATURE_TEXT = st.one_of(st.just(""), TEXT, LONG_TEXT)
# name -> (labels, pair, labeled)
TASK_KINDS = {"CoLA": (("0", "1"), False, True), "RTE": (("entailment", "not_entailment"), True, True),
              "STS-B": (None, True, True), "RTE test": (("entailment", "not_entailment"), True, False),
              "SST-2 test": (("0", "1"), False, False)}


@st.composite
def example_lists(draw):
    kind = draw(st.sampled_from(sorted(TASK_KINDS)))
    labels, pair, labeled = TASK_KINDS[kind]
    label = st.none()
    if labeled:
        label = SCORE if labels is None else st.sampled_from(labels)
    examples = draw(st.lists(st.builds(
        lambda a, b, label_, index: InputExample(a, b, label_, index),
        FEATURE_TEXT, FEATURE_TEXT if pair else st.none(), label, st.integers(0, 10**9)), min_size=1, max_size=6,
        unique_by=lambda example_: example_.index))
    return labels, examples


@settings(max_examples=30, deadline=None)
@given(task=example_lists(), max_seq_len=st.integers(8, 64), batch_size=st.integers(1, 4))
def test_features_are_what_the_tokenizer_gives_truncated_to_max_seq_len(tokenizer, tiny_bert, task, max_seq_len,
                                                                          batch_size):
    labels, examples = task
    args = data.DataProcessorArguments(**config_defaults(
        "dproc", max_seq_len=max_seq_len, tokenizer=tiny_bert, workers=1, tokenize_batch_size=batch_size))
    tables = data.Featurizer(args, labels, tokenizer).process(examples)
    assert len(tables) == -(-len(examples) // batch_size)  # one table per tokenizer batch
    features = FeatureTable.concatenate(tables)
    features.check()
    assert len(features) == len(examples)
    for example_, feature in zip(examples, features):
        assert feature.input_ids.dtype == np.int32 and feature.input_ids.ndim == 1
        assert 0 < len(feature.input_ids) <= max_seq_len
        assert feature.token_type_ids.shape == feature.input_ids.shape
        # The featurizer tokenizes in batches, where a pair stays a pair even when text_b is "" ([CLS] a [SEP]
        # [SEP]); tokenizer(a, "") on one example would drop the empty second segment ([CLS] a [SEP]).
        texts_b = None if example_.text_b is None else [example_.text_b]
        expected = tokenizer([example_.text_a], texts_b, truncation=True, max_length=max_seq_len)
        assert feature.input_ids.tolist() == expected["input_ids"][0]
        assert feature.token_type_ids.tolist() == expected["token_type_ids"][0]
        if example_.text_b != "":
            single = tokenizer(example_.text_a, example_.text_b, truncation=True, max_length=max_seq_len)
            assert feature.input_ids.tolist() == single["input_ids"]
            assert feature.token_type_ids.tolist() == single["token_type_ids"]
        else:
            assert feature.input_ids.tolist()[-2:] == [tokenizer.sep_token_id] * 2
        if example_.label is None:
            assert feature.label is None
        elif labels is None:
            # stored as float32
            assert isinstance(feature.label, float) and feature.label == float(np.float32(example_.label))
        else:
            assert isinstance(feature.label, int) and labels[feature.label] == example_.label
        assert feature.index == example_.index


# ------------------------------------------------------------------------------------- 4. features files


@pytest.fixture(scope="module")
def features_file(tiny_bert, tmp_path_factory) -> bytes:
    """The bytes of a small features file, as data.py writes it (RTE dev: pairs, labels)."""
    from conftest import featurize

    return featurize(FIXTURES / "RTE", tmp_path_factory.mktemp("features"), tiny_bert, "RTE", "dev").read_bytes()


def metadata_end(content: bytes) -> int:
    """Where the metadata pickle ends and the table's begins."""
    stream = io.BytesIO(content)
    pickle.load(stream)
    return stream.tell()


def assert_refused(content: bytes) -> None:
    """Every reader of a whole features file refuses ``content`` with one line naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "dev.tsv")
        with open(path, "wb") as stream:
            stream.write(content)
        for read in (data.verify_features, data.read_features, data.TaskDataset):
            with pytest.raises(ValueError) as error:
                read(path)
            assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@settings(max_examples=200, deadline=None)
@given(data_=st.data())
def test_a_features_file_cut_anywhere_is_refused_in_one_line_naming_it(features_file, data_):
    boundary = metadata_end(features_file)
    cut = data_.draw(st.one_of(st.sampled_from([0, 1, boundary - 1, boundary, boundary + 1, len(features_file) - 1]),
                               st.integers(0, len(features_file) - 1)))
    assert_refused(features_file[:cut])


@settings(max_examples=300, deadline=None)
@given(data_=st.data())
def test_a_changed_byte_is_refused_in_one_line_or_changes_nothing_read(features_file, data_):
    """The metadata and the arrays are checksummed and the pickles around them break when damaged, so a changed
    byte is refused, or leaves every value as it was (a few bytes are flags that make no difference, like the
    ``copy`` argument of a dtype)."""
    position = data_.draw(st.one_of(st.integers(0, len(features_file) - 1),
                                    st.integers(metadata_end(features_file), len(features_file) - 1)))
    changed = bytearray(features_file)
    changed[position] ^= data_.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as folder:
        original, path = os.path.join(folder, "original.tsv"), os.path.join(folder, "changed.tsv")
        for name, content in ((original, features_file), (path, changed)):
            with open(name, "wb") as stream:
                stream.write(content)
        try:
            metadata, table = data.read_features(path)
        except ValueError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
            return
        expected_metadata, expected = data.read_features(original)
    assert metadata == expected_metadata
    for name in FeatureTable.COLUMNS:
        got, want = getattr(table, name), getattr(expected, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name


@settings(max_examples=50, deadline=None)
@given(tail=st.binary(min_size=1, max_size=64) | st.just(b"copy"))
def test_a_features_file_with_anything_after_its_table_is_refused(features_file, tail):
    assert_refused(features_file + (features_file if tail == b"copy" else tail))


# ---------------------------------------------------------------------------------------- 5. collate

LABELS = st.sampled_from(["class", "score", "none"])


@st.composite
def feature_batches(draw):
    kind = draw(LABELS)
    label = {"class": st.integers(0, 2), "score": st.floats(0, 5, allow_nan=False), "none": st.none()}[kind]
    features = []
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.integers(0, 48))
        ids = draw(st.lists(st.integers(1, 30521), min_size=n, max_size=n))
        types = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        features.append(InputFeatures(np.array(ids, dtype=np.int32), np.array(types, dtype=np.int8), draw(label),
                                      draw(st.integers(0, 2**40))))
    return features


@settings(max_examples=100, deadline=None)
@given(features=feature_batches())
def test_collate_pads_to_the_longest_member_with_zeros_outside_the_mask(features):
    batch = data.TaskDataset.collate(features)
    lengths = [len(feature.input_ids) for feature in features]
    shape = (len(features), max(lengths))
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert tuple(batch[key].shape) == shape and batch[key].dtype == torch.long
    mask = batch["attention_mask"]
    assert mask.sum(dim=1).tolist() == lengths
    assert ((mask == 0) | (mask == 1)).all()
    assert (batch["input_ids"][mask == 0] == 0).all() and (batch["token_type_ids"][mask == 0] == 0).all()
    for row, feature in enumerate(features):
        n = lengths[row]
        assert mask[row, :n].tolist() == [1] * n  # the mask is a prefix
        assert batch["input_ids"][row, :n].tolist() == feature.input_ids.tolist()
        assert batch["token_type_ids"][row, :n].tolist() == feature.token_type_ids.tolist()
    assert batch["index"].tolist() == [feature.index for feature in features]
    if features[0].label is None:
        assert "labels" not in batch
    elif isinstance(features[0].label, float):
        assert batch["labels"].dtype == torch.float
        assert batch["labels"].tolist() == pytest.approx([feature.label for feature in features], rel=1e-6, abs=1e-6)
    else:
        assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [f.label for f in features]
