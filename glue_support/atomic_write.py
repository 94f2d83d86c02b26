"""Outputs appear under their final name only when complete: a killed run never leaves a half-written
features file, results file or model behind. What it does leave, hidden temporaries, ``remove_leftovers`` finds by
their names."""
from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: changing the umask later, even briefly, would race with other threads' files.
FILE_MODE = 0o666 & ~_read_umask()

# The names of the temporaries below: ``.<final name>.<random>.tmp`` files and ``.staging.<random>`` folders.
TEMPORARY_FILES = ".*.tmp"
STAGING_FOLDERS = ".staging.*"


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; once the block succeeds it is renamed to ``path`` (with the
    permissions a plain ``open`` would give), and if the block fails it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@contextmanager
def atomic_files_into(folder: str) -> Iterator[str]:
    """Yield a temporary folder inside ``folder``; once the block succeeds every file written there is moved
    into ``folder``, and if the block fails nothing is."""
    os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging.", dir=folder)
    try:
        yield staging
        for name in os.listdir(staging):
            os.chmod(os.path.join(staging, name), FILE_MODE)
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_leftovers(folder: str, files: str = TEMPORARY_FILES, folders: str = STAGING_FOLDERS) -> list[str]:
    """Remove the temporaries killed writers left directly in ``folder``: files named like ``files`` and folders
    named like ``folders`` (shell patterns; by default this module's), nothing else. Only for a folder no live
    process writes to: a live writer's temporaries look the same. The names removed."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            if fnmatch.fnmatchcase(name, folders):
                shutil.rmtree(path)
                removed.append(name)
        elif fnmatch.fnmatchcase(name, files):
            os.unlink(path)
            removed.append(name)
    return removed


def write_json(path: str, content: Any) -> None:
    """``content`` as indented JSON at ``path``, atomically: a reader (the scoreboard, a resumed benchmark) never
    finds half a file. Strict JSON: a NaN or an infinity is refused with a ValueError naming the file and the key,
    never written as a bare ``NaN``, which is not JSON."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        try:
            json.dump(content, stream, indent=2, allow_nan=False)
        except ValueError:
            where, value = _non_finite(content)
            if not where:  # another of json's refusals (a circular reference)
                raise
            raise ValueError(f"{path}: {where} is {value}, which JSON cannot hold: not written") from None


def _non_finite(content: Any, where: str = "") -> tuple[str, float]:
    """The first number in ``content`` that is NaN or infinite: its keys (``a > b > 0``) and itself."""
    if isinstance(content, float) and not math.isfinite(content):
        return where or "the content", content
    items = content.items() if isinstance(content, dict) else enumerate(content) if isinstance(
        content, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where} > {key}" if where else str(key))
        if found[0]:
            return found
    return "", 0.0
