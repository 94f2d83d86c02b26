"""What a run's numbers were made from, recorded beside them: the data files (size, SHA-256, examples) and the
versions of the libraries that computed them.

``train.py`` writes both into results.json, ``benchmark.py`` hashes the GLUE files to decide what it may reuse,
and the scoreboard shows them. Importing this loads neither torch nor transformers (versions come from the
installed packages' metadata), so the scoreboard stays light.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from typing import Any, Optional

# the libraries whose versions can change the numbers: the arithmetic, the model code, the tokenizer, the loop
LIBRARIES = ("torch", "transformers", "tokenizers", "pymarlin")


def versions() -> dict[str, Optional[str]]:
    """Python's version and each of ``LIBRARIES``' installed version (None when one is not installed)."""
    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_identity(path: str) -> dict[str, Any]:
    """A file's size and SHA-256, the numbers ``data.py`` records as ``source_bytes`` and ``source_sha256``: a GLUE
    file can be compared with the features made from it without reading those."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def features_data(metadata: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What features files were made from, by file name: the GLUE file (path, size, SHA-256) and the number of
    examples, from each file's metadata (``data.read_metadata``, by path)."""
    return {os.path.basename(path): {"source": found["source"], "bytes": found["source_bytes"],
                                     "sha256": found["source_sha256"], "examples": found["count"]}
            for path, found in metadata.items()}
