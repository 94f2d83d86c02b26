"""Layer-wise learning-rate decay (``tmod.layer_lr_decay``) against its formula, parameter by parameter, for the tiny
BERT and every family of ``tests/families.py``: layer i of L (counted from 1 at the bottom) learns at
max_lr x decay^(L - i), the embeddings at max_lr x decay^L, everything above the layers at max_lr."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, Trainer

import train
from conftest import config_defaults, featurize, recipe, run_command, run_train, write_rte_subset
from families import FAMILIES, build
from glue_support import checkpoints

MAX_LR = 1e-3  # conftest.recipe's


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """A family's tiny model folder and its features of 8 RTE training pairs."""
    name = request.param
    model = str(build(name, tmp_path_factory.mktemp(name)))
    raw = write_rte_subset(tmp_path_factory.mktemp(f"{name}-rte"), train_rows=8, dev_rows=0)
    train_features = featurize(raw, tmp_path_factory.mktemp(f"{name}-features") / "train", model, "RTE", "train")
    return model, {"train": train_features.parent}


def expected_rates(model: torch.nn.Module, decay: float) -> tuple[dict[str, float], int]:
    """Each parameter's learning rate by the formula, and the number of layers, the layers found from the model's
    structure: its first ModuleList (ALBERT: its layer groups, one layer shared by all)."""
    layers = next(module for module in model.modules() if isinstance(module, torch.nn.ModuleList))
    assert len(layers) == getattr(model.config, "num_hidden_groups", model.config.num_hidden_layers)
    number = {id(parameter): i for i, layer in enumerate(layers, start=1) for parameter in layer.parameters()}
    count = len(layers)
    rates = {}
    for name, parameter in model.named_parameters():
        if id(parameter) in number:
            rates[name] = MAX_LR * decay ** (count - number[id(parameter)])
        elif any(word in name for word in ("embed", "wte", "wpe")):
            rates[name] = MAX_LR * decay ** count
        else:
            rates[name] = MAX_LR
    return rates, count


def group_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """Each parameter's group, by name; every parameter in exactly one."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    found: dict[str, dict] = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert names[id(parameter)] not in found
            found[names[id(parameter)]] = group
    assert found.keys() == set(names.values())
    return found


def assert_the_formula(module: train.Recipe, optimizer: torch.optim.Optimizer, decay: float) -> None:
    groups = group_of(module.model, optimizer)
    rates, layers = expected_rates(module.model, decay)
    # initial_lr: the rate the schedule scales (its warmup starts at 0)
    assert {name: group["initial_lr"] for name, group in groups.items()} == pytest.approx(rates, rel=1e-12)
    assert len(set(rates.values())) == layers + 1  # the head, each layer and the embeddings are all there
    decayed = set(Trainer.get_decay_parameter_names(None, module.model))  # a method that does not read its Trainer
    assert {name: group["weight_decay"] for name, group in groups.items()} == {
        name: 0.01 if name in decayed else 0.0 for name in groups}
    assert optimizer.param_groups[0]["initial_lr"] == MAX_LR  # the lr logged is the top's


def test_the_tiny_bert_s_rates_follow_the_formula_and_the_schedule_scales_each(tiny_bert, features, tmp_path):
    module = recipe(tiny_bert, features, tmp_path, tmod_overrides={"layer_lr_decay": 0.5})
    [optimizer], [scheduler] = module.get_optimizers_schedulers(0, 2)
    assert_the_formula(module, optimizer, 0.5)
    assert len(optimizer.param_groups) == 3 * 2  # (embeddings, 2 layers and the rest) x (decayed, not)
    initial = [group["initial_lr"] for group in optimizer.param_groups]
    steps = module.optimizer_steps(2)
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step()
        factor = scheduler.lr_lambdas[0](step)
        assert 0 <= factor <= 1
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
            [rate * factor for rate in initial], rel=1e-12, abs=1e-18)
    assert [group["lr"] for group in optimizer.param_groups] == [0.0] * len(initial)


def test_every_family_s_rates_follow_the_formula(family, tmp_path):
    model, features = family
    module = recipe(model, features, tmp_path, tmod_overrides={"layer_lr_decay": 0.8})
    [optimizer], _ = module.get_optimizers_schedulers(0, 2)
    assert_the_formula(module, optimizer, 0.8)


def test_decay_1_is_the_usual_two_groups(family, tmp_path):
    model, features = family
    module = recipe(model, features, tmp_path)
    assert module.args.layer_lr_decay == 1.0  # the default
    [optimizer], _ = module.get_optimizers_schedulers(0, 2)
    groups = group_of(module.model, optimizer)
    decayed = set(Trainer.get_decay_parameter_names(None, module.model))
    assert [{name for name in groups if groups[name] is group} for group in optimizer.param_groups] == [
        decayed, set(groups) - decayed]
    assert [(group["initial_lr"], group["weight_decay"]) for group in optimizer.param_groups] == [
        (MAX_LR, 0.01), (MAX_LR, 0.0)]


def test_train_py_trains_with_the_decayed_rates(argv, tiny_bert, features, tmp_path):
    module = run_train(argv, tiny_bert, features, tmp_path / "out", "--tmod.layer_lr_decay", 0.5, epochs=1)
    rates, _ = expected_rates(module.model, 0.5)
    groups = group_of(module.model, module.optimizer)
    assert {name: group["initial_lr"] for name, group in groups.items()} == pytest.approx(rates, rel=1e-12)
    assert module.results["dev.tsv"]["loss"] > 0 and module.optimizer.param_groups[-1]["lr"] == 0.0


def test_a_model_without_numbered_layers_is_refused_in_one_line(tiny_bert, features, tmp_path):
    folder = tmp_path / "no-layers"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=0, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=512)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    module = recipe(folder, features, tmp_path, tmod_overrides={"layer_lr_decay": 0.9})
    with pytest.raises(ValueError, match=rf"^--tmod.layer_lr_decay 0.9: {folder} has no numbered layers "
                                         r"\(.layer.N., .layers.N., .h.N., .block.N.\) in its parameter names; "
                                         r"expected 1.0 \(off\) for it$"):
        module.get_optimizers_schedulers(0, 2)
    [optimizer], _ = recipe(folder, features, tmp_path).get_optimizers_schedulers(0, 2)  # off: as any model
    assert len(optimizer.param_groups) == 2


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_decay_out_of_range_is_refused_in_one_line(monkeypatch, capsys, value):
    code, stdout, stderr = run_command(monkeypatch, capsys, "train.py", "--tmod.layer_lr_decay", value)
    assert (code, stdout) == (2, "")
    assert stderr == f"train.py: --tmod.layer_lr_decay {value}: expected a number > 0 and <= 1\n"


def test_the_decay_is_part_of_the_run_identity(tiny_bert, features):
    config = {group: config_defaults(group) for group in ("model", "tmod", "trainer")}
    config["model"]["hf_model"], config["tmod"]["trainpath"] = tiny_bert, str(features["train"])
    checked = train.checked_features(train.ModuleInterfaceArguments(**config["tmod"]), tiny_bert)
    before = train.run_identity(config, checked, 1)
    config["tmod"]["layer_lr_decay"] = 0.8
    assert checkpoints.differences(before, train.run_identity(config, checked, 1)) == [
        "--tmod.layer_lr_decay 1.0 -> 0.8"]
