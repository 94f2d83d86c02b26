"""Comparing models: every run keeps the dev predictions of the validation it is scored by (``dev_predictions.json``,
its SHA-256 in results.json), and ``benchmark.py --compare`` tells, per task and overall, whether a model is better
than the baseline, with a bootstrap interval over the dev examples and the seeds (``glue_support/compare.py``)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import data
import glue_metrics
from conftest import read_json, run_command, run_train, scored_by_step, write_finished_run
from glue_support import compare

EXAMPLES = 200


def strict(path) -> object:
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_run_keeps_the_predictions_of_its_best_validation(argv, tiny_bert, features, tmp_path, monkeypatch):
    scored_by_step(monkeypatch, {step: 1 - step / 100 for step in range(2, 13, 2)})  # the first is the best
    output = tmp_path / "out"
    run_train(argv, tiny_bert, features, output, "--tmod.eval_steps", 2, "--tmod.keep_best", "true")
    results = read_json(output, "results.json")
    assert results["best"]["step"] == 2 and results["dev.tsv"]["step"] == 12
    kept = results["predictions"]
    path = output / kept["file"]
    assert kept["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    predictions = strict(path)["dev.tsv"]

    # the saved model (the best validation's) predicts them: argmax of its logits, with the gold labels, by index
    saved = AutoModelForSequenceClassification.from_pretrained(output).eval()
    batch = data.TaskDataset.collate(list(data.TaskDataset(str(features["dev"] / "dev.tsv"))))
    with torch.no_grad():
        logits = saved(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    order = batch["index"].argsort()
    assert predictions["index"] == sorted(batch["index"].tolist()) == list(range(24))
    assert predictions["label"] == batch["labels"][order].tolist()
    assert predictions["prediction"] == logits.argmax(-1)[order].tolist()
    metrics = glue_metrics.compute("RTE", predictions["label"], predictions["prediction"])
    assert metrics["accuracy"] == results["best"]["dev.tsv"]["accuracy"]


def test_a_run_without_a_best_validation_keeps_its_last(argv, tiny_bert, features, tmp_path):
    output = tmp_path / "val"
    argv("--model.hf_model", tiny_bert, "--tmod.valpath", features["dev"], "--tmod.output_dir", output,
         "--trainer.disable_tqdm", "true")
    import train

    module = train.main()
    results = read_json(output, "results.json")
    assert "best" not in results
    predictions = strict(output / results["predictions"]["file"])["dev.tsv"]
    assert glue_metrics.compute("RTE", predictions["label"], predictions["prediction"])["accuracy"] == \
        module.results["dev.tsv"]["accuracy"]


def write_run(output, seed: int, correct: float, labels: np.ndarray, sha: str = "0" * 64, task: str = "RTE",
              rng=None) -> None:
    """A finished RTE (or ``task``) run whose kept dev predictions are right on a fraction ``correct`` of the
    examples (which ones drawn by ``rng``), its results recomputed from them."""
    right = np.zeros(len(labels), bool)
    right[(rng or np.random.default_rng(seed)).permutation(len(labels))[:round(correct * len(labels))]] = True
    preds = np.where(right, labels, 1 - labels)
    file = "dev.tsv"
    metrics = glue_metrics.compute(task, labels, preds)
    folder = write_finished_run(output, task, seed, {file: metrics})
    predictions = {file: {"index": list(range(len(labels))), "label": labels.tolist(), "prediction": preds.tolist()}}
    (folder / "dev_predictions.json").write_text(json.dumps(predictions))
    results = json.loads((folder / "results.json").read_text())
    results["data"]["valpath"][file]["sha256"] = sha
    results["predictions"] = {"file": "dev_predictions.json",
                              "sha256": hashlib.sha256((folder / "dev_predictions.json").read_bytes()).hexdigest()}
    (folder / "results.json").write_text(json.dumps(results))


LABELS = np.random.default_rng(0).integers(0, 2, EXAMPLES)


def test_a_clearly_better_model_is_better_and_the_same_one_cannot_be_told(tmp_path):
    for seed in (42, 43, 44):
        write_run(tmp_path / "base", seed, 0.5, LABELS)
        write_run(tmp_path / "better", seed, 0.9, LABELS)
        write_run(tmp_path / "same", seed, 0.5, LABELS)  # the baseline's predictions, seed by seed
    found = compare.compare([str(tmp_path / "base"), str(tmp_path / "better"), str(tmp_path / "same")])
    better, same = found["rows"]
    assert better["found"].value == pytest.approx(40.0) and better["found"].low > 20 and better["found"].verdict == \
        "better"
    assert same["found"].value == 0 and same["found"].low < 0 < same["found"].high
    assert same["found"].verdict == "cannot tell"
    assert found["averages"][str(tmp_path / "better")][1].verdict == "better"
    # and worse the other way round
    assert compare.compare([str(tmp_path / "better"), str(tmp_path / "base")])["rows"][0]["found"].verdict == "worse"


def test_the_interval_grows_with_the_seeds_spread(tmp_path):
    """Seeds that disagree widen the interval: the seed level is resampled, not only the examples."""
    for seed in (42, 43, 44):
        write_run(tmp_path / "base", seed, 0.5, LABELS)
        write_run(tmp_path / "steady", seed, 0.7, LABELS, rng=np.random.default_rng(7))
    for seed, correct in ((42, 0.5), (43, 0.7), (44, 0.9)):
        write_run(tmp_path / "spread", seed, correct, LABELS, rng=np.random.default_rng(7))
    steady, spread = (compare.compare([str(tmp_path / "base"), str(tmp_path / name)])["rows"][0]["found"]
                      for name in ("steady", "spread"))
    assert steady.value == pytest.approx(spread.value)
    assert spread.high - spread.low > steady.high - steady.low


def test_identical_single_runs_give_an_interval_of_zero(tmp_path):
    for name in ("a", "b"):
        write_run(tmp_path / name, 42, 0.6, LABELS)
    found = compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])["rows"][0]["found"]
    assert (found.value, found.low, found.high, found.verdict) == (0, 0, 0, "cannot tell")


def test_other_dev_data_are_refused(tmp_path):
    write_run(tmp_path / "a", 42, 0.5, LABELS)
    write_run(tmp_path / "b", 42, 0.5, LABELS, sha="1" * 64)
    with pytest.raises(ValueError, match=r"other RTE dev data than .* \(dev.tsv sha256 000000000000 -> 111111111111"):
        compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])


def test_a_run_without_predictions_is_refused_naming_it(tmp_path):
    write_run(tmp_path / "a", 42, 0.5, LABELS)
    old = write_finished_run(tmp_path / "b", "RTE", 42, {"dev.tsv": glue_metrics.compute("RTE", LABELS, LABELS)})
    with pytest.raises(ValueError, match=f"{old}: no dev predictions kept"):
        compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])


def test_a_task_only_one_side_has_is_listed_and_the_command_prints_the_table(tmp_path, argv, capsys):
    import benchmark

    write_run(tmp_path / "a", 42, 0.5, LABELS)
    write_run(tmp_path / "a", 42, 0.5, LABELS, task="MRPC")
    write_run(tmp_path / "b", 42, 0.9, LABELS)
    argv("--compare", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--compare_dir", tmp_path / "cmp")
    benchmark.main()
    out = capsys.readouterr().out
    assert [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ") and "---" not in line] == [
        "| task", "| RTE", "| GLUE average (1 tasks)"]
    assert "| better |" in out and f"MRPC: only in {tmp_path / 'a'}, not compared" in out


def test_the_comparison_is_written_with_its_chart_and_rewritten_but_nothing_else_is_replaced(tmp_path, argv, capsys,
                                                                                            monkeypatch):
    import benchmark

    for seed in (42, 43):
        write_run(tmp_path / "a", seed, 0.5, LABELS)
        write_run(tmp_path / "b", seed, 0.7, LABELS)
    output = tmp_path / "cmp"
    argv("--compare", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--compare_dir", output)
    benchmark.main()
    out = capsys.readouterr().out
    assert out.startswith((output / "comparison.md").read_text())
    assert f"Comparison: {output / 'comparison.json'}, {output / 'comparison.md'}, {output / 'comparison.png'}" in out
    written = strict(output / "comparison.json")
    row, = written["rows"]
    found = compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])["rows"][0]
    assert (row["task"], row["folder"], row["verdict"]) == ("RTE", str(tmp_path / "b"), "better")
    assert (row["difference"], row["low"], row["high"]) == (found["found"].value, found["found"].low,
                                                            found["found"].high)
    assert row["score"]["values"] == [70.0, 70.0] and row["baseline_score"]["values"] == [50.0, 50.0]
    # right on half the examples is not above the majority class: the baseline's runs are named degenerate
    majority = 100 * max(np.mean(LABELS), 1 - np.mean(LABELS))
    assert (row["degenerate"], row["baseline_degenerate"]) == ([], [42, 43])
    assert written["trivial_baselines"] == {"RTE": {"kind": "majority class", "score": pytest.approx(majority)}}
    assert "| 50.0 ± 0.0 (2 of 2 degenerate) | +20.0 |" in out
    assert f"Trivial baselines: RTE majority class {majority:.1f}." in out
    assert written["averages"][str(tmp_path / "b")]["tasks"] == 1
    assert (output / "comparison.png").read_bytes().startswith(b"\x89PNG")
    benchmark.main()  # its own files it replaces
    (output / "comparison.md").write_text("# My notes\n")
    monkeypatch.setattr(compare, "compare", lambda *args: pytest.fail("resampled before the refusal"))
    with pytest.raises(ValueError, match=r"comparison.md: not a model comparison's \(no '# Model comparison:' title"):
        benchmark.main()
    assert (output / "comparison.md").read_text() == "# My notes\n"


def test_one_folder_is_refused(tmp_path, monkeypatch, capsys):
    code, _, err = run_command(monkeypatch, capsys, "benchmark.py", "--compare", str(tmp_path))
    assert code == 2 and "give two benchmark output folders or more" in err
