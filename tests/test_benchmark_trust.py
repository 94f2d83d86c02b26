"""Every number the benchmark reports is what it claims: a run whose training diverged is recorded as such, shown,
never scored, selected or retried; a benchmark writes only into a folder it owns (its lock taken before any
write) and replaces only its own files; --report_only scores only a folder of benchmark runs; and what a command
line cannot run is refused before any work, naming the option."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
import data
from conftest import MODEL, bench_arguments, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, output_folder, provenance, scoreboard, selection
from glue_support.command_line import parse_config
from glue_support.run_record import read_diverged, read_run

CELL = "lr5e-05-bs8-ep1-len64"  # the cell of bench_options' runs
DIVERGED = {"step": 37, "epoch": 1, "loss": "nan"}  # train.py's results.json when training diverges


def strict_json(path: Path):
    """The JSON at ``path``, refusing NaN and Infinity as the JSON standard does."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def bench_options(tiny_bert: str, glue: Path, output: Path, *extra: str) -> list[str]:
    """RTE, two seeds, one cell, one run at a time."""
    return ["--tasks", "RTE", "--data_dir", str(glue), "--model", tiny_bert, "--seeds", "2", "--output_dir",
            str(output), "--rte.epochs", "1", "--rte.batch_size", "8", "--rte.max_seq_len", "64",
            "--checkpoint_steps", "0", "--parallel", "1", *extra]


@pytest.fixture
def glue(tmp_path) -> Path:
    return write_rte_subset(tmp_path / "glue" / "RTE", train_rows=48, dev_rows=24).parent


# What train.py leaves in its output folder, written by a stand-in for it: a finished run's results.json and
# history.json (exit 0), or a diverged run's results.json (exit 1), as the outcome given for the run's seed says.
FAKE_TRAIN = """
import json, os, sys
folder, outcome = sys.argv[1], json.loads(sys.argv[2])
def write(name, content):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as stream:
        json.dump(content, stream, allow_nan=False)
if "diverged" in outcome:
    write("results.json", outcome)
    sys.exit(1)
write("results.json", outcome["results"])
write("history.json", outcome["history"])
"""


def finished(glue: Path, accuracy: float) -> dict:
    """A finished RTE run's outcome: its results.json (best validation at epoch 1) and history.json."""
    files = {name: {"source": str(glue / "RTE" / name), **provenance.file_identity(str(glue / "RTE" / name)),
                    "examples": rows} for name, rows in (("train.tsv", 48), ("dev.tsv", 24))}
    validation = {"accuracy": accuracy, "loss": 0.7, "epoch": 1, "step": 6}
    results = {"task": "RTE", "data": {"trainpath": {"train.tsv": files["train.tsv"]},
                                       "valpath": {"dev.tsv": files["dev.tsv"]}},
               "versions": provenance.versions(), "dev.tsv": validation,
               "best": {"score": accuracy, "epoch": 1, "step": 6, "dev.tsv": validation}}
    return {"results": results, "history": {"train": [{"step": 6, "loss": 0.7}], "dev.tsv": [validation]}}


@pytest.fixture
def fake_train(monkeypatch):
    """train.py replaced by FAKE_TRAIN: ``outcomes[seed]`` is what each run of that seed leaves; the seeds started,
    in order, in ``started``."""
    outcomes: dict[int, dict] = {}
    started: list[int] = []

    def command(args, run, resume):
        started.append(run.seed)
        return [sys.executable, "-c", FAKE_TRAIN, run.folder, json.dumps(outcomes[run.seed])]

    monkeypatch.setattr(benchmark, "train_command", command)
    monkeypatch.setattr(benchmark, "build_features", lambda args, run, files: None)  # the stand-in reads none
    return outcomes, started


def refuse(*args, **kwargs):
    raise AssertionError("nothing should be featurized or trained")


def test_a_diverged_run_is_a_result_the_benchmark_goes_on_and_never_scores_it(
        argv, tiny_bert, glue, tmp_path, fake_train, caplog):
    outcomes, started = fake_train
    outcomes.update({42: {"diverged": DIVERGED}, 43: finished(glue, 0.625)})
    output = tmp_path / "bench"
    argv(*bench_options(tiny_bert, glue, output))
    benchmark.main()  # exit 0: a diverged run is a result, not a failure
    assert started == [42, 43]  # seed 43 ran after seed 42 diverged
    seed42 = output / "runs" / "RTE" / CELL / "seed42"
    assert strict_json(seed42 / "benchmark_run.json")["status"] == "diverged"

    summary = strict_json(output / "results.json")
    entry = summary["tasks"]["RTE"]
    assert entry["score"]["values"] == [62.5] and entry["score"]["std"] is None and entry["seeds"] == [43]
    assert entry["cells"][0]["diverged"] == [{"seed": 42, **DIVERGED}]
    assert summary["glue_average"] == 62.5
    table = (output / "results.md").read_text(encoding="utf-8")
    assert "| RTE | acc | **62.5**<br>last epoch 62.5 |  | 1: 62.5<br>seed 42 diverged at step 37 | " in table
    assert f"| **{CELL}** (chosen) | 5e-05 | 8 | 1 | 64 | 42: diverged at step 37, 43: 62.5 (1) | 62.5 | " in table

    # the same command again: the diverged run is reported again, not retried
    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO"):
        patch.setattr(subprocess, "Popen", refuse)
        benchmark.main()
    assert f"RTE seed 42: diverged earlier, skipped (delete {seed42} to run it again)" in caplog.text
    assert strict_json(output / "results.json") == summary

    # its folder deleted, it runs again
    shutil.rmtree(seed42)
    outcomes[42] = finished(glue, 0.5)
    benchmark.main()
    assert started == [42, 43, 42]
    assert strict_json(output / "results.json")["tasks"]["RTE"]["score"]["values"] == [50.0, 62.5]


def test_a_run_that_fails_without_diverging_still_stops_the_benchmark(argv, tiny_bert, glue, tmp_path, fake_train):
    outcomes, started = fake_train
    outcomes.update({42: {}, 43: finished(glue, 0.625)})  # 42: the stand-in crashes (exit 1), writing nothing
    argv(*bench_options(tiny_bert, glue, tmp_path / "bench"))
    with pytest.raises(SystemExit, match=r"RTE seed 42 failed \(exit 1\)"):
        benchmark.main()
    assert started == [42]
    record = strict_json(tmp_path / "bench" / "runs" / "RTE" / CELL / "seed42" / "benchmark_run.json")
    assert record["status"] == "running"  # the same command resumes it


def write_diverged_run(output: Path, task: str, seed: int, **settings) -> Path:
    """A run of ``task`` that diverged, as benchmark.py and train.py leave it (write_finished_run's settings)."""
    folder = write_finished_run(output, task, seed, {}, **settings)
    (folder / "results.json").write_text(json.dumps({"diverged": DIVERGED}))
    (folder / "history.json").unlink()
    record = json.loads((folder / "benchmark_run.json").read_text())
    (folder / "benchmark_run.json").write_text(json.dumps({**record, "status": "diverged"}))
    return folder


def accuracy(value: float) -> dict:
    return {"dev.tsv": {"accuracy": value}}


def test_a_cell_whose_runs_all_diverged_cannot_be_selected(tmp_path):
    for seed in (42, 43):
        write_diverged_run(tmp_path, "RTE", seed, max_lr=1e-3)
        write_finished_run(tmp_path, "RTE", seed, accuracy(0.5), max_lr=5e-5)
    chosen = selection.select(str(tmp_path), "RTE")
    assert chosen.cell.name == "lr5e-05-bs16-ep3-len128" and chosen.run.seed == 42
    assert [(cell.name, cell.score) for cell in chosen.cells if not cell.runs] == [("lr0.001-bs16-ep3-len128", None)]
    summary = scoreboard.summarize(str(tmp_path), {"RTE": chosen}, MODEL, "")
    table = scoreboard.markdown(summary)
    assert ("| lr0.001-bs16-ep3-len128 | 0.001 | 16 | 3 | 128 | 42: diverged at step 37, 43: diverged at step 37 | "
            "– | – | – |") in table
    assert "seed 42 diverged at step 37 (lr0.001-bs16-ep3-len128)" in table  # in the task's row, with its cell
    scoreboard.chart(summary, str(tmp_path / "results.png"))  # its grid panel: the cell with a score only
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_task_whose_runs_all_diverged_has_no_score_and_no_place_in_the_glue_average(tmp_path, monkeypatch):
    write_diverged_run(tmp_path, "RTE", 42)
    write_finished_run(tmp_path, "MRPC", 42, {"dev.tsv": {"accuracy": 0.8, "f1": 0.9}})
    paths = scoreboard.write(str(tmp_path), scoreboard.folder_summary(str(tmp_path), ["RTE", "MRPC"], ""))
    summary = strict_json(Path(paths["json"]))
    rte = summary["tasks"]["RTE"]
    assert (rte["score"], rte["selected"], rte["settings"], rte["seeds"]) == (None, None, None, [])
    assert summary["glue_average"] == pytest.approx(85.0)  # MRPC's alone: RTE's is not 0
    table = Path(paths["md"]).read_text(encoding="utf-8")
    assert "| RTE | acc | **no score**: every run diverged |  | 0<br>seed 42 diverged at step 37 | " in table
    assert "GLUE average over 1 tasks (MRPC): 85.0" in table and "No score for RTE: every run diverged" in table

    args = bench_arguments(tasks="RTE,MRPC", output_dir=str(tmp_path))
    assert benchmark.selected_run(args, "RTE") is None  # nothing predicts RTE, nothing starts from it
    predicted = []
    monkeypatch.setattr(benchmark, "predict", lambda args, spec, run_folder: predicted.append(spec.name) or [])
    monkeypatch.setattr(benchmark, "write_submission_zip", lambda folder, zip_path: None)
    benchmark.predict_all(args, {"wnli": {"majority": False}}, [benchmark.get_task(name) for name in ("RTE", "MRPC")])
    assert predicted == ["MRPC"]


def test_a_diverged_run_without_its_divergence_recorded_is_refused_naming_the_file(tmp_path):
    folder = write_diverged_run(tmp_path, "RTE", 42)
    assert read_diverged(str(folder)).describe() == "seed 42 diverged at step 37" and read_run(str(folder)) is None
    (folder / "results.json").write_text(json.dumps({"diverged": {"step": "37"}}))
    with pytest.raises(ValueError, match=rf"^{folder}/results.json: no record of where the run diverged"):
        selection.select(str(tmp_path), "RTE")


def test_results_holding_nan_are_refused_naming_the_file(tmp_path):
    """A run that diverged before train.py recorded divergence wrote NaN, which no JSON reader need accept."""
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    (folder / "results.json").write_text((folder / "results.json").read_text().replace('"accuracy": 0.6',
                                                                                      '"accuracy": 0.6, "loss": NaN'))
    with pytest.raises(ValueError, match=rf"^{folder}/results.json: holds NaN, which is not JSON"):
        read_run(str(folder))


@pytest.mark.parametrize("folder", ["missing", "empty", "train.py run"])
def test_report_only_refuses_a_folder_without_benchmark_runs_and_writes_nothing(argv, tmp_path, folder):
    output = tmp_path / "out"
    if folder != "missing":
        output.mkdir()
    if folder == "train.py run":
        (output / "results.json").write_text(json.dumps({"task": "RTE", "dev.tsv": {"accuracy": 0.6}}))
    before = sorted(output.rglob("*")) if output.exists() else None
    argv("--tasks", "RTE", "--output_dir", output, "--report_only", "true")
    expected = "no such file or folder" if folder == "missing" else (
        rf"--bench.output_dir {output}: no benchmark run of RTE there \(runs/<Task>/<cell>/seed<N>/benchmark_run")
    with pytest.raises(SystemExit, match=expected):
        benchmark.main()
    assert (sorted(output.rglob("*")) if output.exists() else None) == before


@pytest.mark.parametrize("name, content, why", [
    ("results.json", json.dumps({"task": "RTE", "dev.tsv": {"accuracy": 0.6}}), "a train.py run's results, of RTE"),
    ("results.md", "# My notes\n", "no '# GLUE dev scores:' title"),
])
def test_results_files_the_benchmark_did_not_write_are_never_replaced(argv, tmp_path, name, content, why):
    write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    (tmp_path / name).write_text(content)
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", "--model", "m")
    with pytest.raises(ValueError, match=rf"^{tmp_path / name}: not a benchmark scoreboard's \({re.escape(why)}\)"):
        benchmark.main()
    assert (tmp_path / name).read_text() == content
    (tmp_path / name).unlink()
    benchmark.main()  # its own files it replaces
    benchmark.main()
    assert strict_json(tmp_path / "results.json")["tasks"]["RTE"]["score"]["values"] == [60.0]


def test_a_benchmark_into_a_train_py_run_folder_is_refused_before_any_write(argv, tiny_bert, glue, tmp_path):
    output = tmp_path / "trained"
    output.mkdir()
    (output / "results.json").write_text(json.dumps({"task": "RTE", "dev.tsv": {"accuracy": 0.6}}))
    argv(*bench_options(tiny_bert, glue, output))
    with pytest.raises(ValueError, match="not a benchmark scoreboard's"):
        benchmark.main()
    assert sorted(path.name for path in output.iterdir()) == [output_folder.LOCK_FILE, "results.json"]


def test_a_second_benchmark_into_a_folder_in_use_is_refused_having_written_nothing(argv, tiny_bert, glue, tmp_path,
                                                                                   monkeypatch):
    output = tmp_path / "bench"
    run = output / "runs" / "RTE" / CELL / "seed42"
    run.mkdir(parents=True)
    (run / "train.log").write_text("the first benchmark's run\n")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    argv(*bench_options(tiny_bert, glue, output))
    with output_folder.locked(str(output), "--bench.output_dir"):  # as the first benchmark holds it
        with pytest.raises(ValueError, match=rf"^{output} is in use by another run \(pid "):
            benchmark.main()
    assert [path.relative_to(output).as_posix() for path in sorted(output.rglob("*")) if path.is_file()] == [
        output_folder.LOCK_FILE, f"runs/RTE/{CELL}/seed42/train.log"]
    assert (run / "train.log").read_text() == "the first benchmark's run\n"


def test_a_task_named_twice_is_refused(argv):
    argv("--tasks", "RTE,MRPC,rte")
    config = parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    with pytest.raises(SystemExit, match=r"^--bench.tasks RTE,MRPC,rte: RTE is named twice; name each task once$"):
        benchmark_plan.parse_tasks(benchmark_plan.BenchmarkArguments(**config["bench"]), check_files=False)


def test_a_length_over_the_model_is_refused_naming_the_task_option_before_any_work(argv, tiny_bert, glue, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(data, "featurize", refuse)
    options = bench_options(tiny_bert, glue, tmp_path / "bench")
    options[options.index("--rte.max_seq_len") + 1] = "128,600"
    argv(*options)
    with pytest.raises(SystemExit, match=rf"^--rte.max_seq_len 600: {tiny_bert} takes at most 512 tokens per example "
                                         r"\(its model_max_length\); give --rte.max_seq_len 512 or less$"):
        benchmark.main()
    assert not (tmp_path / "bench" / "runs").exists()


def test_wnli_under_majority_trains_no_model(argv, monkeypatch, tmp_path):
    planned = []

    def run_all(args, config, specs, references):
        planned.extend(spec.name for spec in specs)
        raise SystemExit("planned")

    monkeypatch.setattr(benchmark, "run_all", run_all)
    argv("--tasks", "RTE,WNLI", "--data_dir", "azureml:glue:1", "--wnli.majority", "true", "--output_dir", tmp_path)
    with pytest.raises(SystemExit, match="planned"):
        benchmark.main()
    assert planned == ["RTE"]
    argv("--tasks", "WNLI", "--data_dir", "azureml:glue:1", "--wnli.majority", "true")
    with pytest.raises(SystemExit, match=r"^--wnli.majority true: WNLI is not trained .* add --predict true, or leave "
                                         r"--wnli.majority false to train WNLI$"):
        benchmark.main()


@pytest.mark.slow
def test_a_real_run_that_diverges_is_recorded_diverged_and_its_seed_left_out(argv, tiny_bert, glue, tmp_path):
    """train.py itself, not a stand-in: a learning rate that sends the loss to infinity or NaN ends the run as
    train.py's divergence contract says, and the benchmark records it, goes on, and scores nothing of it."""
    output = tmp_path / "bench"
    argv(*bench_options(tiny_bert, glue, output, "--rte.max_lr", "1.0e+6"))
    benchmark.main()
    [run] = output.glob("runs/RTE/*/seed42")
    results = strict_json(run / "results.json")
    assert set(results["diverged"]) == {"step", "epoch", "loss"} and "best" not in results
    assert not (run / "model.safetensors").exists()
    assert strict_json(run / "benchmark_run.json")["status"] == "diverged"
    summary = strict_json(output / "results.json")
    assert "glue_average" not in summary and summary["tasks"]["RTE"]["score"] is None
    assert "seed 42 diverged at step" in (output / "results.md").read_text(encoding="utf-8")
