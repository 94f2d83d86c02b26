"""A finished run is read from its folder in one place and its task's selection made once: a run lies in the folder
its recorded settings name, a cell's seeds are one experiment, results.json holds what train.py records, and the
scoreboard, prediction, the model clean-up and init_from take the same selected run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import benchmark
import glue_metrics
from conftest import MODEL, bench_arguments, write_finished_run
from glue_support import scoreboard, selection
from glue_support.run_record import read_run


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
    entry = json.loads(Path(scoreboard.write(str(tmp_path), ["RTE"], "")["json"]).read_text())["tasks"]["RTE"]
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
