"""The featurizer, the features file and TaskDataset."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

import data
from conftest import ROOT, config_defaults, python_env
from glue_processors import GlueProcessor, InputFeatures


def processor_args(tokenizer: str, **overrides) -> data.DataProcessorArguments:
    return data.DataProcessorArguments(**config_defaults(
        "dproc", **{"task": "RTE", "set_type": "train", "max_seq_len": 32, "tokenizer": tokenizer, "workers": 1,
                    "tokenize_batch_size": 7, **overrides}))


def test_features_match_the_tokenizer_truncated_and_unpadded(tiny_bert, rte_subset):
    examples = GlueProcessor("RTE").process(str(rte_subset), "train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    features = data.Featurizer(processor_args(tiny_bert), ("entailment", "not_entailment"), tokenizer).process(examples)
    assert len(features) == len(examples) == 48
    for example, feature in zip(examples, features):
        expected = tokenizer(example.text_a, example.text_b, truncation=True, max_length=32)
        assert feature.input_ids.tolist() == expected["input_ids"]
        assert feature.token_type_ids.tolist() == expected["token_type_ids"]
        assert feature.input_ids.dtype == np.int32
        assert feature.label == ("entailment", "not_entailment").index(example.label)
    assert max(len(f.input_ids) for f in features) == 32 > min(len(f.input_ids) for f in features)


def test_data_py_writes_one_complete_file_named_after_its_input(tiny_bert, rte_subset, tmp_path):
    output = tmp_path / "features" / "train"
    result = subprocess.run(
        [sys.executable, str(ROOT / "data.py"), "--dmod.input_dir", str(rte_subset), "--dmod.output_dir", str(output),
         "--dproc.task", "RTE", "--dproc.set_type", "train", "--dproc.tokenizer", tiny_bert, "--dproc.workers", "2",
         "--dproc.tokenize_batch_size", "5"],
        cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert os.listdir(output) == ["train.tsv"]
    assert "entailment: " in result.stderr and f"Wrote 48 features to {output / 'train.tsv'}" in result.stderr
    dataset = data.TaskDataset(str(output / "train.tsv"))
    assert len(dataset) == 48 and dataset.metadata["task"] == "RTE" and dataset.metadata["count"] == 48
    # two workers give exactly what one process gives, in the same order
    single = data.Featurizer(processor_args(tiny_bert, max_seq_len=128), ("entailment", "not_entailment"),
                             AutoTokenizer.from_pretrained(tiny_bert)).process(
        GlueProcessor("RTE").process(str(rte_subset), "train"))
    assert [f.input_ids.tolist() for f in dataset.features] == [f.input_ids.tolist() for f in single]
    assert [f.index for f in dataset.features] == list(range(48))


def test_collate_pads_each_batch_to_its_longest_member():
    features = [InputFeatures(np.array([101, 5, 102], dtype=np.int32), np.zeros(3, dtype=np.int8), 1, 0),
                InputFeatures(np.array([101, 6, 7, 8, 102], dtype=np.int32), np.array([0, 0, 0, 1, 1], dtype=np.int8), 0, 1)]
    batch = data.TaskDataset.collate(features)
    assert batch["input_ids"].tolist() == [[101, 5, 102, 0, 0], [101, 6, 7, 8, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    regression = data.TaskDataset.collate([InputFeatures(np.array([101, 102], dtype=np.int32), np.zeros(2, dtype=np.int8), 3.5, 0)])
    assert regression["labels"].dtype == torch.float


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises((pickle.PicklingError, AttributeError), match="pickle"):
        data.write_features(str(tmp_path / "train.tsv"), {"task": "RTE"}, [lambda: None])  # not picklable
    assert os.listdir(tmp_path) == []


def test_features_never_replace_the_glue_file_they_come_from(tiny_bert, rte_subset):
    original = (rte_subset / "dev.tsv").read_bytes()
    with pytest.raises(ValueError, match="dev.tsv: the features file would replace the GLUE file"):
        data.featurize(data.DataInterfaceArguments(str(rte_subset), str(rte_subset / ".")),
                       processor_args(tiny_bert, set_type="dev"))
    assert (rte_subset / "dev.tsv").read_bytes() == original


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_features_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "train.tsv"
    with open(path, "wb") as stream:
        pickle.dump({"format": data.FEATURES_FORMAT, "count": 1, "task": "RTE"}, stream)
        pickle.dump([_RunsCode(str(marker))], stream)
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        data.TaskDataset(str(path))
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ValueError, match="not a marlin-glue features file"):
        data.read_metadata(str(path))
    assert not marker.exists()
