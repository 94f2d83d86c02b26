"""A model is identified by its contents: its config and weights files, wherever they lie."""
from __future__ import annotations

import shutil

import pytest

from glue_support.provenance import model_identity


def test_the_same_files_elsewhere_are_the_same_model_and_changed_weights_another(tiny_bert, tmp_path):
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    assert model_identity(str(copy)) == model_identity(tiny_bert)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_identity(str(copy)) != model_identity(tiny_bert)


def test_the_config_counts_and_the_tokenizer_does_not(tiny_bert, tmp_path):
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    (copy / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")  # the features carry their vocabulary's fingerprint
    assert model_identity(str(copy)) == model_identity(tiny_bert)
    config = copy / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace('"hidden_act": "gelu"', '"hidden_act": "relu"'),
                      encoding="utf-8")
    assert model_identity(str(copy)) != model_identity(tiny_bert)


def test_a_folder_without_a_config_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"^{tmp_path}: no config.json in {tmp_path}"):
        model_identity(str(tmp_path))
