"""Shared fixtures: a tiny randomly initialised BERT (no downloads), small RTE files cut from the official ones
the repo ships, every task's official layout in ``tests/fixtures``, and config.yaml's defaults."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))



def yaml_group(file: str, group: str, overrides: dict) -> dict:
    """One group of one of the project's YAML files with some values replaced, each a key the group has."""
    values = yaml.safe_load((ROOT / file).read_text(encoding="utf-8"))[group]
    unknown = set(overrides) - set(values)
    assert not unknown, f"not in {file} {group}: {unknown}"
    return {**values, **overrides}


def config_defaults(group: str, **overrides) -> dict:
    """One group of config.yaml with some values replaced: tests build arguments the way the scripts do."""
    return yaml_group("config.yaml", group, overrides)


def bench_arguments(**overrides):
    """benchmark.yaml's ``bench`` group as benchmark.py's arguments, with some values replaced."""
    from glue_support.benchmark_plan import BenchmarkArguments

    return BenchmarkArguments(**yaml_group("benchmark.yaml", "bench", overrides))


def featurize(raw: Path, output: Path, tokenizer: str, task: str, set_type: str, **overrides) -> Path:
    """``data.py`` on ``raw/<set_type>.tsv`` (in-process, one worker, 64 tokens); the features file written."""
    import data

    proc = config_defaults("dproc", task=task, set_type=set_type, tokenizer=tokenizer, max_seq_len=64, workers=1,
                           **overrides)
    return Path(data.featurize(data.DataInterfaceArguments(str(raw), str(output)), data.DataProcessorArguments(**proc)))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the embedded model's uncased vocabulary, saved as a
    local Hugging Face model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from glue_support import embedded_model

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(embedded_model.resolve(embedded_model.DEFAULT_MODEL)).save_pretrained(path)
    return str(path)


def write_rte_subset(folder: Path, train_rows: int, dev_rows: int) -> Path:
    """The header and first rows of the shipped RTE train.tsv and dev.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = (ROOT / "RTE" / name).read_text(encoding="utf-8").split("\n")
        (folder / name).write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def rte_subset(tmp_path) -> Path:
    return write_rte_subset(tmp_path / "RTE", train_rows=48, dev_rows=24)


@pytest.fixture
def argv(monkeypatch):
    """Run a script's ``main()`` in-process with the given command-line overrides."""
    def set_argv(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["script", *map(str, args)])
    return set_argv


def python_env() -> dict[str, str]:
    """Environment for subprocesses that run the project's scripts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@pytest.fixture
def fixture_counts(monkeypatch):
    """The task table's official test row counts replaced by those of the fixtures' test files (a few rows each),
    so that submissions made from the fixtures pass the leaderboard's checks."""
    from glue_processors import TASKS

    for key, spec in TASKS.items():
        counts = tuple(sum(1 for _ in open(FIXTURES / spec.name / f"{set_type}.tsv", encoding="utf-8")) - 1
                       for set_type in spec.test_set_types)
        monkeypatch.setitem(TASKS, key, dataclasses.replace(spec, test_rows=counts))


def torchrun(*args, cwd) -> subprocess.CompletedProcess:
    """train.py under torchrun, 2 processes, with ``args``; its output (asserted to exit 0)."""
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(ROOT / "train.py"), *map(str, args), "--trainer.disable_tqdm", "true"],
                            cwd=cwd, env=python_env(), capture_output=True, text=True, timeout=600)
    # each process's own error (run_main's one line, or a traceback's last line) before torchrun's summary
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: ") or "Error: " in line]
    assert result.returncode == 0, "\n".join(errors[-10:]) + "\n" + result.stdout[-3000:] + result.stderr[-6000:]
    return result


def featurize_splits(raw, output, tokenizer, set_types=("train", "dev"), task="RTE") -> dict:
    """Featurize ``task`` files in ``raw`` into ``output/<set_type>/``; the folders by set type."""
    for set_type in set_types:
        featurize(raw, output / set_type, tokenizer, task, set_type)
    return {set_type: output / set_type for set_type in set_types}


def run_train(argv, tiny_bert, features, output_dir, *extra, epochs: int = 2, batch_size: int = 8):
    """train.py's ``main()`` in-process on ``features`` (``featurize_splits``' folders) with ``extra`` options; its
    Recipe."""
    import train  # here: ROOT is on sys.path once this module has run

    argv("--model.hf_model", tiny_bert, "--tmod.trainpath", features["train"], "--tmod.valpath", features["dev"],
         "--tmod.output_dir", output_dir, "--trainer.epochs", epochs, "--trainer.train_batch_size", batch_size,
         "--trainer.disable_tqdm", "true", "--tmod.max_lr", "1.0e-3", *extra)
    return train.main()


@pytest.fixture
def features(tiny_bert, rte_subset, tmp_path) -> dict:
    """``rte_subset``'s train and dev features (``featurize_splits``' folders), for ``run_train`` and ``recipe``."""
    return featurize_splits(rte_subset, tmp_path / "features", tiny_bert)


def recipe(model, features, tmp_path, model_overrides=None, tmod_overrides=None, **trainer_overrides):
    """train.py's Recipe on ``features`` (``featurize_splits``' folders), built as ``main()`` builds it, without a
    Trainer; ``tmod_overrides`` replace tmod options, ``trainer_overrides`` TrainerArguments' values (batch 8, one
    process)."""
    import data
    import train
    from glue_support.marlin import DistributedTrainingArguments

    args = train.ModuleInterfaceArguments(**config_defaults(
        "tmod", trainpath=str(features["train"]), valpath=str(features.get("dev", "")),
        predictpath=str(features.get("test", "")), output_dir=str(tmp_path), max_lr=1e-3, warmup_prop=0.25, seed=1,
        **(tmod_overrides or {})))
    model_args = train.ModelArguments(**config_defaults("model", hf_model=str(model), **(model_overrides or {})))
    trainer_args = train.TrainerArguments(**{"train_batch_size": 8,
                                             "distributed_training_args": DistributedTrainingArguments(),
                                             **trainer_overrides})
    features = train.checked_features(args, model_args.hf_model)
    return train.Recipe(args, model_args, trainer_args, data.TaskData(), features)


def run_command(monkeypatch, capsys, script: str, *args) -> tuple[int, str, str]:
    """``python <script> <args>`` as its ``__main__`` block runs it, in this process: exit code, stdout, stderr."""
    import importlib

    from glue_support import exit_codes

    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        exit_codes.run_main(module.main)
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def scored_by_step(monkeypatch, scores: dict[int, float]) -> None:
    """The GLUE score of the validation at each step, as given (so the test chooses which one is best)."""
    import glue_metrics

    monkeypatch.setattr(glue_metrics, "glue_score", lambda task, results: scores[results["dev.tsv"]["step"]])


def read_json(output, name: str):
    return json.loads((output / name).read_text())


def validated_steps(output) -> list[tuple[int, int]]:
    """(epoch, step) of each validation of dev.tsv in ``output``'s history.json."""
    return [(point["epoch"], point["step"]) for point in read_json(output, "history.json")["dev.tsv"]]


def assert_trainers_arithmetic(argv, monkeypatch, model: str, features, output_dir, limit: int) -> None:
    """With dropout off, train.py's weights after 2 epochs (batches of 8 in micro-batches of ``limit``) equal those
    of a plain loop written as transformers.Trainer trains, from the same initial weights on the inputs the model
    received: AdamW without decay where the Trainer has none (biases, normalization layers), ceil(warmup ratio x
    steps) warmup then linear decay, gradient clipping (at 0.1 here, so that it acts), the mean loss of each
    micro-batch divided by the micro-batches per step. bench/equivalence.py checks the Trainer itself."""
    import math

    import torch
    from transformers import AutoModelForSequenceClassification, Trainer

    import train
    from glue_support.label_head import classifier_layer

    record = {"inputs": []}
    setup_models = train.Recipe.setup_models

    def without_dropout(model):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    def recording_setup(self):
        model, tokenizer = setup_models(self)
        without_dropout(model)
        record["initial"] = {name: value.clone() for name, value in model.state_dict().items()}
        model.register_forward_pre_hook(lambda module, args, inputs: record["inputs"].append(inputs)
                                        if module.training else None, with_kwargs=True)
        return model, tokenizer

    monkeypatch.setattr(train.Recipe, "setup_models", recording_setup)
    module = run_train(argv, model, features, output_dir, "--trainer.gpu_batch_size_limit", limit,
                       "--tmod.warmup_prop", 0.1, "--trainer.max_grad_norm", 0.1)
    ours = module.model
    assert module.optimizer.defaults["fused"]  # one kernel an update, as the Trainer's adamw_torch_fused

    reference = AutoModelForSequenceClassification.from_pretrained(output_dir)
    reference.load_state_dict(record["initial"])
    reference.train()
    without_dropout(reference)
    decayed = set(Trainer.get_decay_parameter_names(None, reference))  # a method that does not read its Trainer
    parameters = dict(reference.named_parameters())
    names = {id(parameter): name for name, parameter in ours.named_parameters()}
    assert [{names[id(p)] for p in group["params"]} for group in module.optimizer.param_groups] == [
        decayed, set(parameters) - decayed]
    optimizer = torch.optim.AdamW([{"params": [p for n, p in parameters.items() if n in decayed],
                                    "weight_decay": 0.01},
                                   {"params": [p for n, p in parameters.items() if n not in decayed],
                                    "weight_decay": 0.0}], lr=1e-3, fused=True)  # the Trainer's adamw_torch_fused
    accumulate = 8 // limit
    steps = len(record["inputs"]) // accumulate
    assert steps == 12 and math.ceil(0.1 * steps) == 2 != round(0.1 * steps)
    scheduler = train.get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    norms = []
    for number, inputs in enumerate(record["inputs"], start=1):
        (reference(**inputs).loss / accumulate).backward()
        if number % accumulate == 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    for name, parameter in ours.named_parameters():
        assert torch.allclose(parameter, parameters[name], rtol=1e-4, atol=1e-6), name
    head = next(name for name, p in ours.named_parameters() if p is classifier_layer(ours, 2).weight)
    assert not torch.allclose(parameters[head], record["initial"][head])  # it did train
    assert max(norms) > 0.1  # clipping took effect, so it is compared too


def read_submission(path) -> list[tuple[str, str]]:
    """A leaderboard file's (index, prediction) rows, its header and final newline checked."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "index\tprediction" and lines[-1] == ""
    return [tuple(line.split("\t")) for line in lines[1:-1]]


# the model write_finished_run's runs record, as run_record.recorded_model gives it
MODEL = {"name": "m", "identity": {"sha256": "0" * 64}}


def write_finished_run(output: Path, task: str, seed: int, results: dict, wall_s: float = 1.0, **settings) -> Path:
    """A run of ``task`` finished in ``output``, as benchmark.py and train.py leave it: ``results`` holds its
    validation files' metrics (and ``best``), each the one validation of its history; ``settings`` replace the
    recorded ones (epochs 3, lr 5e-05, batch 16, length 128). Its folder, the cell named by its settings."""
    from glue_processors import get_task
    from glue_support.benchmark_plan import recorded_cell

    settings = {"task": task, "seed": seed, "model": "m", "model_identity": MODEL["identity"], "keep_best": True,
                "epochs": 3, "max_lr": 5e-5, "batch_size": 16, "max_seq_len": 128, "nproc_per_node": 1,
                "train_options": "", **settings}
    folder = output / "runs" / task / recorded_cell(settings) / f"seed{seed}"
    folder.mkdir(parents=True)
    identity = {"bytes": 10, "sha256": "0" * 64, "examples": 4}
    data = {"trainpath": {"train.tsv": {"source": f"/glue/{task}/train.tsv", **identity}},
            "valpath": {name: {"source": f"/glue/{task}/{name}", **identity} for name in get_task(task).scored_files}}
    results = {"task": task, "model": "m", "data": data, "versions": {"python": "3.11.7"}, **results}
    (folder / "results.json").write_text(json.dumps(results))
    history = {"train": [], **{name: [{"epoch": 1, "step": 10, **value}] for name, value in results.items()
                               if name.endswith(".tsv")}}
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "benchmark_run.json").write_text(json.dumps({"settings": settings, "status": "done", "wall_s": wall_s}))
    return folder


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A FIFO, which a reader would wait on forever: a writer thread stands by to release any reader with an empty
    read, so code that opens it fails its test instead of hanging it."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    writer = threading.Thread(target=lambda: open(path, "wb").close(), daemon=True)
    writer.start()
    yield path
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open while the writer opens, whenever it gets there
    writer.join(timeout=10)
    os.close(reader)
