"""What a run's numbers were made from, recorded beside them: the data files (size, SHA-256, examples) and the
versions of the libraries that computed them.

``train.py`` writes both into results.json, ``benchmark.py`` hashes the GLUE files to decide what it may reuse,
and the scoreboard shows them. Importing this loads neither torch nor transformers (versions come from the
installed packages' metadata), so the scoreboard stays light.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import os
import platform
from typing import Any, Optional

from glue_support.path_checks import require_regular_file

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
    with open(require_regular_file(path, "a file to fingerprint"), "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


# the files that make a model the model it is: its config and weights (its tokenizer shapes the features, which
# carry the vocabulary's own fingerprint)
MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def model_identity(name_or_path: str) -> dict[str, Any]:
    """What a model is by content: SHA-256 over the names and bytes of its config and weights files, so that a
    model replaced at the same path (or a hub id that now resolves to another revision) is another model. A hub id
    is resolved through Hugging Face's cache (downloading the files where they are not there, as ``from_pretrained``
    would), and its revision is recorded beside the checksum."""
    from glue_support import embedded_model  # light: resolving the default imports only its package

    folder, revision = embedded_model.resolve(name_or_path), None
    if not os.path.isdir(folder):
        from huggingface_hub import snapshot_download

        folder = snapshot_download(folder, allow_patterns=list(MODEL_FILES))
        revision = os.path.basename(os.path.normpath(folder))
    names = sorted(name for name in os.listdir(folder)
                   if any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILES)
                   and os.path.isfile(os.path.join(folder, name)))
    if "config.json" not in names:
        raise ValueError(f"{name_or_path}: no config.json in {folder}; expected a Hugging Face model folder")
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\0{file_identity(os.path.join(folder, name))['sha256']}\0".encode())
    return {"sha256": digest.hexdigest(), **({"revision": revision} if revision else {})}


def vocab_fingerprint(tokenizer: Any) -> str:
    """A hash of a tokenizer's vocabulary, which data.py records in the features: token ids are only valid for a
    model with the same one."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def features_data(metadata: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What features files were made from, by file name: the GLUE file (path, size, SHA-256) and the number of
    examples, from each file's metadata (``data.read_metadata``, by path)."""
    return {os.path.basename(path): {"source": found["source"], "bytes": found["source_bytes"],
                                     "sha256": found["source_sha256"], "examples": found["count"]}
            for path, found in metadata.items()}
