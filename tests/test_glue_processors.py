"""GlueProcessor reads the official file layouts exactly, and rejects malformed files naming file and line."""
from __future__ import annotations

import pytest

from conftest import ROOT
from glue_processors import TASKS, GlueFormatError, GlueProcessor, get_task


def read(task: str, folder, set_type: str):
    return GlueProcessor(task).process_data(str(folder), set_type)


def test_reads_the_shipped_rte_files_row_for_row():
    train, dev = read("RTE", ROOT / "RTE", "train"), read("RTE", ROOT / "RTE", "dev")
    assert (len(train), len(dev)) == (2490, 277)
    assert sum(example.label == "entailment" for example in train) == 1249
    first = train[0]
    assert (first.text_a, first.text_b, first.label, first.index) == (
        "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
        "not_entailment", 0)


def test_analyze_logs_the_count_and_label_distribution(caplog):
    with caplog.at_level("INFO", logger="glue_processors"):
        read("RTE", ROOT / "RTE", "train")
    assert "RTE: 2490 examples; labels entailment: 1249, not_entailment: 1241" in caplog.text


def test_quote_characters_stay_inside_their_field(tmp_path):
    (tmp_path / "dev.tsv").write_text(
        'index\tsentence1\tsentence2\tlabel\n'
        '0\tHe said "stop\tand left.\tentailment\n'
        '1\tA "quoted" word.\tNo quote " here\tnot_entailment\n', encoding="utf-8")
    examples = read("RTE", tmp_path, "dev")
    assert [e.text_a for e in examples] == ['He said "stop', 'A "quoted" word.']
    assert examples[1].text_b == 'No quote " here'


def test_test_files_have_no_labels_and_keep_their_index(tmp_path):
    (tmp_path / "test.tsv").write_text("index\tsentence1\tsentence2\n7\ta\tb\n3\tc\td\n", encoding="utf-8")
    examples = read("RTE", tmp_path, "test")
    assert [(e.label, e.index) for e in examples] == [(None, 7), (None, 3)]


@pytest.mark.parametrize("content, message", [
    ("index\tsentence1\tsentence2\tlabel\n0\tonly two\tentailment\n", "line 2: 3 tab-separated columns, expected 4"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", "line 3: label 'maybe' is not one of"),
    ("index\tsentence1\tsentence2\tlabel\n", "no data rows"),
    ("", "empty file"),
])
def test_malformed_files_name_file_line_and_expectation(tmp_path, content, message):
    (tmp_path / "train.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(GlueFormatError) as error:
        read("RTE", tmp_path, "train")
    assert str(tmp_path / "train.tsv") in str(error.value) and message in str(error.value)


def test_bytes_that_are_not_utf8_are_reported_with_their_line(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\t\xff\tb\tentailment\n")
    with pytest.raises(GlueFormatError, match="line 3: bytes that are not UTF-8"):
        read("RTE", tmp_path, "train")


def test_missing_file_unknown_task_and_set_type_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.tsv: no such file"):
        read("RTE", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown GLUE task 'RTF'; expected one of: CoLA"):
        get_task("RTF")
    with pytest.raises(ValueError, match="RTE has no set_type 'dev_matched'"):
        read("RTE", tmp_path, "dev_matched")


def test_the_task_table_covers_glue():
    assert {spec.name for spec in TASKS.values()} == {
        "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX"}
    assert get_task("sts-b").is_regression and get_task("STS-B").labels is None
    assert get_task("mnli").labels == ("contradiction", "entailment", "neutral")
