"""download_glue.py against a local HTTP server on 127.0.0.1 (no internet): fixture zips and MRPC source files
are built in the test from the repo's own files (tests/fixtures, RTE/), and from ../shared/glue_data when it is
there. A good download lands in <data_dir>/<task>/; a truncated, partial or corrupted download and a checksum
mismatch are reported and leave nothing behind; verified tasks are skipped on a second run."""
from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

import download_glue
from conftest import FIXTURES, ROOT, python_env
from glue_processors import TASKS

SHARED_GLUE = ROOT.parent / "shared" / "glue_data"
MSR_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; counts requests; for names in ``server.cut_short`` it announces the whole length and
    sends half, as a dropped connection does."""

    def do_GET(self):
        self.server.requests.append(self.path)
        name = self.path.lstrip("/")
        if name in self.server.cut_short:
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL, the server): a threaded http.server on 127.0.0.1, any free port."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    httpd.requests, httpd.cut_short = [], set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/", httpd
    httpd.shutdown()
    httpd.server_close()


def task_files(task: str) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((FIXTURES / task).glob("*.tsv"))}


def write_zip(path: Path, folder: str, files: dict[str, bytes], extra: dict[str, bytes] = {}) -> Path:
    """A zip laid out like GLUE's: <folder>/<file>, plus extra members (paths relative to <folder>)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in {**files, **extra}.items():
            bundle.writestr(f"{folder}/{name}", data)
    return path


def table(task: str, files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {task: {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}


def leftovers(data_dir: Path) -> list[str]:
    return sorted(str(path.relative_to(data_dir)) for path in data_dir.rglob("*"))


def msr_sources(mrpc: Path) -> dict[str, bytes]:
    """The three MRPC source files GLUE's build reads, written back from a built MRPC folder: the corpus'
    train file holds the train and dev pairs (interleaved: the split must come from the dev ids, not the order),
    the test file the test pairs with a label column, the dev ids file the dev pairs' ids."""
    def rows(name: str) -> tuple[str, list[str]]:
        header, *lines = (mrpc / name).read_text(encoding="utf-8").split("\n")[:-1]
        return header + "\n", lines

    header, train = rows("train.tsv")
    _, dev = rows("dev.tsv")
    _, test = rows("test.tsv")
    assert header == MSR_HEADER
    mixed = [row for pair in zip(dev, train) for row in pair] + train[len(dev):] + dev[len(train):]
    return {
        "msr_paraphrase_train.txt": (header + "".join(row + "\n" for row in mixed)).encode(),
        "msr_paraphrase_test.txt": (MSR_HEADER + "".join("1\t" + row.split("\t", 1)[1] + "\n" for row in test)
                                    ).encode(),
        "mrpc_dev_ids.tsv": "".join("\t".join(row.split("\t")[1:3]) + "\n" for row in dev).encode(),
    }


# (1) a good download


def test_a_good_download_lands_in_its_task_folder(server, tmp_path):
    folder, base_url, httpd = server
    rte, wnli = task_files("RTE"), task_files("WNLI")
    write_zip(folder / "RTE.zip", "RTE", rte, extra={"original/README.txt": b"raw files"})
    write_zip(folder / "WNLI.zip", "WNLI", wnli)
    data_dir = tmp_path / "glue_data"
    results = download_glue.download("rte,WNLI", str(data_dir), base_url, checksums=table("RTE", rte))
    assert [(r.task, r.status, r.checksummed, r.problems) for r in results] == [
        ("RTE", "downloaded", True, []), ("WNLI", "downloaded", False, [])]
    assert httpd.requests == ["/RTE.zip", "/WNLI.zip"]
    for task, files in (("RTE", rte), ("WNLI", wnli)):
        assert {name: (data_dir / task / name).read_bytes() for name in files} == files
    assert (data_dir / "RTE" / "original" / "README.txt").read_bytes() == b"raw files"  # the whole task folder
    assert leftovers(data_dir) == ["RTE", "RTE/dev.tsv", "RTE/original", "RTE/original/README.txt", "RTE/test.tsv",
                                   "RTE/train.tsv", "WNLI", "WNLI/dev.tsv", "WNLI/test.tsv", "WNLI/train.tsv"]


def test_the_diagnostic_set_is_one_tsv_saved_as_diagnostic_tsv(server, tmp_path):
    folder, base_url, _ = server
    (folder / "AX.tsv").write_bytes((FIXTURES / "AX" / "diagnostic.tsv").read_bytes())
    [result] = download_glue.download(["diagnostic"], str(tmp_path), base_url, checksums={})
    assert (result.task, result.status, result.checksummed) == ("AX", "downloaded", False)
    diagnostic = (tmp_path / "diagnostic" / "diagnostic.tsv").read_bytes()
    assert diagnostic == (FIXTURES / "AX" / "diagnostic.tsv").read_bytes()


# (2) truncated, partial, corrupted


def test_a_truncated_zip_is_detected_removed_and_reported(server, tmp_path):
    folder, base_url, _ = server
    rte = task_files("RTE")
    data = write_zip(tmp_path / "RTE.zip", "RTE", rte).read_bytes()
    (folder / "RTE.zip").write_bytes(data[: len(data) * 2 // 3])
    data_dir = tmp_path / "glue_data"
    [result] = download_glue.download("RTE", str(data_dir), base_url, checksums=table("RTE", rte))
    assert result.status == "failed" and not result.ok
    assert result.problems == [result.problems[0]] and result.problems[0].startswith(
        "RTE: RTE.zip is not a complete zip archive (truncated or corrupted download")
    assert leftovers(data_dir) == []


def test_a_connection_dropped_midway_is_a_partial_download(server, tmp_path):
    folder, base_url, httpd = server
    rte = task_files("RTE")
    size = write_zip(folder / "RTE.zip", "RTE", rte).stat().st_size
    httpd.cut_short.add("RTE.zip")
    data_dir = tmp_path / "glue_data"
    [result] = download_glue.download("RTE", str(data_dir), base_url, checksums=table("RTE", rte))
    assert result.status == "failed"
    assert result.problems == [f"RTE: {base_url}RTE.zip: partial download: {size // 2} of {size} bytes"]
    assert leftovers(data_dir) == []


def test_a_corrupted_member_fails_its_crc_and_a_missing_file_or_url_is_named(server, tmp_path):
    folder, base_url, _ = server
    rte = task_files("RTE")
    with zipfile.ZipFile(folder / "RTE.zip", "w", zipfile.ZIP_STORED) as bundle:
        for name, data in rte.items():
            bundle.writestr(f"RTE/{name}", data)
    data = bytearray((folder / "RTE.zip").read_bytes())
    at = data.index(rte["dev.tsv"][:40]) + 10  # inside the stored dev.tsv
    data[at] ^= 0x20
    (folder / "RTE.zip").write_bytes(bytes(data))
    write_zip(folder / "WNLI.zip", "WNLI", {"train.tsv": b"x\n", "dev.tsv": b"x\n"})  # no test.tsv
    data_dir = tmp_path / "glue_data"
    results = download_glue.download("RTE,WNLI,QNLI", str(data_dir), base_url, checksums=table("RTE", rte))
    assert [r.problems for r in results] == [
        ["RTE: RTE.zip is corrupted: RTE/dev.tsv fails its CRC check"],
        ["WNLI: WNLI.zip has no test.tsv in WNLI"],
        [f"QNLI: {base_url}QNLIv2.zip: HTTP 404 File not found"],
    ]
    assert leftovers(data_dir) == []


def test_an_archive_with_unsafe_paths_is_refused(server, tmp_path):
    folder, base_url, _ = server
    rte = task_files("RTE")
    write_zip(folder / "RTE.zip", "RTE", rte, extra={"../../escape.tsv": b"x"})
    [result] = download_glue.download("RTE", str(tmp_path / "glue_data"), base_url, checksums={})
    assert result.problems == ["RTE: unsafe path 'RTE/../../escape.tsv' in the archive"]
    assert not (tmp_path / "escape.tsv").exists() and leftovers(tmp_path / "glue_data") == []


# (3) checksum mismatch


def test_a_checksum_mismatch_names_task_file_and_both_hashes_and_leaves_nothing(server, tmp_path):
    folder, base_url, _ = server
    rte = task_files("RTE")
    write_zip(folder / "RTE.zip", "RTE", {**rte, "dev.tsv": rte["dev.tsv"] + b"extra\n"})
    data_dir = tmp_path / "glue_data"
    [result] = download_glue.download("RTE", str(data_dir), base_url, checksums=table("RTE", rte))
    actual = hashlib.sha256(rte["dev.tsv"] + b"extra\n").hexdigest()
    expected = hashlib.sha256(rte["dev.tsv"]).hexdigest()
    assert result.status == "failed"
    assert result.problems == [f"RTE dev.tsv: checksum mismatch: expected SHA-256 {expected}, got {actual} "
                               f"({len(rte['dev.tsv']) + 6} bytes)"]
    assert leftovers(data_dir) == []


def test_the_official_table_accepts_the_shipped_rte_files_and_rejects_others(server, tmp_path):
    """The repo's RTE/train.tsv and dev.tsv are the official files: they pass the project's own table, and a
    test.tsv that is not the official one is the only problem reported."""
    folder, base_url, _ = server
    files = {"train.tsv": (ROOT / "RTE" / "train.tsv").read_bytes(), "dev.tsv": (ROOT / "RTE" / "dev.tsv").read_bytes(),
             "test.tsv": (FIXTURES / "RTE" / "test.tsv").read_bytes()}
    write_zip(folder / "RTE.zip", "RTE", files)
    [result] = download_glue.download("RTE", str(tmp_path / "glue_data"), base_url)
    assert len(result.problems) == 1 and result.problems[0].startswith(
        "RTE test.tsv: checksum mismatch: expected SHA-256 " + download_glue.load_checksums()["RTE"]["test.tsv"])


# (4) re-running


def test_a_second_run_skips_verified_tasks_and_replaces_damaged_ones(server, tmp_path):
    folder, base_url, httpd = server
    rte = task_files("RTE")
    write_zip(folder / "RTE.zip", "RTE", rte)
    data_dir = tmp_path / "glue_data"
    checksums = table("RTE", rte)
    assert download_glue.download("RTE", str(data_dir), base_url, checksums)[0].status == "downloaded"
    assert download_glue.download("RTE", str(data_dir), base_url, checksums)[0].status == "present"
    assert httpd.requests == ["/RTE.zip"]  # nothing fetched the second time
    (data_dir / "RTE" / "train.tsv").write_bytes(b"damaged\n")
    (data_dir / "RTE" / "mine.txt").write_text("a file of the user's")
    assert download_glue.download("RTE", str(data_dir), base_url, checksums)[0].status == "downloaded"
    assert (data_dir / "RTE" / "train.tsv").read_bytes() == rte["train.tsv"]
    assert (data_dir / "RTE" / "mine.txt").exists()
    assert httpd.requests == ["/RTE.zip", "/RTE.zip"]


# (5) MRPC


def test_mrpc_is_built_from_the_paraphrase_corpus_with_glues_split(server, tmp_path):
    """Source files written back from tests/fixtures/MRPC (the first rows of the official files) give those
    files again, byte for byte: the header's byte-order mark on train/dev, GLUE's test header and numbering."""
    folder, base_url, httpd = server
    for name, data in msr_sources(FIXTURES / "MRPC").items():
        (folder / name).write_bytes(data)
    mrpc = task_files("MRPC")
    data_dir = tmp_path / "glue_data"
    [result] = download_glue.download("MRPC", str(data_dir), base_url, checksums=table("MRPC", mrpc))
    assert (result.status, result.problems) == ("downloaded", [])
    assert sorted(httpd.requests) == ["/mrpc_dev_ids.tsv", "/msr_paraphrase_test.txt", "/msr_paraphrase_train.txt"]
    assert {name: (data_dir / "MRPC" / name).read_bytes() for name in mrpc} == mrpc
    assert leftovers(data_dir) == ["MRPC", "MRPC/dev.tsv", "MRPC/test.tsv", "MRPC/train.tsv"]


def test_mrpc_sources_with_crlf_line_ends_build_the_same_files(tmp_path):
    sources = msr_sources(FIXTURES / "MRPC")
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data.replace(b"\n", b"\r\n"))
    staging = tmp_path / "built"
    staging.mkdir()
    download_glue.build_mrpc(*(str(tmp_path / name) for name in sources), str(staging))
    assert {path.name: path.read_bytes() for path in staging.iterdir()} == task_files("MRPC")


@pytest.mark.parametrize("cut, problem", [
    (30, "MRPC train.tsv: checksum mismatch: expected SHA-256 "),  # the last sentence cut short
    (None, "MRPC: msr_paraphrase_train.txt, line 13: 2 tab-separated fields, expected 5 (corrupted download)"),
])
def test_a_truncated_mrpc_source_is_reported(server, tmp_path, cut, problem):
    folder, base_url, _ = server
    for name, data in msr_sources(FIXTURES / "MRPC").items():
        if name == "msr_paraphrase_train.txt":  # None: cut inside the last row's ids
            data = data[:-cut] if cut else data[: data.rindex(b"\n", 0, -1) + 10]
        (folder / name).write_bytes(data)
    data_dir = tmp_path / "glue_data"
    [result] = download_glue.download("MRPC", str(data_dir), base_url, checksums=table("MRPC", task_files("MRPC")))
    assert result.status == "failed" and len(result.problems) == 1 and result.problems[0].startswith(problem)
    assert leftovers(data_dir) == []


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="the official GLUE files are not in ../shared/glue_data")
def test_mrpc_built_from_the_full_corpus_matches_the_official_table(tmp_path):
    """Source files written back from the whole official MRPC build it again with the table's hashes; they have
    the byte counts Hugging Face datasets records for the real SentEval and GLUE source files."""
    sources = msr_sources(SHARED_GLUE / "MRPC")
    assert {name: len(data) for name, data in sources.items()} == {
        "msr_paraphrase_train.txt": 1047044, "msr_paraphrase_test.txt": 441275, "mrpc_dev_ids.tsv": 6222}
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
    staging = tmp_path / "built"
    staging.mkdir()
    download_glue.build_mrpc(*(str(tmp_path / name) for name in sources), str(staging))
    assert download_glue.verify("MRPC", str(staging), ("train.tsv", "dev.tsv", "test.tsv"),
                                download_glue.load_checksums()["MRPC"]) == []


# (6) the official table


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="the official GLUE files are not in ../shared/glue_data")
def test_the_table_holds_the_sha256_of_the_official_files():
    expected = {task: {name: hashlib.sha256((SHARED_GLUE / task / name).read_bytes()).hexdigest()
                       for name in ("train.tsv", "dev.tsv", "test.tsv")}
                for task in ("CoLA", "SST-2", "MRPC", "STS-B", "RTE")}
    assert download_glue.load_checksums() == expected


def test_the_table_covers_the_five_reference_tasks_and_matches_the_shipped_rte():
    table_ = download_glue.load_checksums()
    assert sorted(table_) == ["CoLA", "MRPC", "RTE", "SST-2", "STS-B"]
    for task, files in table_.items():
        assert sorted(files) == ["dev.tsv", "test.tsv", "train.tsv"] and task.lower() in TASKS
        assert all(len(value) == 64 and int(value, 16) >= 0 for value in files.values())
    for name in ("train.tsv", "dev.tsv"):
        assert hashlib.sha256((ROOT / "RTE" / name).read_bytes()).hexdigest() == table_["RTE"][name]


@pytest.mark.parametrize("tasks, expected", [
    ("all", ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX"]),
    ("RTE,MRPC", ["RTE", "MRPC"]),
    (" sst , STS,diagnostic,rte,RTE", ["SST-2", "STS-B", "AX", "RTE"]),
])
def test_task_names(tasks, expected):
    assert download_glue.resolve_tasks(tasks) == expected


def test_an_unknown_task_is_refused_with_a_suggestion():
    with pytest.raises(SystemExit, match="unknown task 'MRCP'; did you mean MRPC?"):
        download_glue.resolve_tasks("RTE,MRCP")


def test_the_official_urls():
    urls = {spec.name: [download_glue.source_url(name, base, "") for name, base in spec.download.downloads]
            for spec in TASKS.values()}
    glue = "https://dl.fbaipublicfiles.com/glue/data/"
    assert urls["RTE"] == [glue + "RTE.zip"] and urls["QQP"] == [glue + "QQP-clean.zip"]
    assert urls["QNLI"] == [glue + "QNLIv2.zip"] and urls["AX"] == [glue + "AX.tsv"]
    assert urls["MRPC"] == ["https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
                            "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt",
                            glue + "mrpc_dev_ids.tsv"]
    assert download_glue.source_url("RTE.zip", glue, "http://127.0.0.1:8000") == "http://127.0.0.1:8000/RTE.zip"


# (7) the command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "download_glue.py"), *args], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=120)


def test_the_script_downloads_from_base_url_end_to_end(server, tmp_path):
    folder, base_url, _ = server
    rte, cola = task_files("RTE"), task_files("CoLA")
    write_zip(folder / "RTE.zip", "RTE", rte)
    write_zip(folder / "CoLA.zip", "CoLA", cola)
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps({"_about": "fixtures", **table("RTE", rte), **table("CoLA", cola)}))
    data_dir = tmp_path / "glue_data"
    args = ["--tasks", "RTE,CoLA", "--data_dir", str(data_dir), "--base_url", base_url, "--checksums", str(checksums)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert {name: (data_dir / "CoLA" / name).read_bytes() for name in cola} == cola
    assert f"RTE: train.tsv, dev.tsv, test.tsv verified (SHA-256) -> {data_dir}/RTE/" in result.stderr
    assert f"CoLA: downloaded (SHA-256 verified) in {data_dir}/CoLA/" in result.stderr
    again = run_cli(*args)
    assert again.returncode == 0 and f"RTE: already in {data_dir}/RTE/, verified (SHA-256): skipped" in again.stderr

    (folder / "SST-2.zip").write_bytes(write_zip(tmp_path / "x.zip", "SST-2", task_files("SST-2")).read_bytes()[:200])
    failed = run_cli("--download.tasks", "SST-2,RTE", "--download.data_dir", str(data_dir), "--download.base_url",
                     base_url, "--download.checksums", str(checksums))
    assert failed.returncode == 1
    assert "download_glue.py: 1 of 2 tasks failed:\n  SST-2: SST-2.zip is not a complete zip archive" in failed.stderr
    assert sorted(path.name for path in data_dir.iterdir()) == ["CoLA", "RTE"]


def test_options_of_the_download_group_also_go_without_the_group_name():
    result = run_cli("--tasks", "RTE", "--download.base_url", "127.0.0.1:8000")
    assert result.returncode == 2 and "--download.base_url 127.0.0.1:8000: not a URL" in result.stderr
    result = run_cli("--task", "RTE")
    assert result.returncode == 2 and "unknown option --task; did you mean --download.tasks?" in result.stderr
    result = run_cli("--tasks", "RTE", "--download.tasks", "CoLA")
    assert result.returncode == 2 and "--download.tasks is given twice" in result.stderr
