"""The leaderboard submission: its 11 files and their official row counts from the task table, the checker
(``check_submission``, ``benchmark.py --check_submission``) naming every problem with file and line, the zip
refused while files are missing, and WNLI's majority-class file."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, python_env
from glue_processors import TASKS, GlueProcessor, get_task
from glue_support import submission

NAMES = ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
         "RTE.tsv", "WNLI.tsv", "AX.tsv"]


def fixture_indexes(task: str, set_type: str) -> list[int]:
    return [example.index for example in GlueProcessor(task).process(str(FIXTURES / task), set_type)]



def predictions(entry: submission.LeaderboardFile, count: int) -> list[str]:
    """Valid predictions: the labels of the task's model in turn, or STS-B scores from 0 to 5."""
    labels = entry.spec.trained_as.labels
    return [f"{5 * row / max(count - 1, 1):.3f}" if labels is None else labels[row % len(labels)]
            for row in range(count)]


def write_file(path: Path, rows: list[tuple[int, str]]) -> None:
    path.write_text("index\tprediction\n" + "".join(f"{index}\t{prediction}\n" for index, prediction in rows),
                    encoding="utf-8")


@pytest.fixture
def valid(tmp_path, fixture_counts) -> Path:
    """A complete submission folder for the fixtures' test files: every index, in order, with allowed labels."""
    folder = tmp_path / "submission"
    folder.mkdir()
    for name, entry in submission.leaderboard_files().items():
        indexes = fixture_indexes(entry.spec.name, entry.set_type)
        write_file(folder / name, list(zip(indexes, predictions(entry, len(indexes)))))
    return folder


def edit_lines(path: Path, edit) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(edit(lines)), encoding="utf-8")


def test_the_leaderboard_files_and_their_official_row_counts_come_from_the_task_table():
    files = submission.leaderboard_files()
    assert list(files) == NAMES
    assert {name: entry.rows for name, entry in files.items()} == {
        "CoLA.tsv": 1063, "SST-2.tsv": 1821, "MRPC.tsv": 1725, "STS-B.tsv": 1379, "QQP.tsv": 390965,
        "MNLI-m.tsv": 9796, "MNLI-mm.tsv": 9847, "QNLI.tsv": 5463, "RTE.tsv": 3000, "WNLI.tsv": 146, "AX.tsv": 1104}
    assert all(len(spec.test_rows) == len(spec.test_set_types) for spec in TASKS.values())
    assert files["AX.tsv"].spec.trained_as is get_task("MNLI")


def test_a_valid_submission_passes_and_zips_to_the_11_files_at_the_top_level(valid, tmp_path):
    (valid / "notes.txt").write_text("not for the leaderboard")  # in the folder, left out of the zip
    assert submission.check_submission(str(valid)) == [f"{valid}/notes.txt: not one of the leaderboard's 11 files"]
    zip_path = tmp_path / "glue_submission.zip"
    submission.write_zip(str(valid), str(zip_path))
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == NAMES
        assert all(archive.read(name) == (valid / name).read_bytes() for name in NAMES)
    assert submission.check_submission(str(zip_path)) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glue_submission.zip", "submission"]  # no temporary


def swap(lines: list[str], first: int, second: int) -> list[str]:
    lines[first - 1], lines[second - 1] = lines[second - 1], lines[first - 1]
    return lines


BROKEN = {
    "a missing file": ("RTE.tsv", None, ["{folder}/RTE.tsv: missing (the RTE test predictions)"]),
    "a row missing": ("CoLA.tsv", lambda lines: lines[:3] + lines[4:], [
        "{folder}/CoLA.tsv: 5 rows, expected 6 (the official CoLA test set)",
        "{folder}/CoLA.tsv: no row with index 2 (line 4)"]),
    "rows out of order": ("MRPC.tsv", lambda lines: swap(lines, 3, 4), [
        "{folder}/MRPC.tsv, line 4: index 1 comes after index 2 (line 3); rows go in index order"]),
    "a label outside the task's set": ("QNLI.tsv", lambda lines: [lines[0], "0\tneutral", *lines[2:]], [
        "{folder}/QNLI.tsv, line 2: prediction 'neutral' is not one of entailment, not_entailment"]),
    "AX takes MNLI's labels": ("AX.tsv", lambda lines: [*lines[:2], "1\tnot_entailment", *lines[3:]], [
        "{folder}/AX.tsv, line 3: prediction 'not_entailment' is not one of contradiction, entailment, neutral "
        "(MNLI's labels)"]),
    "an STS-B score over 5": ("STS-B.tsv", lambda lines: [*lines[:3], "2\t5.5", *lines[4:]], [
        "{folder}/STS-B.tsv, line 4: prediction '5.5' is not a score 0-5"]),
    "a wrong header": ("SST-2.tsv", lambda lines: ["id\tlabel", *lines[1:]], [
        "{folder}/SST-2.tsv, line 1: header 'id\\tlabel', expected 'index\\tprediction'"]),
    "no header": ("SST-2.tsv", lambda lines: lines[1:], [
        "{folder}/SST-2.tsv, line 1: a row where the header 'index\\tprediction' belongs"]),
    "a repeated index": ("RTE.tsv", lambda lines: [*lines[:3], "1\tentailment", *lines[4:]], [
        "{folder}/RTE.tsv, line 4: index 1 repeats line 3's", "{folder}/RTE.tsv: no row with index 2 (line 4)"]),
    "a malformed row": ("QQP.tsv", lambda lines: [*lines[:2], "1 0", *lines[3:]], [
        "{folder}/QQP.tsv, line 3: 1 tab-separated fields, expected 2: index<TAB>prediction",
        "{folder}/QQP.tsv: no row with index 1 (line 3)"]),
    "an empty file": ("WNLI.tsv", lambda lines: [], [
        "{folder}/WNLI.tsv: empty file; expected the header 'index\\tprediction' and 2 rows"]),
}


@pytest.mark.parametrize("case", BROKEN)
def test_each_problem_is_named_with_its_file_and_line_and_no_zip_is_written(valid, tmp_path, case):
    name, edit, expected = BROKEN[case]
    if edit is None:
        (valid / name).unlink()
    else:
        edit_lines(valid / name, edit)
    expected = [line.format(folder=valid) for line in expected]
    assert submission.check_submission(str(valid)) == expected
    with pytest.raises(ValueError, match="not written"):
        submission.write_zip(str(valid), str(tmp_path / "glue_submission.zip"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["submission"]


def test_bytes_that_are_not_utf8_and_misnamed_files_are_named(valid):
    (valid / "MNLI-mm.tsv").write_bytes(b"index\tprediction\n0\tneutral\n1\tentail\xe9ment\n2\tneutral\n3\tneutral\n")
    (valid / "MNLI-m.tsv").rename(valid / "mnli-m.tsv")
    assert submission.check_submission(str(valid)) == [
        f"{valid}/mnli-m.tsv: not one of the leaderboard's 11 files; did you mean MNLI-m.tsv?",
        f"{valid}/MNLI-m.tsv: missing (the MNLI test_matched predictions)",
        f"{valid}/MNLI-mm.tsv, line 3: bytes that are not UTF-8 (invalid continuation byte); the leaderboard reads "
        "UTF-8",
        f"{valid}/MNLI-mm.tsv, line 3: prediction 'entail\ufffdment' is not one of contradiction, entailment, neutral"]


def test_a_systematic_problem_lists_its_first_rows_and_counts_the_rest(valid, monkeypatch):
    monkeypatch.setitem(TASKS, "qqp", dataclasses.replace(get_task("QQP"), test_rows=(25,)))
    write_file(valid / "QQP.tsv", [(index, "duplicate") for index in range(25)])
    problems = submission.check_submission(str(valid))
    assert problems[:10] == [f"{valid}/QQP.tsv, line {line}: prediction 'duplicate' is not one of 0, 1"
                             for line in range(2, 12)]
    assert problems[10:] == [f"{valid}/QQP.tsv: 15 more predictions outside the labels"]


def test_the_zip_is_refused_with_the_list_of_what_is_missing_and_nothing_is_written(valid, tmp_path):
    for name in ("MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"):
        (valid / name).unlink()
    zip_path = tmp_path / "glue_submission.zip"
    with pytest.raises(ValueError) as refusal:
        submission.write_zip(str(valid), str(zip_path))
    assert str(refusal.value) == (
        f"{zip_path} not written: {valid} lacks 3 of the leaderboard's 11 files: MNLI-m.tsv (MNLI test_matched), "
        "MNLI-mm.tsv (MNLI test_mismatched), AX.tsv (AX test)")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["submission"]


def test_a_zip_with_its_files_in_a_folder_is_named_as_such(valid, tmp_path):
    zip_path = tmp_path / "nested.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name in NAMES:
            archive.write(valid / name, f"submission/{name}")
    problems = submission.check_submission(str(zip_path))
    assert problems[0] == (f"{zip_path}/submission/CoLA.tsv: inside a folder of the zip; the leaderboard reads only "
                           "the files at its top level (zip the files, not their folder)")
    assert problems[11:] == [f"{zip_path}/{name}: missing (the {entry.what} predictions)"
                             for name, entry in submission.leaderboard_files().items()]
    (tmp_path / "not.zip").write_text("index\tprediction\n")
    assert submission.check_submission(str(tmp_path / "not.zip")) == [
        f"{tmp_path / 'not.zip'}: neither a zip file nor a folder (File is not a zip file)"]


def official_size_submission(folder: Path) -> None:
    """The 11 files with the official row counts (424k rows, QQP most of them), as a full submission has."""
    folder.mkdir()
    for name, entry in submission.leaderboard_files().items():
        write_file(folder / name, list(enumerate(predictions(entry, entry.rows))))


def check_command(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "benchmark.py"), "--check_submission",
                           str(path)], cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=120)


def test_benchmark_check_submission_exits_0_on_a_valid_zip_and_1_naming_each_problem_without_torch(tmp_path):
    folder = tmp_path / "submission"
    official_size_submission(folder)
    submission.write_zip(str(folder), str(tmp_path / "glue_submission.zip"))
    result = check_command(tmp_path / "glue_submission.zip")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 11 files, each with its test set's official rows in index order")
    imported = {line.rpartition("|")[2].strip().partition(".")[0] for line in result.stderr.splitlines()}
    assert "glue_support" in imported and not imported & {"torch", "transformers", "sklearn", "scipy"}

    edit_lines(folder / "RTE.tsv", lambda lines: [*lines[:2], "1\tmaybe", *lines[3:]])
    (folder / "WNLI.tsv").unlink()
    result = check_command(folder)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{folder}/RTE.tsv, line 3: prediction 'maybe' is not one of entailment, not_entailment",
        f"{folder}/WNLI.tsv: missing (the WNLI test predictions)",
        f"NOT OK: {folder} has problems (2 lines above); the leaderboard would refuse or misscore it"]


def test_the_majority_class_of_wnli_train_predicts_every_test_row(tmp_path, fixture_counts):
    labels = [example.label for example in GlueProcessor("WNLI").process(str(FIXTURES / "WNLI"), "train")]
    assert labels.count("1") > labels.count("0")  # the fixture's majority: 1
    [path] = submission.write_majority_class(get_task("WNLI"), str(FIXTURES / "WNLI"), str(tmp_path))
    assert path == str(tmp_path / "submission" / "WNLI.tsv")
    assert Path(path).read_text(encoding="utf-8") == "index\tprediction\n0\t1\n1\t1\n"
    assert submission.check_file(path, Path(path).read_bytes(), submission.leaderboard_files()["WNLI.tsv"]) == []

    tied = tmp_path / "tied"  # one row of each label: the tie goes to the label first in the table, 0
    tied.mkdir()
    shutil.copy(FIXTURES / "WNLI" / "test.tsv", tied / "test.tsv")
    lines = (FIXTURES / "WNLI" / "train.tsv").read_text(encoding="utf-8").splitlines()
    (tied / "train.tsv").write_text("\n".join([lines[0], lines[1], lines[4]]) + "\n", encoding="utf-8")
    submission.write_majority_class(get_task("WNLI"), str(tied), str(tied))
    assert (tied / "submission" / "WNLI.tsv").read_text(encoding="utf-8") == "index\tprediction\n0\t0\n1\t0\n"
