"""Model cards with ``model-index`` metadata (glue_support/model_card.py), read back by huggingface_hub: train.py's
beside the model it saves, the benchmark's for each task's selected run and for the whole benchmark (written with
its scoreboard, again by --report_only), each valued as the results.json files record them; a README.md the
benchmark did not write is never replaced."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import benchmark
from conftest import MODEL, run_train, scored_by_step, write_finished_run
from glue_support import model_card


def model_index(path: Path) -> list[tuple]:
    """The card's eval results, as huggingface_hub reads them: (task type, dataset, its name, config and split,
    metric type, value)."""
    card = ModelCard.load(path)
    return [(result.task_type, result.dataset_type, result.dataset_name, result.dataset_config, result.dataset_split,
             result.metric_type, result.metric_value) for result in card.data.eval_results]


def glue(task: str, config: str, split: str, metric: str, value: float) -> tuple:
    return ("text-classification", "glue", f"GLUE {task}", config, split, metric, value)


@pytest.mark.parametrize("keep_best", [False, True])
def test_train_saves_its_model_with_a_card_valued_as_results_json(argv, tiny_bert, features, tmp_path, monkeypatch,
                                                                  keep_best):
    scored_by_step(monkeypatch, {6: 0.9, 12: 0.1})  # the first of the 2 validations is the best
    output = tmp_path / "out"
    run_train(argv, tiny_bert, features, output, "--tmod.keep_best", str(keep_best).lower())
    results = json.loads((output / "results.json").read_text())
    scored = results["best"] if keep_best else results  # the validation of the model saved
    assert model_index(output / "README.md") == [glue("RTE", "rte", "validation", "accuracy",
                                                      scored["dev.tsv"]["accuracy"])]
    card = ModelCard.load(output / "README.md")
    assert card.data.model_name == f"{Path(tiny_bert).name} fine-tuned on GLUE RTE"
    assert card.data.base_model is None  # a local folder, not a hub id
    assert card.data.eval_results[0].source_name == "marlin-glue train.py"
    assert ("its best validation (epoch 1)" if keep_best else "its last validation") in card.text
    assert f"`{results['data']['valpath']['dev.tsv']['sha256']}`" in card.text
    assert "- `--tmod.max_lr 0.001`" in card.text and "- `--trainer.train_batch_size 8`" in card.text
    assert "- `--tmod.seed 42`" in card.text and "- `--trainer.epochs 2`" in card.text
    assert re.search(r"\| dev.tsv \| 24 \| 64 \| ", card.text)  # its examples and max_seq_len


def test_an_overwritten_run_s_card_goes_with_its_model(argv, tiny_bert, features, tmp_path):
    """A run that saves no model (validation alone) into a folder it overwrites leaves no card of the model before."""
    output = tmp_path / "out"
    run_train(argv, tiny_bert, features, output, epochs=1)
    assert (output / "README.md").exists()
    argv("--model.hf_model", tiny_bert, "--tmod.valpath", features["dev"], "--tmod.output_dir", output,
         "--tmod.overwrite_output_dir", "true", "--trainer.disable_tqdm", "true")
    import train

    train.main()
    assert not (output / "README.md").exists() and (output / "results.json").exists()


def test_a_card_names_hub_models_as_base_model_and_every_dev_split_and_metric(tmp_path):
    mnli = {"dev_matched.tsv": {"accuracy": 0.8}, "dev_mismatched.tsv": {"accuracy": 0.7}}
    provenance = {"data": {"valpath": {name: {"examples": 9, "sha256": "a" * 64} for name in mnli}},
                  "versions": {"python": "3"}}
    card = model_card.run_card("MNLI", "bert-base-uncased", provenance, mnli, False, {}, {})
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.base_model == "bert-base-uncased"
    assert model_index(tmp_path / "README.md") == [glue("MNLI", "mnli", "validation_matched", "accuracy", 0.8),
                                                   glue("MNLI", "mnli", "validation_mismatched", "accuracy", 0.7)]
    mismatched = model_card.eval_results("MNLI", {"dev_mismatched.tsv": {"accuracy": 0.7}}, "u", "n")  # validated alone
    assert [(result.dataset_split, result.metric_value) for result in mismatched] == [("validation_mismatched", 0.7)]
    stsb = model_card.eval_results("STS-B", {"dev.tsv": {"pearson": 0.5, "spearmanr": 0.4, "loss": 1.0}}, "u", "n")
    assert [(result.task_type, result.metric_type, result.metric_value) for result in stsb] == [
        ("text-classification", "pearson", 0.5), ("text-classification", "spearmanr", 0.4)]
    assert model_card.hub_id(str(tmp_path)) is None and model_card.hub_id("/no/such/model/here") is None


def rte(accuracy: float, best: float) -> dict:
    return {"dev.tsv": {"accuracy": accuracy, "loss": 0.5, "epoch": 3, "step": 30},
            "best": {"score": best, "epoch": 2, "step": 20, "dev.tsv": {"accuracy": best, "epoch": 2, "step": 20}}}


def stsb(pearson: float) -> dict:
    return {"dev.tsv": {"pearson": pearson, "spearmanr": pearson - 0.1, "loss": 0.5, "epoch": 3, "step": 30}}


@pytest.fixture
def recorded(tmp_path) -> Path:
    """A benchmark folder of finished runs: RTE in two cells (5e-05 is selected, seed 43 in it), STS-B in one."""
    write_finished_run(tmp_path, "RTE", 42, rte(0.55, 0.6))
    write_finished_run(tmp_path, "RTE", 43, rte(0.6, 0.7))
    write_finished_run(tmp_path, "RTE", 42, rte(0.5, 0.5), max_lr=1e-4)
    write_finished_run(tmp_path, "STS-B", 42, stsb(0.8))
    write_finished_run(tmp_path, "STS-B", 43, stsb(0.7))
    return tmp_path


def report_only(argv, output: Path) -> None:
    argv("--tasks", "RTE,STS-B", "--output_dir", output, "--report_only", "true", "--model", MODEL["name"])
    benchmark.main()


def test_the_benchmark_writes_a_card_for_each_task_s_selected_run_and_one_for_all(argv, recorded, capsys):
    report_only(argv, recorded)
    selected = json.loads((recorded / "runs/RTE/lr5e-05-bs16-ep3-len128/seed43/results.json").read_text())
    assert model_index(recorded / "runs/RTE/README.md") == [
        glue("RTE", "rte", "validation", "accuracy", selected["best"]["dev.tsv"]["accuracy"])]
    stsb_run = json.loads((recorded / "runs/STS-B/lr5e-05-bs16-ep3-len128/seed42/results.json").read_text())
    assert model_index(recorded / "runs/STS-B/README.md") == [
        glue("STS-B", "stsb", "validation", metric, stsb_run["dev.tsv"][metric]) for metric in ("pearson", "spearmanr")]
    task_card = ModelCard.load(recorded / "runs/RTE/README.md")
    assert "`runs/RTE/lr5e-05-bs16-ep3-len128/seed43`: its model's weights were removed" in task_card.text
    assert task_card.data.eval_results[0].source_url == "../../results.md"
    assert "/glue/RTE" not in task_card.text  # the files by name and SHA-256, not where they lay

    # the whole benchmark: each selected cell's mean over its seeds, as the runs' results.json record them
    seeds = {task: [json.loads(path.read_text()) for path in recorded.glob(f"runs/{task}/lr5e-05-*/*/results.json")]
             for task in ("RTE", "STS-B")}
    assert model_index(recorded / "README.md") == [
        glue("RTE", "rte", "validation", "accuracy",
             statistics.fmean(results["best"]["dev.tsv"]["accuracy"] for results in seeds["RTE"])),
        *(glue("STS-B", "stsb", "validation", metric,
               statistics.fmean(results["dev.tsv"][metric] for results in seeds["STS-B"]))
          for metric in ("pearson", "spearmanr"))]
    scoreboard = json.loads((recorded / "results.json").read_text())
    for result in ModelCard.load(recorded / "README.md").data.eval_results:  # the scoreboard's x100
        task = result.dataset_name.removeprefix("GLUE ")
        mean = scoreboard["tasks"][task]["metrics"][f"dev.tsv/{result.metric_type}"]["mean"]
        assert 100 * result.metric_value == pytest.approx(mean)
    summary = ModelCard.load(recorded / "README.md")
    assert summary.data.base_model == MODEL["name"]  # not a local folder: a hub id
    assert f"GLUE average over 2 tasks (RTE, STS-B): {scoreboard['glue_average']:.1f}" in summary.text
    assert "Scoreboard: " in capsys.readouterr().out


def test_report_only_rewrites_the_cards_saying_where_the_model_is(argv, recorded):
    report_only(argv, recorded)
    folder = recorded / "runs/RTE/lr5e-05-bs16-ep3-len128/seed43"
    (folder / "model.safetensors").write_bytes(b"weights")
    report_only(argv, recorded)
    assert ("`runs/RTE/lr5e-05-bs16-ep3-len128/seed43`: its model is there"
            in ModelCard.load(recorded / "runs/RTE/README.md").text)


@pytest.mark.parametrize("where", ["README.md", "runs/RTE/README.md"])
@pytest.mark.parametrize("content, why", [
    ("# My notes\n", "no 'marlin-glue-benchmark' tag in its metadata"),
    ("---\ntags:\n- marlin-glue\n---\n# a train.py run's card\n", "no 'marlin-glue-benchmark' tag in its metadata"),
])
def test_a_readme_the_benchmark_did_not_write_is_never_replaced(argv, recorded, where, content, why):
    path = recorded / where
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a model card of the benchmark's "
                                         rf"\({re.escape(why)}\), and benchmark.py replaces only its own files"):
        report_only(argv, recorded)
    assert path.read_text() == content and not (recorded / "results.md").exists()  # refused before any work
    path.unlink()
    report_only(argv, recorded)
    report_only(argv, recorded)  # its own cards it replaces
    assert model_card.BENCHMARK_TAG in ModelCard.load(path).data.tags
