"""Every file a command reads is a regular file before it is opened (a FIFO would block it forever), and the
submission checker reads a zip within the bounds of the official rows, before and while each member is unzipped:
however an input is crafted, a command answers at once, in bounded memory, with one line per problem. Also the
files in a command's way: data.py replaces only features files, download_glue.py names a data_dir that is a file."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest

import data
import download_glue
from conftest import FIXTURES, ROOT, featurize, python_env
from glue_processors import GlueProcessor
from glue_support import submission
from glue_support.exit_codes import ConfigError

FIFO = "a FIFO (named pipe), expected a regular file"


def test_a_fifo_as_a_glue_tsv_is_refused_at_once_naming_it(fifo):
    (fifo.parent / "dev.tsv").symlink_to(fifo)
    with pytest.raises(ValueError) as refusal:
        GlueProcessor("RTE").stream(str(fifo.parent), "dev")
    assert str(refusal.value) == f"{fifo.parent / 'dev.tsv'}: {FIFO} (the RTE dev.tsv)"


def test_a_fifo_as_the_submission_or_one_of_its_files_is_refused_at_once(fifo, tmp_path):
    with pytest.raises(ValueError) as refusal:
        submission.check_submission(str(fifo))
    assert str(refusal.value) == f"{fifo}: {FIFO} (a leaderboard zip, or a folder of its files)"
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "RTE.tsv").symlink_to(fifo)
    assert f"{folder / 'RTE.tsv'}: {FIFO} (the RTE test predictions)" in submission.check_submission(str(folder))


def test_a_fifo_as_a_features_file_or_the_checksum_table_is_refused_at_once(fifo):
    for read in (data.read_metadata, data.read_features):
        with pytest.raises(ValueError) as refusal:
            read(str(fifo))
        assert str(refusal.value) == f"{fifo}: {FIFO} (a features file written by data.py)"
    with pytest.raises(ConfigError) as refusal:
        download_glue.load_checksums(str(fifo))
    assert refusal.value.code == f"{fifo}: {FIFO} (a JSON checksum table)"


def write_zeros_zip(path: Path, name: str, size: int) -> Path:
    """A zip whose one member is ``size`` bytes of zeros, deflated to a thousandth of that, written a block at a
    time (the test holds one block)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open(name, "w") as member:
        block = bytes(1 << 20)
        for _ in range(size // len(block)):
            member.write(block)
    return path


# where a one-member zip's headers hold each field: (offset in its local header, in its central directory entry,
# struct format); zipfile trusts the central directory, a crafted archive lies in both
FIELDS = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "size": (22, 24, "<I")}


def edit_headers(path: Path, field: str, change: Callable[[int], int]) -> Path:
    """A one-member zip with ``field`` of both its headers changed, as a crafted archive would have it."""
    raw = bytearray(path.read_bytes())
    local, central, layout = FIELDS[field]
    for offset in (local, raw.rindex(b"PK\x01\x02") + central):
        struct.pack_into(layout, raw, offset, change(*struct.unpack_from(layout, raw, offset)))
    path.write_bytes(bytes(raw))
    return path


def checked_apart(path: Path) -> tuple[list[str], float]:
    """``check_submission(path)`` in a process of its own: the problems, and the process's peak memory in MB. The
    peak is the kernel's VmHWM, the process's own: getrusage's ru_maxrss would start from this test process's."""
    script = ("import json, re, sys; from glue_support import submission; "
              "problems = submission.check_submission(sys.argv[1]); "
              "status = open('/proc/self/status').read(); "
              "print(json.dumps([problems, int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024]))")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, env=python_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    problems, peak_mb = json.loads(done.stdout)
    return problems, peak_mb


QQP = submission.leaderboard_files()["QQP.tsv"]


def test_a_zip_bomb_is_refused_before_it_is_unzipped_in_bounded_memory(tmp_path):
    bomb = write_zeros_zip(tmp_path / "bomb.zip", "QQP.tsv", 300 << 20)
    problems, peak_mb = checked_apart(bomb)
    assert f"{bomb}/QQP.tsv: {300 << 20} bytes once unzipped, expected at most {QQP.max_bytes} for the header and " \
           "the 390965 rows of the official QQP test set; not unzipped" in problems
    assert peak_mb < 150


def test_a_member_whose_declared_size_lies_is_stopped_at_that_size(tmp_path):
    liar = edit_headers(write_zeros_zip(tmp_path / "liar.zip", "QQP.tsv", 300 << 20), "size", lambda _: 1000)
    problems, peak_mb = checked_apart(liar)
    assert f"{liar}/QQP.tsv: cannot be read from the zip (Bad CRC-32 for file 'QQP.tsv')" in problems
    assert peak_mb < 150


def test_a_file_larger_than_its_rows_allow_is_stopped_while_it_is_read(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    with open(folder / "QQP.tsv", "wb") as stream:
        stream.truncate(1 << 30)  # a sparse GiB of zeros: no line ends, no disk
    problems, peak_mb = checked_apart(folder)
    assert f"{folder}/QQP.tsv: more than {QQP.max_bytes} bytes, expected the header and the 390965 rows of the " \
           "official QQP test set; not read further" in problems
    assert peak_mb < 150


def one_member_zip(path: Path, name: str, text: str, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr(name, text)
    return path


def test_a_member_of_more_lines_than_its_rows_allow_is_stopped_while_it_is_read(tmp_path):
    rte = submission.leaderboard_files()["RTE.tsv"]
    lines = one_member_zip(tmp_path / "lines.zip", "RTE.tsv", "\n" * (2 * rte.max_lines))
    assert f"{lines}/RTE.tsv: more than {rte.max_lines} lines, expected the header and the 3000 rows of the " \
           "official RTE test set; not read further" in submission.check_submission(str(lines))


@pytest.mark.parametrize("field, change, problem", [
    ("flags", lambda flags: flags | 0x1,
     "encrypted, expected a zip without a password (the leaderboard cannot open it)"),
    ("method", lambda _: 99,
     "compression method 99, which cannot be unzipped here; expected deflate, as zip programs write by default"),
], ids=["encrypted", "unknown compression"])
def test_a_member_that_cannot_be_unzipped_is_one_problem_line(tmp_path, field, change, problem):
    path = edit_headers(one_member_zip(tmp_path / "crafted.zip", "RTE.tsv", "index\tprediction\n0\tentailment\n"),
                        field, change)
    problems = submission.check_submission(str(path))
    assert f"{path}/RTE.tsv: {problem}" in problems
    assert len(problems) == 11  # that line, and the 10 other files missing


def test_an_archive_that_is_not_a_zip_or_cut_short_is_one_line(tmp_path):
    (tmp_path / "random.zip").write_bytes(bytes(range(256)) * 4)
    assert submission.check_submission(str(tmp_path / "random.zip")) == [
        f"{tmp_path / 'random.zip'}: neither a zip file nor a folder (File is not a zip file)"]
    whole = one_member_zip(tmp_path / "whole.zip", "RTE.tsv", "index\tprediction\n0\tentailment\n").read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[:len(whole) // 2])
    assert submission.check_submission(str(tmp_path / "cut.zip")) == [
        f"{tmp_path / 'cut.zip'}: neither a zip file nor a folder (File is not a zip file)"]


def test_a_zip_of_many_entries_is_refused_before_its_directory_is_read(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(2000):
            archive.writestr(str(number), b"")
    [problem] = submission.check_submission(str(path))
    assert problem.startswith(f"{path}: a zip whose directory declares ")
    assert problem.endswith("bytes of entries, expected the leaderboard's 11 files (at most 65536 bytes of directory "
                            "are read)")


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_damaged_byte_of_a_zip_gives_problem_lines_never_an_exception(tmp_path, method):
    """Each byte of a small zip replaced in turn (by its complement and by 0): its headers, names, sizes, data and
    directory. Whatever the damage, the checker answers with problems of one line each."""
    with zipfile.ZipFile(tmp_path / "good.zip", "w", method) as archive:
        archive.writestr("RTE.tsv", "index\tprediction\n0\tentailment\n1\tnot_entailment\n")
        archive.writestr("WNLI.tsv", "index\tprediction\n0\t1\n")
    whole = (tmp_path / "good.zip").read_bytes()
    damaged = tmp_path / "damaged.zip"
    for position in range(len(whole)):
        for value in {whole[position] ^ 0xFF, 0}:
            damaged.write_bytes(whole[:position] + bytes([value]) + whole[position + 1:])
            problems = submission.check_submission(str(damaged))
            assert problems and all("\n" not in problem for problem in problems), (position, value, problems)


def test_data_py_refuses_to_replace_a_file_it_did_not_write_and_leaves_it_as_it_was(rte_subset, tmp_path):
    output = tmp_path / "features"
    output.mkdir()
    (output / "dev.tsv").write_bytes((FIXTURES / "MRPC" / "dev.tsv").read_bytes())  # another task's GLUE file
    with pytest.raises(ValueError) as refusal:
        featurize(rte_subset, output, str(tmp_path / "no-such-tokenizer"), "RTE", "dev")  # refused before loading it
    assert str(refusal.value) == (f"{output / 'dev.tsv'}: not a features file, and data.py replaces only the "
                                  "features files it writes; choose another --dmod.output_dir, or move this file away")
    assert (output / "dev.tsv").read_bytes() == (FIXTURES / "MRPC" / "dev.tsv").read_bytes()


def test_data_py_replaces_a_features_file_of_its_own_even_of_an_older_format(tiny_bert, rte_subset, tmp_path):
    path = featurize(rte_subset, tmp_path / "features", tiny_bert, "RTE", "dev")
    first = path.read_bytes()
    path.write_bytes(first.replace(data.FEATURES_FORMAT.encode(), b"marlin-glue-features/2"))  # as an older data.py
    assert featurize(rte_subset, tmp_path / "features", tiny_bert, "RTE", "dev").read_bytes() == first


def test_download_glue_with_a_data_dir_that_is_a_file_says_so_in_one_line(tmp_path):
    (tmp_path / "glue_data").write_text("not a folder")
    result = subprocess.run([sys.executable, str(ROOT / "download_glue.py"), "--data_dir", str(tmp_path / "glue_data"),
                             "--tasks", "RTE"], cwd=tmp_path, env=python_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    path = tmp_path / "glue_data"
    assert result.stderr == (f"download_glue.py: --download.data_dir {path}: {path} is a file, expected a folder (the "
                             "folder to put the task folders in)\n")
    assert (tmp_path / "glue_data").read_text() == "not a folder"


@pytest.mark.parametrize("table, found", [
    ("[]", "not a checksum table"), ('{"RTE": "abc"}', "not a checksum table"), ("{", "not a JSON checksum table"),
])
def test_a_checksum_table_of_another_shape_is_one_line(tmp_path, table, found):
    (tmp_path / "table.json").write_text(table)
    with pytest.raises(ConfigError) as refusal:
        download_glue.load_checksums(str(tmp_path / "table.json"))
    assert refusal.value.code.startswith(f"{tmp_path / 'table.json'}: {found}")
