"""Paths a script cannot run without, checked before any work: each refusal names the option, the path and what
was expected, with a close existing name where there is one."""
from __future__ import annotations

import difflib
import os
import stat
import tempfile

from glue_support.exit_codes import ConfigError


def require_path(option: str, path: str, what: str) -> str:
    """``path`` (the value of ``option``) must exist; otherwise an error naming it, with a close name if any."""
    if not path:
        raise ConfigError(f"{option} is required: {what}")
    if os.path.exists(path):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    siblings = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
    close = difflib.get_close_matches(os.path.basename(os.path.normpath(path)), siblings, n=1, cutoff=0.6)
    hint = f"; did you mean {os.path.join(os.path.dirname(path), close[0])}?" if close else ""
    raise ConfigError(f"{option} {path}: no such file or folder ({what}){hint}")


def require_folder(option: str, path: str, what: str) -> str:
    """``require_path`` for a folder: a file given instead is named as one, with the folder it is in as the fix."""
    require_path(option, path, what)
    if not os.path.isdir(path):
        raise ConfigError(f"{option} {path}: a file, expected a folder ({what}); did you mean "
                          f"{option} {os.path.dirname(path) or '.'}?")
    return path


# what a path names when it is not a regular file: each of these blocks a read (a FIFO waits for a writer), never
# ends it (a device such as /dev/zero) or fails it (a folder)
NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def require_regular_file(path: str, what: str) -> str:
    """``path`` (or what a link there points to) must be a regular file before it is opened: anything else is
    refused with a ValueError naming what it is. A path that names nothing raises FileNotFoundError, as ``open``
    would. ``what``: the file the command expected, for the message."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        found = next((kind for test, kind in NOT_REGULAR if test(mode)), "not a file")
        raise ValueError(f"{path}: {found}, expected a regular file ({what})")
    return path


def read_small_text(path: str, what: str, limit: int = 1 << 20) -> str:
    """The text of a small UTF-8 file (a config file, a checksum table: a few kilobytes), opened once it is a
    regular file; more than ``limit`` characters, or bytes that are not UTF-8, are refused (ValueError) naming it.
    A path that names nothing raises FileNotFoundError."""
    with open(require_regular_file(path, what), encoding="utf-8") as stream:
        try:
            text = stream.read(limit + 1)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: bytes that are not UTF-8 ({error.reason}), expected {what}") from None
    if len(text) > limit:
        raise ValueError(f"{path}: more than {limit} characters, expected {what} (a few kilobytes)")
    return text


def require_writable_folder(option: str, path: str, what: str) -> str:
    """A folder a script will write into, refused now if it cannot be made or written (a file in its way, no
    permission, a read-only disk) rather than once the work is done. Nothing is created: the test file goes into
    the nearest folder that exists."""
    if not path:
        raise ConfigError(f"{option} is required: {what}")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{option} {path}: {existing} is a file, expected a folder ({what})")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot write in {existing} ({error.strerror}); choose a folder "
                          "you can write to") from None
    return path
