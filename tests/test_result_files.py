"""A run's result files (``glue_support.result_files``) on their own: results.json and history.json with their keys
in order, what the numbers were made from, and nothing written by processes other than the main one."""
from __future__ import annotations

import json

from glue_support import provenance
from glue_support.result_files import ResultFiles, provenance_record

METADATA = {f"f/{name}": {"source": f"glue/{name}", "source_bytes": size, "source_sha256": name[0] * 64,
                          "count": count}
            for name, size, count in (("train.tsv", 100, 4), ("dev.tsv", 50, 2))}
FILES = {"trainpath": ["f/train.tsv"], "valpath": ["f/dev.tsv"]}


def test_provenance_names_each_option_s_sources_and_the_versions():
    record = provenance_record(FILES, METADATA)
    assert list(record) == ["data", "versions"] and record["versions"] == provenance.versions()
    assert record["data"] == {
        "trainpath": {"train.tsv": {"source": "glue/train.tsv", "bytes": 100, "sha256": "t" * 64, "examples": 4}},
        "valpath": {"dev.tsv": {"source": "glue/dev.tsv", "bytes": 50, "sha256": "d" * 64, "examples": 2}}}


def test_results_hold_the_last_validations_then_the_best_then_the_provenance(tmp_path):
    record = {"data": {"valpath": {}}, "versions": {"python": "3"}}
    files = ResultFiles(str(tmp_path), "RTE", "tiny", record, is_main_process=True)
    last = {"dev.tsv": {"accuracy": 0.5, "step": 12}}
    predictions = {"dev.tsv": {"index": [0, 1], "label": [1, 0], "prediction": [1, 1]}}
    files.write_results(last, None, predictions)
    assert list(json.loads((tmp_path / "results.json").read_text())) == ["task", "model", "dev.tsv", "data",
                                                                          "versions", "predictions"]
    best = {"score": 0.7, "epoch": 1, "step": 6, "dev.tsv": {"accuracy": 0.7, "step": 6}}
    files.write_results(last, best, predictions)
    written = (tmp_path / "results.json").read_text()
    kept = {"file": "dev_predictions.json", "sha256": provenance.file_identity(tmp_path / "dev_predictions.json")[
        "sha256"]}
    assert written == json.dumps({"task": "RTE", "model": "tiny", **last, "best": best, **record,
                                  "predictions": kept}, indent=2)
    assert files.results_path == str(tmp_path / "results.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dev_predictions.json", "results.json"]


def test_history_holds_the_curves_after_the_task_and_model(tmp_path):
    history = {"train": [{"step": 4, "loss": 0.7}], "dev.tsv": [{"accuracy": 0.5}]}
    ResultFiles(str(tmp_path), "RTE", "tiny", {}, is_main_process=True).write_history(history)
    assert (tmp_path / "history.json").read_text() == json.dumps({"task": "RTE", "model": "tiny", **history}, indent=2)


def test_other_processes_write_nothing(tmp_path):
    files = ResultFiles(str(tmp_path), "RTE", "tiny", {}, is_main_process=False)
    files.write_results({"dev.tsv": {}}, None, {})
    files.write_history({"train": []})
    assert list(tmp_path.iterdir()) == []
