"""The benchmark's records and scoreboard. Grids and seeds: every cell of a task's grid (a combination of its
per-task values) runs the seeds into a folder named by its settings, and a grid given another value runs only the new
cell. A finished run is read from its folder in one place (a run lies in the folder its recorded settings name, a
cell's seeds are one experiment, results.json holds what train.py records) and its task's selection made once: the
cell by its mean (or median) dev score, taken by the scoreboard, prediction, the model clean-up and init_from alike.
The scoreboard scores tasks as GLUE does, shows every cell and the versions that made the runs, and the committed
grid's scoreboard is written again as it was committed."""
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
from conftest import MODEL, ROOT, bench_arguments, write_finished_run, write_rte_subset
from glue_support import benchmark_plan, scoreboard, selection
from glue_support.command_line import parse_config
from glue_support.run_record import read_run


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
        per_seed = ", ".join(rf"{seed}: {value:.1f}( \(\d+\))?( \[[^]]+\])?"  # (best validation's epoch) [marks]
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


def accuracy(value: float) -> dict:
    return {"dev.tsv": {"accuracy": value, "loss": 0.5, "epoch": 3, "step": 30}}


def test_a_run_in_another_cell_folder_than_its_settings_name_is_refused_naming_it(tmp_path, argv):
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    moved = folder.parent.parent / "lr0.0001-bs16-ep3-len128" / "seed42"
    shutil.move(folder.parent, moved.parent)
    with pytest.raises(ValueError, match=rf"^{moved}: its benchmark_run.json records the settings of "
                                         r"runs/RTE/lr5e-05-bs16-ep3-len128/seed42, not of this folder; move the run "
                                         r"there, or delete it$"):
        selection.select(str(tmp_path), "RTE")
    argv("--tasks", "RTE", "--output_dir", tmp_path, "--report_only", "true", "--model", "m")
    with pytest.raises(ValueError, match=f"^{moved}: its benchmark_run.json records"):
        benchmark.main()  # the scoreboard refuses it as well (run_main: one line, exit 1)


def test_a_run_in_another_seed_folder_is_refused_too(tmp_path):
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    folder.rename(folder.parent / "seed43")
    with pytest.raises(ValueError, match=r"seed43: its benchmark_run.json records the settings of .*/seed42, not"):
        selection.select(str(tmp_path), "RTE")


def test_the_seeds_of_a_cell_made_with_other_settings_are_refused(tmp_path):
    write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    other = write_finished_run(tmp_path, "RTE", 43, accuracy(0.7), train_options="--stats.log_steps 3")
    with pytest.raises(ValueError, match=rf"^{other}: made with other settings than \S+/seed42 \(train_options '' -> "
                                         r"'--stats.log_steps 3'\); the seeds of a cell must be one experiment"):
        selection.select(str(tmp_path), "RTE")


@pytest.mark.parametrize("lacking", ["data", "versions"])
def test_results_without_their_data_or_versions_are_refused(tmp_path, lacking):
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    results = json.loads((folder / "results.json").read_text())
    del results[lacking]
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=rf"results.json: no {lacking} recorded \(written by an earlier train.py\); "
                                         rf"delete {folder} to run it again"):
        read_run(str(folder))


def test_results_of_another_task_or_none_are_refused(tmp_path):
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    (folder / "results.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"{folder}: no results.json of a RTE run"):
        read_run(str(folder))


def test_an_unfinished_run_is_not_read(tmp_path):
    folder = write_finished_run(tmp_path, "RTE", 42, accuracy(0.6))
    record = json.loads((folder / "benchmark_run.json").read_text())
    (folder / "benchmark_run.json").write_text(json.dumps({**record, "status": "running"}))
    assert read_run(str(folder)) is None and selection.select(str(tmp_path), "RTE") is None


def test_mnli_runs_are_scored_by_the_mean_of_matched_and_mismatched_as_train_py_scores_them(tmp_path):
    """The run's best validation is the one train.py chose by glue_metrics.glue_score: the scoreboard scores it by
    the same function, the mean of matched and mismatched accuracy, and shows both beside it."""
    best = {"dev_matched.tsv": {"accuracy": 0.8}, "dev_mismatched.tsv": {"accuracy": 0.6}}
    folder = write_finished_run(tmp_path, "MNLI", 42, {
        "dev_matched.tsv": {"accuracy": 0.7}, "dev_mismatched.tsv": {"accuracy": 0.7},
        "best": {"score": glue_metrics.glue_score("MNLI", best), "epoch": 1, "step": 10, **best}})
    run = read_run(str(folder))
    assert run.score == pytest.approx(0.7) == pytest.approx(run.results["best"]["score"])
    assert run.best_epoch == 1
    entry = scoreboard.summarize(str(tmp_path), {"MNLI": selection.select(str(tmp_path), "MNLI")}, MODEL, ""
                                 ).to_json()["tasks"]["MNLI"]
    assert entry["score"]["values"] == pytest.approx([70.0])
    assert {key: value["mean"] for key, value in entry["metrics"].items()} == pytest.approx(
        {"dev_matched.tsv/accuracy": 80.0, "dev_mismatched.tsv/accuracy": 60.0})


def test_the_scoreboard_prediction_and_the_model_clean_up_take_the_same_run(tmp_path, monkeypatch):
    """Two cells: the better mean is lr 3e-05's; its best seed is 43, not its first."""
    for max_lr, values in ((5e-5, [0.50, 0.66]), (3e-5, [0.60, 0.62])):
        for seed, value in zip((42, 43), values):
            folder = write_finished_run(tmp_path, "RTE", seed, accuracy(value), max_lr=max_lr)
            (folder / "model.safetensors").write_bytes(b"weights")
    chosen = selection.select(str(tmp_path), "RTE")
    assert (chosen.cell.name, chosen.run.seed) == ("lr3e-05-bs16-ep3-len128", 43)
    assert [cell.name for cell in chosen.cells] == ["lr3e-05-bs16-ep3-len128", "lr5e-05-bs16-ep3-len128"]

    args = bench_arguments(tasks="RTE", output_dir=str(tmp_path))
    assert benchmark.selected_run(args, "RTE") == chosen.run.folder  # what init_from starts from
    summary = scoreboard.folder_summary(str(tmp_path), ["RTE"], "")
    entry = json.loads(Path(scoreboard.write(str(tmp_path), summary)["json"]).read_text())["tasks"]["RTE"]
    [reported] = [cell for cell in entry["cells"] if cell["name"] == entry["selected"]]
    assert (entry["selected"], max(reported["runs"], key=lambda run: run["score"])["seed"]) == (chosen.cell.name, 43)
    predicted = []
    monkeypatch.setattr(benchmark, "predict", lambda args, spec, run_folder: predicted.append(run_folder) or [])
    monkeypatch.setattr(benchmark, "write_submission_zip", lambda folder, zip_path: None)
    benchmark.predict_all(args, {"wnli": {"majority": False}}, [benchmark.get_task("RTE")])
    assert predicted == [chosen.run.folder]
    benchmark.remove_unselected_models(args, ["RTE"])
    assert sorted(path.parent for path in tmp_path.glob("runs/RTE/*/seed*/model.safetensors")) == [
        Path(chosen.run.folder)]


def test_a_finished_run_is_scored_by_its_best_validation_and_at_its_last(tmp_path):
    folder = write_finished_run(tmp_path, "MRPC", 42, {"dev.tsv": {"accuracy": 0.7, "f1": 0.8, "epoch": 3},
                                                       "best": {"epoch": 2, "step": 20,
                                                                "dev.tsv": {"accuracy": 0.8, "f1": 0.9}}})
    run = read_run(str(folder))
    assert (run.score, run.last_score) == pytest.approx((0.85, 0.75))  # GLUE's mean of F1 and acc


def test_scoreboard_scores_tasks_as_glue_does(tmp_path):
    """Two metrics score their mean, two dev files the mean of theirs, unfinished runs do not count."""
    write_finished_run(tmp_path, "MRPC", 1, {"dev.tsv": {"accuracy": 0.80, "f1": 0.90, "combined_score": 0.85,
                                                         "loss": 0.4, "epoch": 3}}, 10.0)
    write_finished_run(tmp_path, "MRPC", 2, {"dev.tsv": {"accuracy": 0.70, "f1": 0.80, "combined_score": 0.75}}, 30.0)
    write_finished_run(tmp_path, "MNLI", 1, {"dev_matched.tsv": {"accuracy": 0.6},
                                             "dev_mismatched.tsv": {"accuracy": 0.7}}, 5.0)
    write_finished_run(tmp_path, "RTE", 1, {"dev.tsv": {"accuracy": 0.5}}, 1.0)
    record = tmp_path / "runs" / "RTE" / "lr5e-05-bs16-ep3-len128" / "seed1" / "benchmark_run.json"
    record.write_text(record.read_text().replace('"done"', '"running"'))
    references = tmp_path / "references.json"
    references.write_text(json.dumps({"references": [{"model": "Ref", "about": "a.", "source": "s", "scores": {
        "MRPC": {"f1": 90.0, "accuracy": 86.0}, "MNLI": 80.0}}]}))

    summary = scoreboard.summarize(str(tmp_path), {task: selection.select(str(tmp_path), task)
                                                   for task in ("MRPC", "MNLI", "RTE")}, MODEL, str(references))
    mrpc, mnli = summary.to_json()["tasks"]["MRPC"], summary.to_json()["tasks"]["MNLI"]
    assert mrpc["score"]["values"] == pytest.approx([85.0, 75.0]) and mrpc["score"]["std"] == pytest.approx(7.0711,
                                                                                                          abs=1e-4)
    assert mrpc["metrics"]["dev.tsv/f1"]["mean"] == pytest.approx(85.0)
    assert mrpc["wall_s"] == {"featurize": 0.0, "train": 40.0, "per_run": 20.0}
    assert mrpc["references"] == {"Ref": 88.0}
    assert mnli["score"]["values"] == pytest.approx([65.0]) and mnli["score"]["std"] is None
    assert "RTE" not in summary.tasks
    assert summary.glue_average == pytest.approx(72.5)
    table = scoreboard.markdown(summary)
    assert "| MRPC | F1/acc | **80.0 ± 7.1** |" in table and "| MNLI | acc (m/mm) | **65.0** |" in table
    assert "GLUE average over 2 tasks (MRPC, MNLI): 72.5" in table and "Ref on the same tasks: 84.0" in table


def test_the_scoreboard_names_runs_of_other_versions(tmp_path):
    """Runs resumed after an upgrade show which versions made which run."""
    for task, seed, torch_version in (("RTE", 1, "2.13.0"), ("RTE", 2, "2.14.0"), ("MRPC", 1, "2.13.0")):
        write_finished_run(tmp_path, task, seed, {"dev.tsv": {"accuracy": 0.5, "f1": 0.5},
                                                  "versions": {"python": "3.11.7", "torch": torch_version}})
    table = scoreboard.markdown(scoreboard.summarize(
        str(tmp_path), {task: selection.select(str(tmp_path), task) for task in ("RTE", "MRPC")}, MODEL, ""))
    assert ("Made with different versions:\n- python 3.11.7, torch 2.13.0: RTE seed 1, MRPC seed 1\n"
            "- python 3.11.7, torch 2.14.0: RTE seed 2\n") in table
