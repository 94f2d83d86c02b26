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
from conftest import ROOT, config_defaults, featurize, python_env
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


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("task, set_type, content, message", [
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tentailment\n",
     "train.tsv, line 3: 3 tab-separated columns, expected 4 for RTE train"),
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tentailment\textra\n", "line 2: 5 tab-separated columns, expected 4"),
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tEntailment\n", "line 2: label 'Entailment' is not one of entailment, "
                                                            "not_entailment"),
    ("STS-B", "train", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                       "0\tg\tf\t2012\t1\tn\tn\tA b.\tC d.\tfive\n", "line 2: score 'five' is not a number"),
    ("RTE", "train", b"index\tsentence1\tsentence2\tlabel\n0\ta\t\xe9\tentailment\n", "line 2: bytes that are not UTF-8"),
    ("RTE", "train", "", "train.tsv: empty file (expected a header line)"),
    ("RTE", "train", RTE_HEADER, "train.tsv: no data rows (expected a RTE train file)"),
    ("RTE", "dev", None, "dev.tsv: no such file (expected the RTE dev.tsv)"),
    ("RTF", "train", RTE_HEADER, "unknown GLUE task 'RTF'; expected one of: CoLA, SST-2"),
    ("RTE", "dev_matched", RTE_HEADER, "task RTE has no set_type 'dev_matched'; expected one of: train, dev, test"),
])
def test_malformed_input_stops_data_py_naming_file_and_line_and_writes_nothing(argv, tiny_bert, tmp_path, task,
                                                                                set_type, content, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    if content is not None:
        target = raw / f"{set_type}.tsv" if task != "RTF" else raw / "train.tsv"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    argv("--dmod.input_dir", raw, "--dmod.output_dir", tmp_path / "out", "--dproc.task", task,
         "--dproc.set_type", set_type, "--dproc.tokenizer", tiny_bert)
    with pytest.raises(SystemExit) as stop:
        data.main()
    assert str(stop.value.code).startswith("data.py: ") and message in str(stop.value.code)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_data_py_exits_non_zero_with_one_line_and_a_missing_folder_is_named(tmp_path):
    raw = tmp_path / "RTE"
    raw.mkdir()
    (raw / "train.tsv").write_text(RTE_HEADER + "0\ta\tb\tmaybe\n", encoding="utf-8")
    command = [sys.executable, str(ROOT / "data.py"), "--dmod.output_dir", str(tmp_path / "out")]
    result = subprocess.run(command + ["--dmod.input_dir", str(raw)], env=python_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"data.py: {raw / 'train.tsv'}, line 2: label 'maybe' is not one of entailment, not_entailment "
        "(--dproc.skip_malformed true leaves such rows out)")
    result = subprocess.run(command + ["--dmod.input_dir", str(tmp_path / "RTe")], env=python_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].endswith(f"did you mean {raw}?")
    assert not (tmp_path / "out").exists()


def test_skipping_malformed_rows_reports_each_and_the_total(argv, tiny_bert, tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.tsv").write_text(RTE_HEADER + "0\ta\tb\tentailment\n1\tbroken\n2\tc\td\tnope\n3\te\tf\tentailment\n",
                                   encoding="utf-8")
    argv("--dmod.input_dir", raw, "--dmod.output_dir", tmp_path / "out", "--dproc.tokenizer", tiny_bert,
         "--dproc.skip_malformed", "true", "--dproc.workers", "1")
    with caplog.at_level("INFO"):
        data.main()
    assert "train.tsv, line 3: skipped: 2 tab-separated columns" in caplog.text
    assert "train.tsv, line 4: skipped: label 'nope'" in caplog.text
    assert "RTE: 2 examples; labels entailment: 2, not_entailment: 0; 2 malformed rows skipped" in caplog.text
    dataset = data.TaskDataset(str(tmp_path / "out" / "train.tsv"))
    assert [feature.index for feature in dataset.features] == [0, 3] and dataset.metadata["skipped_lines"] == [3, 4]


@pytest.mark.parametrize("padding, width", [("dynamic", None), ("max_length", 64)])
def test_padding_is_recorded_in_the_features_and_applied_to_every_batch(tiny_bert, rte_subset, tmp_path, padding,
                                                                        width):
    path = featurize(rte_subset, tmp_path / padding, tiny_bert, "RTE", "dev", padding=padding)
    dataset = data.TaskDataset(str(path))
    assert dataset.metadata["padding"] == padding
    shortest = sorted(dataset.features, key=lambda feature: len(feature.input_ids))[:3]
    batch = dataset.collate_batch(shortest)
    longest = max(len(feature.input_ids) for feature in shortest)
    assert longest < 64 and batch["input_ids"].shape == (3, width or longest)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(f.input_ids) for f in shortest]
