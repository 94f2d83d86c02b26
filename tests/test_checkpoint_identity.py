"""A checkpoint carries the identity of its run (the model by content, the data, every setting that shapes training):
a resume with anything else is refused before the model loads, naming each difference; a checkpoint folder belongs
to one run (the output folder's lock, and no writing among another run's checkpoints); a ``--ckpt.load_dir`` that
does not exist is found before any work. A resume of the same identity still ends as the uninterrupted run. 48 RTE
training examples, batch 8: 6 optimizer steps an epoch."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import data
import train
from conftest import ROOT, featurize, featurize_splits, write_rte_subset
from glue_support import label_head, output_folder, provenance
from glue_support.checkpoints import START_AFRESH
from glue_support.exit_codes import ConfigError


def start(tiny_bert, features, output, *extra, max_lr="1.0e-3", epochs=2, batch_size=8, seed=42) -> train.Recipe:
    """train.py's ``main()`` in-process on ``features`` with ``extra`` options; its Recipe."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["train.py", *map(str, (
            "--model.hf_model", tiny_bert, "--tmod.trainpath", features["train"], "--tmod.valpath", features["dev"],
            "--tmod.output_dir", output, "--trainer.epochs", epochs, "--trainer.train_batch_size", batch_size,
            "--tmod.max_lr", max_lr, "--tmod.seed", seed, "--trainer.disable_tqdm", "true", *extra))])
        return train.main()


@pytest.fixture(scope="module")
def first(tiny_bert, tmp_path_factory) -> dict:
    """A finished run with checkpoints at steps 4, 8 and 12; its features and folders."""
    folder = tmp_path_factory.mktemp("identity")
    features = featurize_splits(write_rte_subset(folder / "RTE", train_rows=48, dev_rows=24), folder / "features",
                                tiny_bert)
    output = folder / "first"
    recipe = start(tiny_bert, features, output, "--ckpt.period_steps", 4)
    checkpoints = output / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == [f"marlin_glue_step{step:08d}.pt"
                                                                  for step in (4, 8, 12)]
    return {"features": features, "output": output, "checkpoints": checkpoints, "folder": folder,
            "results": recipe.results}


@pytest.fixture
def model_never_loads(monkeypatch):
    """A refusal must come before the model's weights load: loading them fails the test."""
    def refused(*args, **kwargs):
        raise AssertionError("the model loaded before the refusal")
    monkeypatch.setattr(label_head, "load_classifier", refused)


def train_rows(folder: Path, rows: range) -> Path:
    """An RTE train.tsv of the shipped file's ``rows`` in ``folder``."""
    lines = (ROOT / "RTE" / "train.tsv").read_text(encoding="utf-8").split("\n")
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("\n".join([lines[0], *(lines[row] for row in rows)]) + "\n", encoding="utf-8")
    return folder


def other_train_features(tiny_bert, first, name: str, rows: range) -> dict:
    train_features = featurize(train_rows(first["folder"] / name, rows), first["folder"] / f"{name}-features",
                               tiny_bert, "RTE", "train")
    return {"train": train_features.parent, "dev": first["features"]["dev"]}


def source_sha256(features: Path) -> str:
    """The first 12 digits of the SHA-256 of the GLUE file ``features`` were made from."""
    return data.read_metadata(str(features))["source_sha256"][:12]


def refusal(checkpoint: Path, differences: str) -> str:
    return (f"{checkpoint}: a checkpoint of another run ({differences}): resume it with the model, data and settings "
            f"it was written with; to start afresh, {START_AFRESH}")


def test_resuming_with_another_learning_rate_is_refused_before_the_model_loads_and_leaves_the_run(
        tiny_bert, first, model_never_loads):
    before = {path.name: path.read_bytes() for path in first["output"].iterdir() if path.is_file()}
    with pytest.raises(ValueError) as refused:
        start(tiny_bert, first["features"], first["output"], "--ckpt.resume", "true", max_lr="1.0e-4")
    assert str(refused.value) == refusal(first["checkpoints"] / "marlin_glue_step00000012.pt",
                                         "--tmod.max_lr 0.001 -> 0.0001")
    assert {path.name: path.read_bytes() for path in first["output"].iterdir() if path.is_file()} == before


@pytest.mark.parametrize("options, differences", [
    ({"batch_size": 16}, "--trainer.train_batch_size 8 -> 16"),
    ({"epochs": 3}, "--trainer.epochs 2 -> 3"),  # a checkpoint of a shorter run
    ({"epochs": 1}, "--trainer.epochs 2 -> 1"),  # of a longer one
    ({"seed": 7, "extra": ("--tmod.warmup_prop", "0.2", "--tmod.keep_best", "true")},
     "--tmod.warmup_prop 0.1 -> 0.2; --tmod.seed 42 -> 7; --tmod.keep_best false -> true"),
    ({"extra": ("--trainer.gpu_batch_size_limit", 4, "--trainer.max_train_steps_per_epoch", 3)},
     "--trainer.gpu_batch_size_limit 512 -> 4; --trainer.max_train_steps_per_epoch none -> 3"),
])
def test_resuming_with_other_settings_is_refused_naming_each_difference(tiny_bert, first, tmp_path,
                                                                        model_never_loads, options, differences):
    checkpoint = first["checkpoints"] / "marlin_glue_step00000004.pt"
    with pytest.raises(ValueError) as refused:
        start(tiny_bert, first["features"], tmp_path / "out", "--ckpt.load_dir", checkpoint.parent,
              "--ckpt.load_filename", checkpoint.name, *options.pop("extra", ()), **options)
    assert str(refused.value) == refusal(checkpoint, differences)


@pytest.mark.parametrize("name, rows, examples", [("same-size", range(49, 97), "48"),  # other data, as many rows
                                                  ("fewer", range(1, 41), "48 -> 40")])
def test_resuming_on_other_data_is_refused_naming_the_file(tiny_bert, first, tmp_path, model_never_loads, name, rows,
                                                           examples):
    features = other_train_features(tiny_bert, first, name, rows)
    with pytest.raises(ValueError) as refused:
        start(tiny_bert, features, tmp_path / "out", "--ckpt.load_dir", first["checkpoints"])
    old, new = (source_sha256(folder / "train.tsv") for folder in (first["features"]["train"], features["train"]))
    change = f", examples {examples}" if "->" in examples else ""
    assert str(refused.value) == refusal(first["checkpoints"] / "marlin_glue_step00000012.pt",
                                         f"--tmod.trainpath train.tsv sha256 {old} -> {new}{change}")


def test_resuming_with_another_model_at_the_same_path_is_refused(tiny_bert, first, tmp_path, model_never_loads):
    """The model is identified by its files' contents: the same path with another config is another model."""
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    old = provenance.model_identity(str(model))["sha256"][:12]
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.2}))
    new = provenance.model_identity(str(model))["sha256"][:12]
    with pytest.raises(ValueError, match=re.escape(f"(--model.hf_model sha256 {old} -> {new})")):
        start(str(model), first["features"], tmp_path / "out", "--ckpt.load_dir", first["checkpoints"])


def test_a_checkpoint_without_an_identity_is_refused_in_one_line(tiny_bert, first, tmp_path, model_never_loads):
    """A checkpoint written before checkpoints recorded their run's identity."""
    old = tmp_path / "old" / "marlin_glue_step00000004.pt"
    old.parent.mkdir()
    state = torch.load(first["checkpoints"] / old.name, weights_only=True)
    del state["identity"]
    torch.save(state, old)
    with pytest.raises(ValueError) as refused:
        start(tiny_bert, first["features"], tmp_path / "out", "--ckpt.load_dir", old.parent)
    assert str(refused.value) == (f"{old}: a checkpoint written before checkpoints recorded their run's model, data "
                                  f"and settings, so resuming it cannot be checked; to start afresh, {START_AFRESH}")


def test_a_checkpoint_folder_in_use_by_a_running_run_is_refused(tiny_bert, first, tmp_path, model_never_loads):
    """The first run's checkpoints/ is locked by its output folder's lock; a --ckpt.save_dir of another name by its
    own."""
    with output_folder.own_output_dir(str(first["output"]), False, True, True):  # the first run, running
        with pytest.raises(ValueError, match=rf"^{re.escape(str(first['checkpoints']))} is in use by another run "
                                             r"\(pid \d+ on .*\): wait for it to end, or choose another "
                                             r"--ckpt.save_dir$"):
            start(tiny_bert, first["features"], tmp_path / "second", "--ckpt.save_dir", first["checkpoints"])
    shared = tmp_path / "shared-checkpoints"
    with output_folder.own_checkpoint_dir(str(shared), str(tmp_path / "other"), True):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(shared))} is in use by another run"):
            start(tiny_bert, first["features"], tmp_path / "third", "--ckpt.save_dir", shared)
    assert not (tmp_path / "second" / "checkpoints").exists()


def test_a_run_does_not_write_among_another_run_s_checkpoints(tiny_bert, first, tmp_path, model_never_loads):
    """The first run has ended: a second run of another identity with its checkpoint folder as save_dir is refused,
    and so is one that resumes from elsewhere into an output folder holding another run's checkpoints."""
    before = {path.name: path.read_bytes() for path in first["checkpoints"].iterdir()}
    with pytest.raises(ValueError) as refused:
        start(tiny_bert, first["features"], tmp_path / "second", "--ckpt.save_dir", first["checkpoints"], seed=2)
    assert str(refused.value) == (
        f"{first['checkpoints']} holds checkpoints of another run (marlin_glue_step00000012.pt: --tmod.seed 42 -> "
        "2): this run would write its own among them; choose another --ckpt.save_dir, resume that run with its "
        "settings, or delete them with --ckpt.delete_existing_checkpoints true")
    assert {path.name: path.read_bytes() for path in first["checkpoints"].iterdir()} == before

    other = tmp_path / "mixed" / "checkpoints" / "marlin_glue_step00000002.pt"  # of a run with seed 7
    other.parent.mkdir(parents=True)
    state = torch.load(first["checkpoints"] / "marlin_glue_step00000004.pt", weights_only=True)
    torch.save({**state, "identity": {**state["identity"], "--tmod.seed": 7}}, other)
    with pytest.raises(ValueError, match=r"mixed/checkpoints holds checkpoints of another run \(marlin_glue_step"
                                         r"00000002.pt: --tmod.seed 7 -> 42\): .* choose another --tmod.output_dir"):
        start(tiny_bert, first["features"], tmp_path / "mixed", "--ckpt.load_dir", first["checkpoints"])


def test_a_load_dir_that_does_not_exist_is_refused_before_any_work(tiny_bert, first, tmp_path, model_never_loads):
    with pytest.raises(ConfigError) as refused:
        start(tiny_bert, first["features"], tmp_path / "out", "--ckpt.load_dir", tmp_path / "nowhere")
    assert refused.value.code == (f"--ckpt.load_dir {tmp_path / 'nowhere'}: no such file or folder (a folder of "
                                  "checkpoints train.py wrote)")
    with pytest.raises(ConfigError, match=r"^--ckpt.load_filename .*marlin_glue_step00000005.pt: no such file"):
        start(tiny_bert, first["features"], tmp_path / "out", "--ckpt.load_dir", first["checkpoints"],
              "--ckpt.load_filename", "marlin_glue_step00000005.pt")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"^--ckpt.resume and --ckpt.load_dir resume training: they need "
                                          r"--tmod.trainpath; to validate or predict with a model train.py saved, "
                                          r"give its folder as --model.hf_model$"):
        start(tiny_bert, {"train": "", "dev": first["features"]["dev"]}, tmp_path / "out", "--ckpt.resume", "true")


def test_a_resume_of_the_same_identity_ends_as_the_uninterrupted_run(tiny_bert, first, tmp_path):
    """From step 8 (mid-epoch) of the first run's checkpoints, given as load_dir to a run in another folder: the
    same final validation and curves."""
    resumed = start(tiny_bert, first["features"], tmp_path / "resumed", "--ckpt.load_dir", first["checkpoints"],
                    "--ckpt.load_filename", "marlin_glue_step00000008.pt")
    assert resumed.results == first["results"]
    history = [json.loads((folder / "history.json").read_text()) for folder in (first["output"], tmp_path / "resumed")]
    assert history[1] == history[0]
