"""Grids and seeds in benchmark.py: every cell of a task's grid (a combination of its per-task values) runs the
seeds into a folder named by its settings, a grid given another value runs only the new cell, the scoreboard picks
each task's cell by its mean (or median) dev score and shows every cell, and the committed grid's scoreboard is
written again as it was committed."""
from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

import benchmark
import data
import glue_metrics
from conftest import MODEL, ROOT, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, scoreboard, selection
from glue_support.command_line import parse_config

FIVE_TASKS = "RTE,MRPC,STS-B,CoLA,SST-2"


def grid_options(tiny_bert: str, glue: Path, output: Path, rates: str) -> list[str]:
    """RTE, two seeds, one short epoch of the tiny BERT per run, a grid over the learning rate."""
    return ["--tasks", "RTE", "--data_dir", str(glue), "--model", tiny_bert, "--seeds", "2", "--output_dir",
            str(output), "--rte.max_lr", rates, "--rte.epochs", "1", "--rte.batch_size", "8", "--rte.max_seq_len",
            "64", "--checkpoint_steps", "0"]


@pytest.fixture(scope="module")
def two_cells(tmp_path_factory, tiny_bert) -> tuple[Path, Path]:
    """A 2-value grid run to the end on 48 RTE training rows (once for the module): its GLUE folder and output."""
    root = tmp_path_factory.mktemp("grid")
    glue = root / "glue"
    write_rte_subset(glue / "RTE", train_rows=48, dev_rows=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # a train.py process on a tiny model: one thread is fastest
        patch.setattr("sys.argv", ["benchmark.py", *grid_options(tiny_bert, glue, root / "bench", "1.0e-4,5.0e-5")])
        benchmark.main()
    return glue, root / "bench"


CELLS = {"lr0.0001-bs8-ep1-len64": 1e-4, "lr5e-05-bs8-ep1-len64": 5e-5}


@pytest.mark.slow
def test_every_cell_runs_every_seed_into_the_folder_of_its_settings(two_cells):
    _, output = two_cells
    runs = sorted(path.relative_to(output / "runs" / "RTE").as_posix()
                  for path in (output / "runs" / "RTE").glob("*/seed*"))
    assert runs == [f"{cell}/seed{seed}" for cell in sorted(CELLS) for seed in (42, 43)]
    summary = json.loads((output / "results.json").read_text())
    entry = summary["tasks"]["RTE"]
    assert sorted(cell["name"] for cell in entry["cells"]) == sorted(CELLS)
    means = {}
    for cell in entry["cells"]:
        assert cell["settings"]["max_lr"] == CELLS[cell["name"]] and [run["seed"] for run in cell["runs"]] == [42, 43]
        results = [json.loads((output / "runs" / "RTE" / cell["name"] / f"seed{seed}" / "results.json").read_text())
                   for seed in (42, 43)]  # scored by train.py's best validation where it kept one, else its last
        scores = [100 * glue_metrics.glue_score("RTE", run.get("best", run)) for run in results]
        assert cell["score"]["values"] == pytest.approx(scores)
        means[cell["name"]] = statistics.fmean(scores)
    chosen = max(means, key=means.get)  # equal means: the first cell, as max takes it
    assert entry["selected"] == chosen and entry["score"]["mean"] == pytest.approx(means[chosen])
    assert entry["settings"]["max_lr"] == CELLS[chosen] and entry["seeds"] == [42, 43]
    assert summary["glue_average"] == pytest.approx(means[chosen])

    table = (output / "results.md").read_text()
    assert f"- RTE: lr {CELLS[chosen]:g}, batch 8, 1 epoch, length 64 (of 2 cells)" in table
    assert "| RTE cell | lr | batch | epochs | length | seeds: acc | mean ± std | median | last epoch |" in table
    for cell in entry["cells"]:
        name = f"**{cell['name']}** (chosen)" if cell["name"] == chosen else cell["name"]
        per_seed = ", ".join(rf"{seed}: {value:.1f}( \(\d+\))?"  # (epoch of the best validation)
                             for seed, value in zip((42, 43), cell["score"]["values"]))
        assert re.search(rf"\| {re.escape(name)} \| {CELLS[cell['name']]:g} \| 8 \| 1 \| 64 \| {per_seed} \| ", table)
    assert "optimistic" in table  # settings chosen on the dev set that scores them
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_value_added_to_the_grid_runs_only_its_cell(two_cells, tiny_bert, tmp_path, argv, monkeypatch):
    glue, finished = two_cells
    output = Path(shutil.copytree(finished, tmp_path / "bench"))
    trained = []
    popen = subprocess.Popen

    def record(command, *args, **kwargs):
        trained.append(Path(command[command.index("--tmod.output_dir") + 1]).relative_to(output / "runs" / "RTE"))
        return popen(command, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the features of this length were built for the first cells")

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(data, "featurize", refuse)
    argv(*grid_options(tiny_bert, glue, output, "1.0e-4,5.0e-5,2.0e-4"))
    benchmark.main()
    assert [path.as_posix() for path in trained] == ["lr0.0002-bs8-ep1-len64/seed42", "lr0.0002-bs8-ep1-len64/seed43"]
    for cell in CELLS:  # the first cells' runs as they were
        for seed in (42, 43):
            run = Path("runs") / "RTE" / cell / f"seed{seed}"
            assert (output / run / "results.json").read_bytes() == (finished / run / "results.json").read_bytes()
            assert json.loads((output / run / "benchmark_run.json").read_text())["attempts"] == 1
    entry = json.loads((output / "results.json").read_text())["tasks"]["RTE"]
    assert sorted(cell["name"] for cell in entry["cells"]) == sorted([*CELLS, "lr0.0002-bs8-ep1-len64"])
    means = {cell["name"]: cell["score"]["mean"] for cell in entry["cells"]}
    assert entry["selected"] == max(means, key=means.get)


def test_the_cell_with_the_best_mean_or_median_is_selected(tmp_path):
    cells = {1e-5: [58.0, 58.0, 58.0],  # mean 58, median 58
             2e-5: [50.0, 60.0, 61.0],  # mean 57, median 60
             3e-5: [40.0, 41.0, 42.0], 4e-5: [50.0, 52.0], 5e-5: [52.0, 50.0]}  # the last two: equal means
    for max_lr, values in cells.items():
        for seed, value in zip((42, 43, 44), values):
            write_finished_run(tmp_path / "all", "RTE", seed, {"dev.tsv": {"accuracy": value / 100}}, max_lr=max_lr)
            if max_lr > 3e-5:
                write_finished_run(tmp_path / "tied", "RTE", seed, {"dev.tsv": {"accuracy": value / 100}},
                                   max_lr=max_lr)
    assert selection.select(str(tmp_path / "all"), "RTE").cell.name == "lr1e-05-bs16-ep3-len128"
    assert selection.select(str(tmp_path / "all"), "RTE", "median").cell.name == "lr2e-05-bs16-ep3-len128"
    assert selection.select(str(tmp_path / "tied"), "RTE").cell.name == "lr4e-05-bs16-ep3-len128"  # the first


def write_run(output: Path, task: str, max_lr: float, seed: int, results: dict) -> None:
    """A finished run in the folder of its cell (``max_lr``)."""
    write_finished_run(output, task, seed, results, max_lr=max_lr)


def test_runs_are_scored_by_their_best_validation_and_the_last_epoch_stands_beside_it(tmp_path):
    """train.py's ``best`` (its best validation) scores a run where present; the chosen cell reports its mean ±
    std, or its median with ``select="median"``, and results.md shows the last-epoch scores beside them."""
    best = {5e-5: [50.0, 62.0, 61.0], 3e-5: [58.0, 58.0, 58.0]}  # best-validation accuracy x100 of three seeds
    for max_lr, accuracies in best.items():
        for seed, accuracy in zip((42, 43, 44), accuracies):
            write_run(tmp_path, "RTE", max_lr, seed, {"dev.tsv": {"accuracy": accuracy / 100 - 0.02}, "best": {
                "score": accuracy / 100, "epoch": 2, "step": 20, "dev.tsv": {"accuracy": accuracy / 100}}})
    by_mean = scoreboard.summarize(str(tmp_path), {"RTE": selection.select(str(tmp_path), "RTE")}, MODEL, ""
                                   ).to_json()["tasks"]["RTE"]
    assert by_mean["selected"] == "lr3e-05-bs16-ep3-len128" and by_mean["score"]["mean"] == pytest.approx(58.0)
    assert by_mean["last_epoch"]["mean"] == pytest.approx(56.0) and by_mean["best_checkpoint"]
    assert by_mean["metrics"]["dev.tsv/accuracy"]["mean"] == pytest.approx(58.0)  # the best validation's metrics

    summary = scoreboard.summarize(str(tmp_path), {"RTE": selection.select(str(tmp_path), "RTE", "median")}, MODEL,
                                   "", "median")
    assert summary.to_json()["tasks"]["RTE"]["selected"] == "lr5e-05-bs16-ep3-len128"
    assert summary.glue_average == pytest.approx(61.0)
    lucky, last = best[5e-5], [value - 2 for value in best[5e-5]]
    spread = f"{statistics.stdev(lucky):.1f}"
    table = scoreboard.markdown(summary)
    assert "Scores x100: median over seeds" in table
    assert (f"| RTE | acc | **61.0** (median; mean {statistics.fmean(lucky):.1f} ± {spread})<br>last epoch "
            f"{statistics.fmean(last):.1f} ± {spread} |") in table
    assert (f"| **lr5e-05-bs16-ep3-len128** (chosen) | 5e-05 | 16 | 3 | 128 | 42: 50.0 (2), 43: 62.0 (2), "
            f"44: 61.0 (2) | {statistics.fmean(lucky):.1f} ± {spread} | 61.0 | {statistics.fmean(last):.1f} ± "
            f"{spread} |") in table
    assert "| lr3e-05-bs16-ep3-len128 | 3e-05 | 16 | 3 | 128 | 42: 58.0 (2), 43: 58.0 (2), 44: 58.0 (2) |" in table
    assert "best median dev score" in table and "optimistic" in table
    scoreboard.chart(summary, str(tmp_path / "results.png"))
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_task_values_are_lists_each_value_in_range(argv):
    argv("--rte.max_lr", "2.0e-5,3.0e-5", "--mrpc.batch_size", "[16, 32]", "--stsb.max_lr", "3e-5")
    config = parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    assert config["rte"]["max_lr"] == [2e-5, 3e-5] and config["mrpc"]["batch_size"] == [16, 32]
    assert config["stsb"]["max_lr"] == [3e-5]  # one number, in the form YAML 1.1 reads as text
    assert [benchmark_plan.cell_name(settings) for settings in benchmark_plan.task_cells(config["mrpc"])] == [
        "lr5e-05-bs16-ep5-len128", "lr5e-05-bs32-ep5-len128"]
    argv("--rte.max_lr", "2.0e-5,-1")
    with pytest.raises(SystemExit, match=r"--rte.max_lr -1: expected a number > 0"):
        parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    argv("--rte.epochs", "2.5")
    with pytest.raises(SystemExit, match=r"--rte.epochs"):
        parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")


def test_the_committed_grid_writes_its_committed_scoreboard_again(argv, tmp_path, capsys):
    """bench/grid's runs, scored again (--report_only), give its results.json and results.md byte for byte."""
    committed = ROOT / "bench" / "grid"
    output = Path(shutil.copytree(committed, tmp_path / "grid"))
    argv("--tasks", "RTE,MRPC", "--data_dir", "../shared/glue_data", "--seeds", "3", "--output_dir", output,
         "--report_only", "true")
    benchmark.main()
    for name in ("results.json", "results.md"):
        assert (output / name).read_bytes() == (committed / name).read_bytes(), name
