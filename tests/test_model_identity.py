"""A model is identified by its contents: its config and weights files, wherever they lie; a benchmark compares
models so, in its reuse of runs, its folder and its scoreboard's title."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import benchmark
import data
from conftest import MODEL, ROOT, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, embedded_model
from glue_support.command_line import parse_config
from glue_support.provenance import model_identity


def replace_weights(model: Path) -> None:
    """Another model at the same path: one bit of its weights flipped."""
    weights = model / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1
    weights.write_bytes(bytes(content))


def test_the_same_files_elsewhere_are_the_same_model_and_changed_weights_another(tiny_bert, tmp_path):
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    assert model_identity(str(copy)) == model_identity(tiny_bert)
    replace_weights(copy)
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


# The benchmark: a model is the same model only with the same contents, in every place it is compared.

def benchmark_arguments(argv, options: list[str]) -> tuple:
    """benchmark.py's arguments, config and tasks for ``options``, as its main() parses them."""
    argv(*options)
    config = parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    args = benchmark_plan.BenchmarkArguments(**config["bench"])
    return args, config, benchmark_plan.parse_tasks(args, check_files=True)


def refuse(*args, **kwargs):
    raise AssertionError("nothing should be featurized or trained")


@pytest.fixture
def replaced(argv, tiny_bert, tmp_path, monkeypatch) -> tuple:
    """A benchmark folder with RTE seed 42 finished by a model whose weights were then replaced at the same path:
    the benchmark's options (without --seeds), that run and the model's identity before and after."""
    model = Path(shutil.copytree(tiny_bert, tmp_path / "model"))
    glue = write_rte_subset(tmp_path / "glue" / "RTE", train_rows=16, dev_rows=8).parent
    options = ["--tasks", "RTE", "--data_dir", str(glue), "--model", str(model), "--output_dir",
               str(tmp_path / "bench"), "--rte.max_seq_len", "64", "--parallel", "1"]
    args, config, specs = benchmark_arguments(argv, [*options, "--seeds", "1"])
    [run] = benchmark_plan.plan(args, config, specs)
    before = model_identity(str(model))
    Path(run.folder).mkdir(parents=True)
    (Path(run.folder) / "benchmark_run.json").write_text(json.dumps({
        "settings": benchmark_plan.run_identity(args, run, benchmark.read_sources(args, specs)["RTE"], before),
        "status": "done", "wall_s": 1.0, "attempts": 1}))
    replace_weights(model)
    monkeypatch.setattr(data, "featurize", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    return options, run, before, model_identity(str(model))


def test_a_rerun_with_a_replaced_model_and_one_more_seed_refuses_the_old_run_naming_both(argv, replaced):
    options, run, before, after = replaced
    record = (Path(run.folder) / "benchmark_run.json").read_bytes()
    argv(*options, "--seeds", "2")
    with pytest.raises(SystemExit, match=re.escape(
            f"{run.folder} holds a RTE seed 42 run with other settings (model {before['sha256'][:12]} -> "
            f"{after['sha256'][:12]}): choose another --bench.output_dir, or delete that folder to run it again")):
        benchmark.main()
    assert (Path(run.folder) / "benchmark_run.json").read_bytes() == record
    assert not (Path(run.folder).parent / "seed43").exists()


def test_runs_of_a_replaced_model_in_other_cells_are_refused_before_any_work(argv, replaced, tmp_path):
    options, run, before, after = replaced
    argv(*options, "--seeds", "1", "--rte.max_lr", "1.0e-4")  # another cell: no run of it in the folder
    model = options[options.index("--model") + 1]
    with pytest.raises(SystemExit, match=re.escape(
            f"{tmp_path / 'bench'} holds runs of {model} (sha256 {before['sha256'][:12]}), not of {model} (sha256 "
            f"{after['sha256'][:12]}): a benchmark folder holds the runs of one model")):
        benchmark.main()
    cells = sorted(path.name for path in (tmp_path / "bench" / "runs" / "RTE").iterdir())
    assert cells == [Path(run.folder).parent.name]


def test_report_only_titles_the_scoreboard_with_the_model_the_runs_recorded(argv, tmp_path):
    write_finished_run(tmp_path, "RTE", 42, {"dev.tsv": {"accuracy": 0.6}})
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", "--model", MODEL["name"])
    benchmark.main()
    assert (tmp_path / "results.md").read_text().startswith("# GLUE dev scores: m (sha256 000000000000)\n")
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (summary["model"], summary["model_identity"]) == (MODEL["name"], MODEL["identity"])


@pytest.mark.parametrize("model", ["another/model", None])  # None: the default, benchmark.yaml's
def test_report_only_refuses_another_model_than_the_runs_recorded(argv, tmp_path, model):
    write_finished_run(tmp_path, "RTE", 42, {"dev.tsv": {"accuracy": 0.6}})
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", *(["--model", model] if model else []))
    named = model or embedded_model.DEFAULT_MODEL
    with pytest.raises(SystemExit, match=rf"^--bench.model {named}: the runs in {tmp_path} were made by m \(sha256 "
                                         r"000000000000\); give --model m$"):
        benchmark.main()
    assert not (tmp_path / "results.md").exists()


def test_a_folder_of_runs_of_two_models_is_refused_naming_them(argv, tmp_path):
    write_finished_run(tmp_path, "RTE", 42, {"dev.tsv": {"accuracy": 0.6}})
    other = write_finished_run(tmp_path, "RTE", 43, {"dev.tsv": {"accuracy": 0.6}},
                               model_identity={"sha256": "1" * 64})
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", "--model", "m")
    with pytest.raises(ValueError, match=rf"^{tmp_path}: runs of two models, \S+/seed42 of m \(sha256 000000000000\) "
                                         rf"and {other} of m \(sha256 111111111111\); a benchmark folder holds"):
        benchmark.main()


def test_runs_recorded_without_a_model_identity_are_refused(argv, tmp_path):
    folder = write_finished_run(tmp_path, "RTE", 42, {"dev.tsv": {"accuracy": 0.6}})
    record = json.loads((folder / "benchmark_run.json").read_text())
    del record["settings"]["model_identity"]
    (folder / "benchmark_run.json").write_text(json.dumps(record))
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", "--model", "m")
    with pytest.raises(ValueError, match=rf"^{folder}: a run recorded without its model's identity"):
        benchmark.main()


def test_the_committed_grid_records_the_embedded_model_it_was_made_with():
    identity = model_identity(embedded_model.DEFAULT_MODEL)
    records = sorted((ROOT / "bench" / "grid" / "runs").glob("*/*/seed*/benchmark_run.json"))
    assert len(records) == 18
    for path in records:
        settings = json.loads(path.read_text())["settings"]
        assert (settings["model"], settings["model_identity"]) == (embedded_model.DEFAULT_MODEL, identity), path
