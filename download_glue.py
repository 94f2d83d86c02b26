"""Download GLUE tasks into ``<data_dir>/<task>/``, each file checked against ``glue_checksums.json``.

    python download_glue.py --tasks RTE,MRPC --data_dir glue_data

Options: config.yaml's ``download`` group (``--tasks`` and ``--data_dir`` as in the GLUE authors'
``download_glue_data.py``, whose sources the task table names). A task is moved in only once complete and
verified; a failed one leaves nothing behind and the script exits 1.
"""
from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional, Union

from tqdm import tqdm

from glue_processors import TASKS, TaskSpec, get_task
from glue_support.atomic_write import FILE_MODE, remove_leftovers
from glue_support.command_line import answer_help, parse_config
from glue_support.exit_codes import ConfigError, run_main
from glue_support.marlin import getlogger
from glue_support.path_checks import read_small_text, require_writable_folder

logger = getlogger(__name__)

CHECKSUMS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glue_checksums.json")
CHUNK = 1 << 20
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


class DownloadError(Exception):
    """A download that cannot be used: failed, partial, corrupted, or not what the table expects."""


@dataclass
class TaskResult:
    """What happened to one task: ``downloaded``, ``present`` (already there, nothing fetched) or ``failed``."""

    task: str
    status: str
    folder: str
    checksummed: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def resolve_tasks(tasks: Union[str, list[str], tuple[str, ...]]) -> list[str]:
    """``"RTE,MRPC"``, ``"all"`` or a list of names (any case; a task's aliases, download_glue_data.py's SST, STS
    and diagnostic, too) as the table's task names, in order, each once."""
    names = [name.strip() for name in (tasks.split(",") if isinstance(tasks, str) else tasks) if name.strip()]
    known = ", ".join(spec.name for spec in TASKS.values())
    if not names:
        raise ConfigError(f"--download.tasks is empty: give some of {known}, or all")
    # read from the table when called: a row added to TASKS is downloadable by its name and aliases
    by_name = {alias: spec.name for spec in TASKS.values() for alias in (spec.name.lower(), *spec.aliases)}
    resolved: list[str] = []
    for name in names:
        if name.lower() == "all":
            chosen = [spec.name for spec in TASKS.values()]
        elif name.lower() in by_name:
            chosen = [by_name[name.lower()]]
        else:
            close = difflib.get_close_matches(name.lower(), list(by_name), n=1, cutoff=0.6)
            hint = f"; did you mean {by_name[close[0]]}?" if close else ""
            raise ConfigError(f"--download.tasks: unknown task {name!r}{hint} (known: {known}, all)")
        resolved += [task for task in chosen if task not in resolved]
    return resolved


def load_checksums(path: str = CHECKSUMS_PATH) -> dict[str, dict[str, str]]:
    """The table: task -> file name -> SHA-256 (keys starting with ``_`` are comments)."""
    try:
        table = json.loads(read_small_text(path, "a JSON checksum table"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such checksum table") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not a JSON checksum table ({error})") from None
    except ValueError as error:  # not a regular file, not UTF-8, too large
        raise ConfigError(str(error)) from None
    if not (isinstance(table, dict) and all(isinstance(files, dict) for task, files in table.items()
                                            if not task.startswith("_"))):
        raise ConfigError(f"{path}: not a checksum table, expected a JSON object of task -> {{file name: SHA-256}}")
    return {task: files for task, files in table.items() if not task.startswith("_")}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def source_url(name: str, official: str, base_url: str) -> str:
    return (base_url.rstrip("/") + "/" if base_url else official) + name


def fetch(url: str, destination: str, timeout: float) -> int:
    """``url`` into ``destination``, with a progress bar; the byte count. A transfer that ends before the
    length the server announced is an error."""
    name = url.rstrip("/").rpartition("/")[2]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as stream:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False,
                      disable=None) as bar:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except http.client.IncompleteRead as error:
                        received += len(error.partial)
                        break
                    if not block:
                        break
                    stream.write(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"{url}: {error.reason}") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(f"{url}: no data for {timeout:g} s (partial download)") from None
    except (http.client.HTTPException, ConnectionError, OSError) as error:
        raise DownloadError(f"{url}: {type(error).__name__}: {error} (partial download)") from None
    if expected is not None and received != expected:
        raise DownloadError(f"{url}: partial download: {received} of {expected} bytes")
    return received


def _safe_relative(member: str, prefix: str) -> Optional[PurePosixPath]:
    """The path of ``member`` under ``prefix`` if it is there, or None; an unsafe path is an error."""
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts or "\\" in member:
        raise DownloadError(f"unsafe path {member!r} in the archive")
    if path.parts and path.parts[0] == "__MACOSX":
        return None
    if prefix and (len(path.parts) < 2 or path.parts[0] != prefix):
        return None
    return PurePosixPath(*path.parts[1:]) if prefix else path


def extract_zip(archive: str, name: str, files: tuple[str, ...], staging: str) -> None:
    """The task folder of a GLUE zip (``RTE/...`` -> ``staging/...``), after checking that the archive is
    complete, uncorrupted and holds every expected file."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            bad = bundle.testzip()
            if bad is not None:
                raise DownloadError(f"{name} is corrupted: {bad} fails its CRC check")
            members = [info for info in bundle.infolist() if not info.is_dir()]
            # the expected files sit in one folder (the task's) or at the top
            folders = {PurePosixPath(info.filename).parent.as_posix() for info in members
                       if PurePosixPath(info.filename).name == files[0]
                       and len(PurePosixPath(info.filename).parts) <= 2}
            if not folders:
                raise DownloadError(f"{name} has no {files[0]} (it holds "
                                    f"{', '.join(info.filename for info in members[:8]) or 'nothing'})")
            folder = min(folders, key=len)
            prefix = "" if folder == "." else folder
            names = {info.filename for info in members}
            missing = [file for file in files if (f"{prefix}/{file}" if prefix else file) not in names]
            if missing:
                raise DownloadError(f"{name} has no {', '.join(missing)} in {prefix or 'its top folder'}")
            for info in members:
                relative = _safe_relative(info.filename, prefix)
                if relative is None:
                    continue
                target = os.path.join(staging, *relative.parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with bundle.open(info) as source, open(target, "wb") as stream:
                    shutil.copyfileobj(source, stream, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as error:
        raise DownloadError(f"{name} is not a complete zip archive (truncated or corrupted download: {error})"
                            ) from None


def build_mrpc(train_txt: str, test_txt: str, dev_ids_tsv: str, staging: str) -> None:
    """MRPC's train.tsv, dev.tsv and test.tsv from the Microsoft Research Paraphrase Corpus files, as GLUE's
    ``download_glue_data.py`` builds them: the pairs listed in GLUE's dev ids go to dev.tsv, the other training
    pairs to train.tsv (both keep the corpus' header line, byte-order mark included); test.tsv numbers the test
    pairs and drops their labels. Fields are stripped and every line ends in ``\\n``."""
    def rows(path: str, stream) -> "list[tuple[int, list[str]]]":
        parsed = []
        for number, row in enumerate(stream, start=2):
            if not row.strip():
                continue
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise DownloadError(f"{os.path.basename(path)}, line {number}: {len(fields)} tab-separated fields, "
                                    "expected 5 (corrupted download)")
            parsed.append((number, fields))
        return parsed

    try:
        with open(dev_ids_tsv, encoding="utf-8") as stream:
            dev_ids = {tuple(row.strip().split("\t")) for row in stream if row.strip()}
        with open(train_txt, encoding="utf-8") as source:
            header = source.readline()
            train_rows = rows("msr_paraphrase_train.txt", source)
        with open(test_txt, encoding="utf-8") as source:
            source.readline()
            test_rows = rows("msr_paraphrase_test.txt", source)
    except UnicodeDecodeError as error:
        raise DownloadError(f"MRPC source files: bytes that are not UTF-8 ({error.reason}): corrupted download"
                            ) from None
    if not header.strip() or not train_rows or not test_rows:
        raise DownloadError("MRPC source files are empty or hold only a header (partial download)")
    header = header.rstrip("\r\n") + "\n"
    with open(os.path.join(staging, "train.tsv"), "w", encoding="utf-8", newline="\n") as train, \
            open(os.path.join(staging, "dev.tsv"), "w", encoding="utf-8", newline="\n") as dev:
        train.write(header)
        dev.write(header)
        for _, fields in train_rows:
            (dev if (fields[1], fields[2]) in dev_ids else train).write("\t".join(fields) + "\n")
    with open(os.path.join(staging, "test.tsv"), "w", encoding="utf-8", newline="\n") as test:
        test.write(MRPC_TEST_HEADER)
        for index, (_, fields) in enumerate(test_rows):
            test.write("\t".join([str(index), *fields[1:]]) + "\n")


def verify(task: str, folder: str, files: tuple[str, ...], expected: Optional[dict[str, str]]) -> list[str]:
    """Problems with ``folder``'s copy of the task's files: missing, empty, or (where the table has the file) a
    SHA-256 other than the table's."""
    problems = []
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{task} {name}: missing")
        elif os.path.getsize(path) == 0:
            problems.append(f"{task} {name}: empty file")
        elif expected and name in expected:
            actual = sha256(path)
            if actual != expected[name]:
                problems.append(f"{task} {name}: checksum mismatch: expected SHA-256 {expected[name]}, got {actual} "
                                f"({os.path.getsize(path)} bytes)")
    return problems


def install(staging: str, target: str) -> None:
    """Move everything in ``staging`` into ``target`` (each file appears whole, under its final name)."""
    os.makedirs(target, exist_ok=True)
    for root, _, names in os.walk(staging):
        for name in names:
            os.chmod(os.path.join(root, name), FILE_MODE)
    for entry in sorted(os.listdir(staging)):
        source, destination = os.path.join(staging, entry), os.path.join(target, entry)
        if os.path.isdir(destination) and not os.path.islink(destination):
            shutil.rmtree(destination)
        os.replace(source, destination)


def download_task(spec: TaskSpec, data_dir: str, base_url: str, expected: Optional[dict[str, str]],
                  timeout: float) -> TaskResult:
    """One task: skipped if already there and verified; otherwise fetched, checked, and moved in, or nothing is
    left behind."""
    task, source = spec.name, spec.download
    target = os.path.join(data_dir, source.folder)
    result = TaskResult(task, "failed", target, checksummed=bool(expected))
    if all(os.path.isfile(os.path.join(target, name)) for name in source.files):
        problems = verify(task, target, source.files, expected)
        if not problems:
            result.status = "present"
            logger.info(f"{task}: already in {target}/, "
                        f"{'verified (SHA-256)' if expected else 'not checksummed'}: skipped")
            return result
        logger.warning(f"{task}: the files in {target}/ fail verification ({'; '.join(problems)}): "
                       "downloading them again")
    staging = tempfile.mkdtemp(prefix=f".{source.folder}.", suffix=".staging", dir=data_dir)
    temporaries: list[str] = []
    try:
        for name, official in source.downloads:
            url = source_url(name, official, base_url)
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=data_dir)
            os.close(handle)
            temporaries.append(temporary)
            logger.info(f"{task}: downloading {url}")
            size = fetch(url, temporary, timeout)
            logger.info(f"{task}: {name}: {size} bytes")
        if source.kind == "zip":
            extract_zip(temporaries[0], source.downloads[0][0], source.files, staging)
        elif source.kind == "mrpc":
            build_mrpc(*temporaries, staging)
        else:
            os.replace(temporaries[0], os.path.join(staging, source.files[0]))
        result.problems = verify(task, staging, source.files, expected)
        if result.problems:
            return result
        install(staging, target)
        result.status = "downloaded"
        logger.info(f"{task}: {', '.join(source.files)} "
                    f"{'verified (SHA-256)' if expected else 'complete (not checksummed)'} -> {target}/")
        return result
    except DownloadError as error:
        result.problems = [f"{task}: {error}"]
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.unlink(temporary)
        for problem in result.problems:
            logger.error(f"{problem}; download removed")


def download(tasks: Union[str, list[str]], data_dir: str, base_url: str = "",
             checksums: Optional[dict[str, dict[str, str]]] = None, timeout: float = 60) -> list[TaskResult]:
    """Fetch ``tasks`` (``"RTE,MRPC"``, ``"all"`` or a list) into ``data_dir/<task>/``; one result per task.

    ``base_url`` "" uses the official URLs; otherwise every file is fetched from ``base_url/<official name>``.
    ``checksums`` (task -> file -> SHA-256) defaults to ``glue_checksums.json``; a task it does not list is
    downloaded and checked for completeness only."""
    names = resolve_tasks(tasks)
    table = load_checksums() if checksums is None else checksums
    os.makedirs(data_dir, exist_ok=True)
    # what a killed download left: download_task's partial files (.<file>.<random>.part) and staging folders
    removed = remove_leftovers(data_dir, files=".*.part", folders=".*.staging")
    if removed:
        logger.info(f"{data_dir}: removed what an interrupted download left ({', '.join(removed)})")
    return [download_task(get_task(name), data_dir, base_url, table.get(name), timeout) for name in names]


def main() -> None:
    answer_help(groups=("download",), short_group="download")
    config = parse_config(short_group="download")["download"]
    require_writable_folder("--download.data_dir", config["data_dir"], "the folder to put the task folders in")
    if config["base_url"] and "://" not in config["base_url"]:
        raise ConfigError(f"--download.base_url {config['base_url']}: not a URL (e.g. http://127.0.0.1:8000/)")
    tasks = resolve_tasks(config["tasks"])
    checksums = load_checksums(config["checksums"] or CHECKSUMS_PATH)
    logger.info(f"download_glue.py: {', '.join(tasks)} into {os.path.abspath(config['data_dir'])} from "
                f"{config['base_url'] or 'the official GLUE URLs'}")
    results = download(tasks, config["data_dir"], config["base_url"], checksums, config["timeout"])
    for result in results:
        how = "SHA-256 verified" if result.checksummed else "not checksummed"
        logger.info(f"{result.task}: {result.status} ({how}) in {result.folder}/" if result.ok else
                    f"{result.task}: FAILED, nothing written")
    failed = [result for result in results if not result.ok]
    if failed:
        problems = [problem for result in failed for problem in result.problems]
        lines = [f"{len(failed)} of {len(results)} tasks failed:", *problems]
        raise SystemExit("download_glue.py: " + "\n  ".join(lines))


if __name__ == "__main__":
    run_main(main)
