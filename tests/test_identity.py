"""A run's identity is everything it depends on: benchmark.py reuses features and finished runs only for the same
file bytes (wherever they lie), refuses a run made from other data naming the file, and every results file names
the data, its example counts and the library versions."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
import data
from conftest import MODEL, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, provenance, scoreboard, selection


def bench_options(tiny_bert: str, data_dir: Path, output: Path) -> list[str]:
    """RTE, one seed, one epoch of the tiny BERT."""
    return ["--tasks", "RTE", "--data_dir", str(data_dir), "--model", tiny_bert, "--seeds", "1",
            "--output_dir", str(output), "--rte.epochs", "1", "--rte.batch_size", "8", "--rte.max_seq_len", "64",
            "--checkpoint_steps", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """A benchmark run to the end on 48 RTE training rows (trained once for the module): its GLUE folder and its
    output folder, which the tests copy before running again into it."""
    root = tmp_path_factory.mktemp("identity")
    glue = root / "glue"
    write_rte_subset(glue / "RTE", train_rows=48, dev_rows=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # a train.py process on a tiny model: one thread is fastest
        patch.setattr(sys, "argv", ["benchmark.py", *bench_options(tiny_bert, glue, root / "bench")])
        benchmark.main()
    return glue, root / "bench"


@pytest.fixture
def output(finished, tmp_path) -> Path:
    """A copy of the finished benchmark's output folder, for this test to run into."""
    return Path(shutil.copytree(finished[1], tmp_path / "bench"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


RUN = Path("runs") / "RTE" / "lr5e-05-bs8-ep1-len64" / "seed42"  # the run, in the folder of its settings


def refuse(*args, **kwargs):
    raise AssertionError("nothing should be featurized or trained")


@pytest.mark.slow
def test_results_name_the_data_its_example_counts_and_the_versions(finished):
    glue, output = finished
    run = json.loads((output / RUN / "results.json").read_text())
    for option, name, rows in (("trainpath", "train.tsv", 48), ("valpath", "dev.tsv", 24)):
        source = glue / "RTE" / name
        assert run["data"][option] == {name: {"source": str(source), "bytes": source.stat().st_size,
                                              "sha256": sha256(source), "examples": rows}}
    assert run["task"] == "RTE" and run["dev.tsv"]["examples"] == 24
    versions = run["versions"]
    assert versions == provenance.versions() and list(versions) == ["python", *provenance.LIBRARIES]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3])) and all(versions.values())

    summary = json.loads((output / "results.json").read_text())
    assert summary["tasks"]["RTE"]["data"] == {**run["data"]["trainpath"], **run["data"]["valpath"]}
    assert summary["versions"] == [{"versions": versions, "runs": ["RTE seed 42"]}]
    table = (output / "results.md").read_text()
    for name, rows in (("train.tsv", 48), ("dev.tsv", 24)):
        assert f"| RTE | RTE/{name} | {rows} | `{sha256(glue / 'RTE' / name)}` |" in table  # no machine's path
    assert f"Made with python {versions['python']}, torch {versions['torch']}, transformers " in table

    record = json.loads((output / RUN / "benchmark_run.json").read_text())
    assert record["data_dir"] == str(glue)
    assert record["settings"]["data"] == {name: {"bytes": (glue / "RTE" / name).stat().st_size,
                                                 "sha256": sha256(glue / "RTE" / name)}
                                          for name in ("train.tsv", "dev.tsv")}


@pytest.mark.slow
def test_the_same_bytes_in_another_folder_reuse_the_features_and_the_finished_run(
        finished, output, tiny_bert, tmp_path, argv, monkeypatch):
    moved = Path(shutil.copytree(finished[0], tmp_path / "elsewhere"))
    monkeypatch.setattr(data, "featurize", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    argv(*bench_options(tiny_bert, moved, output))
    benchmark.main()
    assert json.loads((output / "results.json").read_text()) == json.loads((finished[1] / "results.json").read_text())


@pytest.mark.slow
def test_other_data_refuses_the_finished_run_naming_the_file_and_rebuilds_only_its_features(
        finished, output, tiny_bert, tmp_path, argv, caplog):
    glue = finished[0]
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=40, dev_rows=24).parent  # dev.tsv: same bytes
    features = output / "features" / "RTE" / f"{benchmark_plan.model_slug(tiny_bert)}-len64"
    dev_file = (features / "dev" / "dev.tsv").stat()
    argv(*bench_options(tiny_bert, other, output))
    refusal = (f"{output / RUN} holds a RTE seed 42 run with other data ({other}/RTE/train.tsv sha256 "
               f"{sha256(glue / 'RTE' / 'train.tsv')[:12]} -> {sha256(other / 'RTE' / 'train.tsv')[:12]}): "
               "choose another --bench.output_dir, or delete that folder to run it again")
    with pytest.raises(SystemExit, match=re.escape(refusal)):
        benchmark.main()
    assert data.read_metadata(str(features / "train" / "train.tsv"))["count"] == 48  # refused before any work

    shutil.rmtree(output / RUN)  # as the refusal says
    with caplog.at_level("INFO"):
        benchmark.main()
    assert (f"RTE train features: building them ({other}/RTE/train.tsv is not the file they were made from: "
            f"{(glue / 'RTE' / 'train.tsv').stat().st_size} -> {(other / 'RTE' / 'train.tsv').stat().st_size} bytes"
            ) in caplog.text
    assert "RTE dev features: building" not in caplog.text
    assert (features / "dev" / "dev.tsv").stat().st_mtime_ns == dev_file.st_mtime_ns
    run = json.loads((output / RUN / "results.json").read_text())
    assert run["data"]["trainpath"]["train.tsv"]["examples"] == 40
    assert run["data"]["trainpath"]["train.tsv"]["sha256"] == sha256(other / "RTE" / "train.tsv")
    assert run["data"]["valpath"]["dev.tsv"]["source"] == str(glue / "RTE" / "dev.tsv")  # reused: made from there


@pytest.mark.slow
def test_an_interrupted_run_on_other_data_is_refused_too(finished, output, tiny_bert, tmp_path, argv, monkeypatch):
    record_path = output / RUN / "benchmark_run.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "status": "running"}))
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=48, dev_rows=20).parent
    monkeypatch.setattr(data, "featurize", refuse)
    argv(*bench_options(tiny_bert, other, output))
    with pytest.raises(SystemExit, match=re.escape(f"run with other data ({other}/RTE/dev.tsv sha256 ")):
        benchmark.main()


@pytest.mark.slow
def test_settings_and_data_changed_together_are_both_named(finished, output, tiny_bert, tmp_path, argv):
    other = write_rte_subset(tmp_path / "other" / "RTE", train_rows=40, dev_rows=24).parent
    argv(*bench_options(tiny_bert, other, output), "--train_options", "--stats.log_steps 3")  # in the same cell
    with pytest.raises(SystemExit, match=r"run with other data and settings \(\S+/RTE/train.tsv sha256 \w{12} -> "
                                         r"\w{12}, train_options '' -> '--stats.log_steps 3'\)"):
        benchmark.main()


def test_the_scoreboard_names_runs_of_other_versions(tmp_path):
    """Runs resumed after an upgrade show which versions made which run."""
    for task, seed, torch_version in (("RTE", 1, "2.13.0"), ("RTE", 2, "2.14.0"), ("MRPC", 1, "2.13.0")):
        write_finished_run(tmp_path, task, seed, {"dev.tsv": {"accuracy": 0.5, "f1": 0.5},
                                                  "versions": {"python": "3.11.7", "torch": torch_version}})
    table = scoreboard.markdown(scoreboard.summarize(
        str(tmp_path), {task: selection.select(str(tmp_path), task) for task in ("RTE", "MRPC")}, MODEL, ""))
    assert ("Made with different versions:\n- python 3.11.7, torch 2.13.0: RTE seed 1, MRPC seed 1\n"
            "- python 3.11.7, torch 2.14.0: RTE seed 2\n") in table
