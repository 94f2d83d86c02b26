"""The featurizer, the features file and TaskDataset."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

import data
from conftest import FIXTURES, ROOT, config_defaults, featurize, python_env
from glue_processors import FeatureTable, GlueProcessor, InputFeatures


def processor_args(tokenizer: str, **overrides) -> data.DataProcessorArguments:
    return data.DataProcessorArguments(**config_defaults(
        "dproc", **{"task": "RTE", "set_type": "train", "max_seq_len": 32, "tokenizer": tokenizer, "workers": 1,
                    "tokenize_batch_size": 7, **overrides}))


@pytest.mark.parametrize("workers", [1, 2])
def test_data_py_writes_one_complete_file_named_after_its_input(tiny_bert, rte_subset, tmp_path, workers):
    output = tmp_path / "features" / "train"
    result = subprocess.run(
        [sys.executable, str(ROOT / "data.py"), "--dmod.input_dir", str(rte_subset), "--dmod.output_dir", str(output),
         "--dproc.task", "RTE", "--dproc.set_type", "train", "--dproc.tokenizer", tiny_bert, "--dproc.workers",
         str(workers), "--dproc.tokenize_batch_size", "5"],
        cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert os.listdir(output) == ["train.tsv"]
    assert "entailment: " in result.stderr and f"Wrote 48 features to {output / 'train.tsv'}" in result.stderr
    dataset = data.TaskDataset(str(output / "train.tsv"))
    assert len(dataset) == 48 and dataset.metadata["task"] == "RTE" and dataset.metadata["count"] == 48
    # streamed in one process or sharded over two workers: exactly what process() gives a list, in order
    single = FeatureTable.concatenate(data.Featurizer(
        processor_args(tiny_bert, max_seq_len=128), ("entailment", "not_entailment"),
        AutoTokenizer.from_pretrained(tiny_bert)).process(GlueProcessor("RTE").process(str(rte_subset), "train")))
    for name in ("input_ids", "token_type_ids", "offsets", "labels", "indexes"):
        assert np.array_equal(getattr(dataset.table, name), getattr(single, name)), name
    assert [f.index for f in dataset] == list(range(48))


def table(lengths: list[int], labels=None, indexes=None) -> FeatureTable:
    """A table of examples ``[100 + i] * n``, segment 0 then 1 for its second half."""
    ids = [np.full(n, 100 + i, dtype=np.int32) for i, n in enumerate(lengths)]
    types = [(np.arange(n) >= n // 2).astype(np.int8) for n in lengths]
    return FeatureTable(input_ids=np.concatenate(ids), token_type_ids=np.concatenate(types),
                        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                        labels=None if labels is None else np.array(labels),
                        indexes=np.array(indexes if indexes is not None else range(len(lengths)), dtype=np.int64))


def write_around(path, metadata: dict, body) -> None:
    """A features file written around ``write_features``' checks: ``metadata`` in this version's format with a
    matching metadata checksum (so ``read_metadata`` accepts it), then ``body`` as the second pickle."""
    record = {**metadata, "format": data.FEATURES_FORMAT}
    record["metadata_sha256"] = data.metadata_checksum(record)
    with open(path, "wb") as stream:
        pickle.dump(record, stream)
        pickle.dump(body, stream)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    dump = pickle.dump

    def disk_full(value, stream, *args, **kwargs):
        if isinstance(value, FeatureTable):
            stream.write(b"half a table")
            raise OSError(28, "No space left on device")
        dump(value, stream, *args, **kwargs)

    monkeypatch.setattr(data.pickle, "dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        data.write_features(str(tmp_path / "train.tsv"), {"task": "RTE"}, table([3, 4], labels=[0, 1]))
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
    write_around(path, {"count": 1, "task": "RTE"}, [_RunsCode(str(marker))])
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        data.TaskDataset(str(path))
    assert not marker.exists()
    hidden = table([2, 3])
    hidden.labels = _RunsCode(str(marker))  # inside an otherwise genuine table
    write_around(path, {"count": 2, "task": "RTE"}, hidden)
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        data.TaskDataset(str(path))
    assert not marker.exists()
    path.write_bytes(pickle.dumps(_RunsCode(str(marker))))
    with pytest.raises(ValueError, match="not a marlin-glue features file"):
        data.read_metadata(str(path))
    assert not marker.exists()


def test_a_bad_row_after_many_batches_were_tokenized_still_stops_data_py_and_writes_nothing(argv, tiny_bert,
                                                                                            rte_subset, tmp_path):
    """data.py tokenizes while it reads (batches encoded in a helper thread): a bad row late in the file
    must stop it all the same, with its line, and leave no features file."""
    train = rte_subset / "train.tsv"
    with open(train, "a", encoding="utf-8") as stream:
        stream.write("48\tonly one sentence\tentailment\n")
    argv("--dmod.input_dir", rte_subset, "--dmod.output_dir", tmp_path / "out", "--dproc.tokenizer", tiny_bert,
         "--dproc.tokenize_batch_size", "5")
    with pytest.raises(ValueError, match="train.tsv, line 50: 3 tab-separated columns, expected 4 for RTE train"):
        data.main()
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_an_encoder_failure_in_the_helper_thread_reaches_the_caller(tiny_bert, rte_subset):
    featurizer = data.Featurizer(processor_args(tiny_bert), ("entailment", "not_entailment"),
                                 AutoTokenizer.from_pretrained(tiny_bert))
    calls = []

    class FailingSecondBatch:
        def encode_batch_fast(self, texts):
            calls.append(len(texts))
            if len(calls) == 2:
                raise RuntimeError("encoder failed")
            return featurizer_encoder.encode_batch_fast(texts)

    featurizer_encoder, featurizer.encoder = featurizer.encoder, FailingSecondBatch()
    with pytest.raises(RuntimeError, match="encoder failed"):
        featurizer.process(GlueProcessor("RTE").stream(str(rte_subset), "train"))
    assert calls[:2] == [7, 7]


def test_input_errors_come_before_the_tokenizer_is_loaded_and_a_batch_size_below_one_is_refused(argv, tmp_path,
                                                                                               rte_subset):
    argv("--dmod.input_dir", rte_subset, "--dmod.output_dir", tmp_path / "out", "--dproc.set_type", "test",
         "--dproc.tokenizer", tmp_path / "no-such-tokenizer")
    with pytest.raises(FileNotFoundError, match="test.tsv: no such file"):
        data.main()
    argv("--dmod.input_dir", rte_subset, "--dmod.output_dir", tmp_path / "out", "--dproc.tokenize_batch_size", 0)
    with pytest.raises(SystemExit, match="--dproc.tokenize_batch_size 0: expected a number >= 1"):
        data.main()


@pytest.mark.parametrize("padding, width", [("dynamic", None), ("max_length", 64)])
def test_padding_is_recorded_in_the_features_and_applied_to_every_batch(tiny_bert, rte_subset, tmp_path, padding,
                                                                        width):
    path = featurize(rte_subset, tmp_path / padding, tiny_bert, "RTE", "dev", padding=padding)
    dataset = data.TaskDataset(str(path))
    assert dataset.metadata["padding"] == padding
    shortest = sorted(dataset, key=lambda feature: len(feature.input_ids))[:3]
    batch = dataset.collate_batch(shortest)
    longest = max(len(feature.input_ids) for feature in shortest)
    assert longest < 64 and batch["input_ids"].shape == (3, width or longest)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(f.input_ids) for f in shortest]


@pytest.mark.parametrize("task, pair", [("RTE", True), ("SST-2", False), ("STS-B", True)])
def test_a_features_file_reads_back_as_the_tokenizer_gives_each_example(tiny_bert, tmp_path, task, pair):
    raw = ROOT / "RTE" if task == "RTE" else FIXTURES / task
    path = featurize(raw, tmp_path, tiny_bert, task, "dev")
    dataset = data.TaskDataset(str(path))
    processor = GlueProcessor(task)
    examples = processor.process(str(raw), "dev")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert len(dataset) == len(examples) == dataset.metadata["count"] and (examples[0].text_b is not None) == pair
    for i, example in enumerate(examples):
        feature = dataset[i]
        expected = tokenizer(example.text_a, example.text_b, truncation=True, max_length=64)
        assert feature.input_ids.tolist() == expected["input_ids"]
        assert feature.token_type_ids.tolist() == expected["token_type_ids"]
        assert feature.index == example.index and isinstance(feature.index, int)
        if task == "STS-B":
            assert isinstance(feature.label, float) and feature.label == pytest.approx(float(example.label), abs=1e-6)
        else:
            assert type(feature.label) is int and processor.get_labels()[feature.label] == example.label
    assert dataset.table.labels.dtype == (np.float32 if task == "STS-B" else np.int64)
    assert dataset.lengths.tolist() == [len(feature.input_ids) for feature in dataset]


def test_test_features_have_no_labels_and_batches_none(tiny_bert, tmp_path):
    dataset = data.TaskDataset(str(featurize(FIXTURES / "SST-2", tmp_path, tiny_bert, "SST-2", "test")))
    assert dataset.table.labels is None and all(feature.label is None for feature in dataset)
    assert [feature.index for feature in dataset] == [int(line.split("\t")[0]) for line in
                                                      (FIXTURES / "SST-2" / "test.tsv").read_text().splitlines()[1:]]
    assert "labels" not in dataset.collate_batch([dataset[0], dataset[1]])


def test_dataset_items_are_views_of_the_table(tiny_bert, rte_subset, tmp_path):
    dataset = data.TaskDataset(str(featurize(rte_subset, tmp_path, tiny_bert, "RTE", "train")))
    table = dataset.table
    feature = dataset[5]
    assert not feature.input_ids.flags.owndata and not feature.token_type_ids.flags.owndata
    assert feature.input_ids.dtype == np.int32 and feature.token_type_ids.dtype == np.int8
    start, end = table.offsets[5], table.offsets[6]
    assert np.shares_memory(feature.input_ids, table.input_ids[start:end]) and len(feature.input_ids) == end - start
    assert np.shares_memory(feature.token_type_ids, table.token_type_ids[start:end])
    assert dataset[-1].index == dataset[len(dataset) - 1].index == 47
    with pytest.raises(IndexError, match="feature 48 out of range"):
        dataset[48]
    assert len(list(dataset)) == 48


def test_tables_concatenate_in_order():
    first, second = table([2, 3], labels=[1, 0], indexes=[0, 1]), table([4], labels=[2], indexes=[9])
    joined = FeatureTable.concatenate([first, second])
    joined.check()
    assert joined.offsets.tolist() == [0, 2, 5, 9] and joined.labels.tolist() == [1, 0, 2]
    assert [feature.input_ids.tolist() for feature in joined] == [[100] * 2, [101] * 3, [100] * 4]
    assert [feature.index for feature in joined] == [0, 1, 9]
    assert joined[2].token_type_ids.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="labeled features with unlabeled"):
        FeatureTable.concatenate([first, table([1])])


@pytest.mark.parametrize("version, body", [
    (1, [InputFeatures(np.array([101, 102], dtype=np.int32), np.zeros(2, dtype=np.int8), 0, 0)]),  # before the table
    (2, table([2, 3], labels=[0, 1])),  # before the checksums
])
def test_a_features_file_of_an_old_format_asks_for_data_py_again(tmp_path, version, body):
    path = tmp_path / "train.tsv"
    with open(path, "wb") as stream:
        pickle.dump({"format": f"marlin-glue-features/{version}", "count": 2, "task": "RTE"}, stream)
        pickle.dump(body, stream)
    assert data.FEATURES_FORMAT == "marlin-glue-features/3"
    for read in (data.read_metadata, data.verify_features, data.TaskDataset):
        with pytest.raises(ValueError, match=f"{path}: features file in format marlin-glue-features/{version}, "
                                             "written by an older data.py; .* rerun data.py to rewrite it"):
            read(str(path))


def test_a_foreign_class_in_a_features_file_is_refused(tmp_path):
    path = tmp_path / "train.tsv"  # the current header over the old body: InputFeatures are no longer admitted
    write_around(path, {"count": 1, "task": "RTE"},
                 [InputFeatures(np.array([101, 102], dtype=np.int32), np.zeros(2, dtype=np.int8), 0, 0)])
    with pytest.raises(ValueError, match="refusing to load glue_processors.InputFeatures"):
        data.TaskDataset(str(path))


@pytest.mark.parametrize("damage, message", [
    (lambda t: setattr(t, "offsets", t.offsets + 1), "offsets do not cut input_ids"),
    (lambda t: setattr(t, "input_ids", t.input_ids.astype(np.int64)), "input_ids is not a 1-D array of int32"),
    (lambda t: setattr(t, "labels", t.labels[:1]), "2 indexes, 3 offsets, 1 labels"),
    (lambda t: setattr(t, "token_type_ids", t.token_type_ids[:-1]), "5 input ids but 4 token type ids"),
    (lambda t: setattr(t, "indexes", np.array([7, 7])), "index 7 is on more than one example; every example needs"),
    (lambda t: setattr(t, "extra", 1), "a table with fields input_ids, .*, extra, expected input_ids, "),
    # one changed pickle opcode turns a field's name into bytes (found by test_properties' byte flips)
    (lambda t: vars(t).__setitem__(b"offsets", vars(t).pop("offsets")), "a table with fields .*b'offsets'"),
])
def test_an_inconsistent_table_is_refused_naming_the_file(tmp_path, damage, message):
    damaged = table([2, 3], labels=[0, 1])
    damage(damaged)
    path = tmp_path / "train.tsv"
    write_around(path, {"count": 2, "task": "RTE"}, damaged)  # write_features checks the table
    with pytest.raises(ValueError, match=f"{path}: damaged features file \\({message}"):
        data.TaskDataset(str(path))
    with pytest.raises(ValueError, match=message):
        data.write_features(str(tmp_path / "other.tsv"), {"task": "RTE"}, damaged)
    assert not (tmp_path / "other.tsv").exists()


def test_a_count_that_disagrees_with_the_table_is_refused(tmp_path):
    path = tmp_path / "train.tsv"
    write_around(path, {"count": 3, "task": "RTE"}, table([2, 3]))
    with pytest.raises(ValueError, match="damaged features file \\(2 features, the metadata says 3\\)"):
        data.TaskDataset(str(path))


def test_features_record_the_source_file_and_are_byte_identical_for_identical_input(tiny_bert, rte_subset, tmp_path):
    path = featurize(rte_subset, tmp_path / "first", tiny_bert, "RTE", "dev")
    metadata = data.verify_features(str(path))
    source = (rte_subset / "dev.tsv").read_bytes()
    assert metadata["source"] == str(rte_subset / "dev.tsv")
    assert metadata["source_bytes"] == len(source) and metadata["source_sha256"] == hashlib.sha256(source).hexdigest()
    assert set(metadata) == {"task", "set_type", "labels", "tokenizer", "vocab", "max_seq_len", "padding", "source",
                             "source_bytes", "source_sha256", "skipped_lines", "format", "count", "arrays_sha256",
                             "metadata_sha256"}
    assert featurize(rte_subset, tmp_path / "again", tiny_bert, "RTE", "dev").read_bytes() == path.read_bytes()
    # the same rows with CRLF line ends and a byte-order mark: the same features, from other bytes
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    (crlf / "dev.tsv").write_bytes(b"\xef\xbb\xbf" + source.replace(b"\n", b"\r\n"))
    other_metadata = data.verify_features(str(featurize(crlf, tmp_path / "crlf-features", tiny_bert, "RTE", "dev")))
    assert other_metadata["arrays_sha256"] == metadata["arrays_sha256"]
    assert other_metadata["source_sha256"] != metadata["source_sha256"]
    assert other_metadata["source_bytes"] == len(source) + 3 + source.count(b"\n")


@pytest.fixture
def features_path(tiny_bert, rte_subset, tmp_path):
    return featurize(rte_subset, tmp_path / "features", tiny_bert, "RTE", "dev")


def test_a_changed_byte_in_the_arrays_is_refused_by_every_full_read(features_path):
    """A changed input id leaves a consistent table, so only the checksum can tell; ``read_metadata`` does not
    read the arrays, which is why ``verify_features`` exists."""
    ids = data.read_features(str(features_path))[1].input_ids.tobytes()
    content = bytearray(features_path.read_bytes())
    assert content.count(ids) == 1
    content[content.index(ids) + 40] ^= 0x01
    features_path.write_bytes(content)
    assert data.read_metadata(str(features_path))["count"] == 24
    for read in (data.verify_features, data.read_features, data.TaskDataset):
        with pytest.raises(ValueError, match=f"^{features_path}: damaged features file \\(the arrays do not match the "
                                             "checksum data.py recorded for them\\); rerun data.py to rewrite it$"):
            read(str(features_path))


def test_a_changed_metadata_value_is_refused_by_read_metadata(features_path):
    content = features_path.read_bytes()
    assert content.count(b"dynamic") == 1
    features_path.write_bytes(content.replace(b"dynamic", b"dynamiC"))
    for read in (data.read_metadata, data.verify_features):
        with pytest.raises(ValueError, match=f"^{features_path}: damaged features file \\(the metadata record does not "
                                             "match the checksum data.py recorded for it\\); rerun data.py"):
            read(str(features_path))


@pytest.mark.parametrize("tail, what", [(b"\x00", "a stray byte"), (None, "the file twice")])
def test_anything_after_the_table_is_refused(features_path, tail, what):
    content = features_path.read_bytes()
    features_path.write_bytes(content + (content if tail is None else tail))
    with pytest.raises(ValueError, match=f"^{features_path}: damaged features file \\(more bytes after the feature "
                                         "table: two files concatenated, or an append\\?\\)"):
        data.verify_features(str(features_path))


def test_verify_features_returns_the_metadata_of_a_sound_file(features_path):
    assert data.verify_features(str(features_path)) == data.read_metadata(str(features_path))
