"""Degenerate runs are named: each task's trivial baseline (the best constant prediction on its dev labels), a run
whose kept dev predictions are one class or whose score is not above that baseline marked in results.md/json, and
``benchmark.py --restarts N`` running a cell's degenerate run again with the next unused seed (BERT's random
restarts), the restart counting in its place."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
import glue_metrics
from conftest import FIXTURES, MODEL, ROOT, bench_arguments, python_env, write_finished_run, write_rte_subset
from glue_processors import GlueProcessor, get_task
from glue_support import model_card, scoreboard
from glue_support.benchmark_plan import Run, TaskSettings, plan_restarts, run_identity
from glue_support.result_files import ResultFiles
from glue_support.run_record import read_run
from glue_support.selection import select


def constant_scores(task: str, labels: dict[str, list]) -> dict[float, float]:
    """The GLUE score of every constant class on ``labels`` (by file), computed file by file with the metrics."""
    classes = sorted({label for values in labels.values() for label in values})
    return {value: glue_metrics.glue_score(task, {file: glue_metrics.compute(task, values, [value] * len(values))
                                                  for file, values in labels.items()})
            for value in classes}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the constants' undefined F1, MCC and correlations
@pytest.mark.parametrize("task", ["RTE", "MRPC", "CoLA", "STS-B", "MNLI"])
def test_the_baseline_of_each_task_is_its_best_constant_on_the_fixtures(task):
    spec = get_task(task)
    labels = {}
    for file in spec.scored_files:
        examples = GlueProcessor(task).process(str(FIXTURES / spec.name), file.removesuffix(".tsv"))
        labels[file] = [float(example.label) if spec.is_regression else spec.labels.index(example.label)
                        for example in examples]
    score, kind = glue_metrics.trivial_baseline(task, labels)
    if spec.is_regression:  # a constant has no correlation: 0, as the metric scores it, not NaN
        assert (score, kind) == (0.0, "constant") and not math.isnan(score)
        return
    scores = constant_scores(task, labels)
    assert score == max(scores.values()) and kind in ("majority class", *(f"constant {name}" for name in spec.labels))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_baselines_by_metric():
    # accuracy: the majority class
    assert glue_metrics.trivial_baseline("RTE", {"dev.tsv": [0, 1, 1, 0, 1]}) == (0.6, "majority class")
    # MRPC, F1 and accuracy: the minority class 1 (acc 0.4, F1 4/7) beats the majority class 0 (acc 0.6, F1 0)
    assert glue_metrics.trivial_baseline("MRPC", {"dev.tsv": [0, 0, 0, 1, 1]}) == (
        pytest.approx((0.4 + 4 / 7) / 2), "constant 1")
    assert glue_metrics.trivial_baseline("MRPC", {"dev.tsv": [1, 1, 1, 0]}) == (
        pytest.approx((0.75 + 6 / 7) / 2), "majority class")
    # CoLA's MCC of a constant is undefined: 0
    assert glue_metrics.trivial_baseline("CoLA", {"dev.tsv": [1, 1, 0, 1]}) == (0.0, "majority class")
    # MNLI: the same constant on both files, their mean: class 1 (0.25 and 1.0) beats class 2 (0.5 and 0.0)
    assert glue_metrics.trivial_baseline("MNLI", {"dev_matched.tsv": [0, 1, 2, 2],
                                                  "dev_mismatched.tsv": [1, 1, 1, 1]}) == (0.625, "majority class")
    # one constant for both files: 2 or 1 score 0.375, where each file's own best constant would make 0.625
    assert glue_metrics.trivial_baseline("MNLI", {"dev_matched.tsv": [2, 2, 2, 1],
                                                  "dev_mismatched.tsv": [1, 1, 0, 0]}) == (0.375, "majority class")


def judged_run(output: Path, task: str, seed: int, labels: dict[str, list], preds: dict[str, list],
               restart_of: int | None = None) -> Path:
    """A finished run whose dev predictions (written by train.py's writer, ``ResultFiles``) are ``preds`` on gold
    ``labels`` (by file), its results the metrics of those predictions."""
    results = {file: {**glue_metrics.compute(task, labels[file], preds[file]), "epoch": 3, "step": 30}
               for file in labels}
    folder = write_finished_run(output, task, seed, results)
    written = json.loads((folder / "results.json").read_text())
    ResultFiles(str(folder), task, "m", {key: written[key] for key in ("data", "versions")}, True).write_results(
        results, None, {file: {"index": list(range(len(labels[file]))), "label": labels[file],
                               "prediction": preds[file]} for file in labels})
    if restart_of is not None:
        record = json.loads((folder / "benchmark_run.json").read_text())
        (folder / "benchmark_run.json").write_text(json.dumps({**record, "restart_of": restart_of}))
    return folder


RTE_LABELS = [0, 1, 1, 0, 1, 0, 1, 1, 0, 1]  # majority class 1: 60.0
AT_BASELINE = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]  # two classes, 60 % right


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_one_class_and_not_above_the_baseline_are_degenerate(tmp_path):
    labels = {"dev.tsv": RTE_LABELS}
    cases = {42: ([0] * 10, "one class"),  # the minority class: one class, below the baseline too
             43: (AT_BASELINE, "not above the baseline 60.0"),  # 60 %: two classes, not above
             44: ([0, 1, 1, 0, 1, 0, 1, 1, 1, 1], None)}  # 90 %
    for seed, (preds, _) in cases.items():
        judged_run(tmp_path, "RTE", seed, labels, {"dev.tsv": preds})
    runs = select(str(tmp_path), "RTE").runs
    assert [(run.seed, run.degenerate) for run in runs] == [(seed, reason) for seed, (_, reason) in cases.items()]
    assert {(run.baseline.kind, run.baseline.score) for run in runs} == {("majority class", 0.6)}

    # STS-B: one value; MNLI: one class on both files, though not the same class
    stsb = judged_run(tmp_path, "STS-B", 42, {"dev.tsv": [0.5, 2.0, 4.5]}, {"dev.tsv": [2.5, 2.5, 2.5]})
    assert read_run(str(stsb)).degenerate == "one value" and read_run(str(stsb)).baseline.score == 0.0
    mnli = judged_run(tmp_path, "MNLI", 42, {"dev_matched.tsv": [0, 1, 2], "dev_mismatched.tsv": [0, 1, 2]},
                      {"dev_matched.tsv": [0, 0, 0], "dev_mismatched.tsv": [2, 2, 2]})
    assert read_run(str(mnli)).degenerate == "one class"
    mixed = judged_run(tmp_path, "MNLI", 43, {"dev_matched.tsv": [0, 1, 2], "dev_mismatched.tsv": [0, 1, 2]},
                       {"dev_matched.tsv": [0, 1, 2], "dev_mismatched.tsv": [2, 2, 2]})
    assert read_run(str(mixed)).degenerate is None  # 1.0 and 0.33 against a baseline of 0.33

    # a run that kept no predictions (made before runs kept them) is not judged
    old = write_finished_run(tmp_path, "RTE", 45, {"dev.tsv": {"accuracy": 0.5, "epoch": 3, "step": 30}})
    assert (read_run(str(old)).baseline, read_run(str(old)).degenerate) == (None, None)


def test_a_damaged_predictions_file_is_refused_naming_it(tmp_path):
    folder = judged_run(tmp_path, "RTE", 42, {"dev.tsv": RTE_LABELS}, {"dev.tsv": RTE_LABELS})
    (folder / "dev_predictions.json").write_text("{}")
    with pytest.raises(ValueError, match=f"^{folder / 'dev_predictions.json'}: missing, or not the predictions"):
        read_run(str(folder))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def write_scoreboard(output: Path) -> dict[str, str]:
    return scoreboard.write(str(output), scoreboard.folder_summary(str(output), ["RTE"],
                                                                     str(ROOT / "glue_references.json")))


def test_the_report_marks_degenerate_runs_the_baseline_and_the_restarts(tmp_path):
    labels = {"dev.tsv": RTE_LABELS}
    judged_run(tmp_path, "RTE", 42, labels, {"dev.tsv": [0, 1, 1, 0, 1, 0, 1, 1, 1, 1]})
    judged_run(tmp_path, "RTE", 43, labels, {"dev.tsv": [1] * 10})  # one class, restarted as 45
    judged_run(tmp_path, "RTE", 44, labels, {"dev.tsv": AT_BASELINE})  # not restarted: counts, named
    judged_run(tmp_path, "RTE", 45, labels, {"dev.tsv": RTE_LABELS}, restart_of=43)
    paths = write_scoreboard(tmp_path)

    summary = json.loads(Path(paths["json"]).read_text())
    entry = summary["tasks"]["RTE"]
    assert entry["baseline"] == {"kind": "majority class", "score": 60.0}
    assert entry["restarted"] == 1 and summary["restarted"] == 1
    cell, = entry["cells"]
    assert [(run["seed"], run["degenerate"], run["restart_of"]) for run in cell["runs"]] == [
        (42, None, None), (44, "not above the baseline 60.0", None), (45, None, 43)]
    assert [(run["seed"], run["degenerate"], run["restarted_as"]) for run in cell["restarted"]] == [
        (43, "one class", 45)]
    assert entry["seeds"] == [42, 44, 45]  # the restart in the place of the run it restarts
    assert entry["score"]["values"] == pytest.approx([90.0, 60.0, 100.0])

    table = Path(paths["md"]).read_text()
    assert "| **83.3 ± 20.8**<br>baseline (majority class) 60.0 |" in table
    assert ("| 42: 90.0, 43: 60.0 [degenerate: one class, restarted as seed 45], 44: 60.0 [degenerate: not above the "
            "baseline 60.0], 45: 100.0 [restart of 43] | 83.3 ± 20.8 |") in table
    assert ("- RTE (baseline: majority class 60.0): seed 43 one class, restarted as seed 45; seed 44 not above the "
            "baseline 60.0") in table
    assert "\n1 run restarted (BERT's random restarts: " in table
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the benchmark's model card names the degenerate seed that counts, not the one restarted
    card = model_card.summary_card(scoreboard.folder_summary(str(tmp_path), ["RTE"], ""))
    assert "| validation | acc (accuracy) | 0.8333 | 3 | seed 44 | lr 5e-05" in card.text


def test_runs_without_predictions_show_no_baseline(tmp_path):
    write_finished_run(tmp_path, "RTE", 42, {"dev.tsv": {"accuracy": 0.5, "epoch": 3, "step": 30}})
    paths = write_scoreboard(tmp_path)
    assert json.loads(Path(paths["json"]).read_text())["tasks"]["RTE"]["baseline"] is None
    table = Path(paths["md"]).read_text()
    assert "baseline" not in table and "degenerate" not in table.lower()


def test_the_planner_gives_a_degenerate_run_the_next_unused_seed_within_the_budget():
    assert plan_restarts([42, 43, 44], [44], {}, 1) == {45: 44}
    assert plan_restarts([42, 43, 44], [44], {}, 0) == {}
    assert plan_restarts([42, 43, 44], [43, 44], {}, 1) == {45: 43}  # one restart per cell
    assert plan_restarts([42, 43, 44], [43, 44], {}, 2) == {45: 43, 46: 44}
    assert plan_restarts([42, 43, 44, 50], [43], {}, 1) == {51: 43}  # past every seed the cell ran
    # planned again (a resume, or another run ended): a run restarted is not restarted twice
    assert plan_restarts([42, 43, 44], [44], {45: 44}, 1) == {}
    assert plan_restarts([42, 43, 44], [44], {45: 44}, 3) == {}
    assert plan_restarts([42, 43, 44], [44, 45], {45: 44}, 1) == {}  # its restart degenerate: the budget is spent
    assert plan_restarts([42, 43, 44], [44, 45], {45: 44}, 2) == {46: 45}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cell_restarts_are_planned_once_and_resumed(tmp_path):
    """benchmark.py's restarts of a cell from its folder: a degenerate run gets seed 45; once that restart started
    (its record written), the same plan resumes it instead of planning another."""
    args = bench_arguments(output_dir=str(tmp_path), restarts=1)
    settings = TaskSettings(epochs=3, max_lr=5e-5, batch_size=16, max_seq_len=128, seeds=0)
    cell = tmp_path / "runs" / "RTE" / "lr5e-05-bs16-ep3-len128"
    planned = [Run(get_task("RTE"), seed, settings, "features", str(cell / f"seed{seed}")) for seed in (42, 43, 44)]
    for seed, preds in ((42, RTE_LABELS), (43, RTE_LABELS), (44, [1] * 10)):
        judged_run(tmp_path, "RTE", seed, {"dev.tsv": RTE_LABELS}, {"dev.tsv": preds})
    files, model = {"train.tsv": {"bytes": 1, "sha256": "1" * 64}}, MODEL["identity"]

    (restart, record), = benchmark.cell_restarts(args, planned, planned, files, model)
    assert (restart.seed, restart.restart_of, restart.folder, record) == (45, 44, str(cell / "seed45"), None)
    assert benchmark.cell_restarts(args, planned, [*planned, restart], files, model) == []  # queued: not again

    started = {"settings": run_identity(args, restart, files, model), "restart_of": 44, "status": "running",
               "wall_s": 1.0, "attempts": 1}
    benchmark.write_record(restart, started)
    (resumed, record), = benchmark.cell_restarts(args, planned, planned, files, model)
    assert (resumed.seed, resumed.restart_of, record) == (45, 44, started)
    assert benchmark.cell_restarts(args, planned, [*planned, resumed], files, model) == []  # running: not again


def test_restarts_are_refused_with_an_azure_ml_pipeline(argv, monkeypatch):
    monkeypatch.setitem(sys.modules, "aml_submit", None)  # refused before the Azure ML SDK would load
    argv("--aml.submit", "true", "--aml.dry_run", "true", "--tasks", "RTE", "--data_dir", "azureml:glue:1",
         "--restarts", "1")
    with pytest.raises(SystemExit, match="--restarts: --aml.submit builds the pipeline's steps before any run ends"):
        benchmark.main()


@pytest.mark.slow
def test_a_benchmark_restarts_its_degenerate_runs_once_per_cell(tiny_bert, tmp_path):
    """Dev labels of one class: no run can score above the majority class, so every run is degenerate; two seeds
    run at once, one is restarted (--restarts 1), and the same command again runs nothing."""
    glue = tmp_path / "glue"
    write_rte_subset(glue / "RTE", train_rows=48, dev_rows=277)
    header, *rows = (glue / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    entailed = [row for row in rows if row.endswith("\tentailment")][:16]
    (glue / "RTE" / "dev.tsv").write_text("\n".join([header, *entailed]) + "\n", encoding="utf-8")
    output = tmp_path / "bench"
    command = [sys.executable, str(ROOT / "benchmark.py"), "--tasks", "RTE", "--data_dir", str(glue), "--model",
               tiny_bert, "--seeds", "2", "--output_dir", str(output), "--rte.epochs", "1", "--rte.batch_size", "16",
               "--rte.max_seq_len", "64", "--checkpoint_steps", "0", "--parallel", "2", "--restarts", "1"]
    done = subprocess.run(command, env=python_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    cell, = [path for path in (output / "runs" / "RTE").iterdir() if path.is_dir()]  # beside it the task's card
    seeds = sorted(int(folder.name.removeprefix("seed")) for folder in cell.glob("seed*"))
    assert seeds == [42, 43, 44]
    record = json.loads((cell / "seed44" / "benchmark_run.json").read_text())
    assert record["status"] == "done" and record["restart_of"] in (42, 43) and "restart_of" not in record["settings"]
    summary = json.loads((output / "results.json").read_text())
    entry = summary["tasks"]["RTE"]
    assert entry["baseline"] == {"kind": "majority class", "score": 100.0}
    assert summary["restarted"] == entry["restarted"] == 1
    restarted, = entry["cells"][0]["restarted"]
    assert (restarted["seed"], restarted["restarted_as"]) == (record["restart_of"], 44)
    assert sorted(entry["seeds"]) == sorted({42, 43, 44} - {record["restart_of"]})
    assert all(run["degenerate"] for run in entry["cells"][0]["runs"])  # the restart too: the budget is spent
    table = (output / "results.md").read_text()
    assert "\n1 run restarted (BERT's random restarts: " in table and "RTE 1." in table

    # the same command again: every run and restart has ended, so nothing trains and nothing is restarted again
    before = {path: path.read_bytes() for path in cell.rglob("benchmark_run.json")}
    again = subprocess.run(command, env=python_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.read_bytes() for path in cell.rglob("benchmark_run.json")} == before
    assert json.loads((output / "results.json").read_text())["tasks"] == summary["tasks"]
