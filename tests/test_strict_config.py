"""The command line is checked against config.yaml before anything runs: a misspelled or misplaced key, `=`
syntax, a stray word or a value of the wrong type stops the script with the key and a suggestion."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from glue_support import strict_config
from conftest import ROOT, python_env


@pytest.mark.parametrize("args, message", [
    (["--tmod.lerning_rate", "3.0e-5"], "unknown option --tmod.lerning_rate; did you mean --tmod.max_lr?"),
    (["--trainer.max_lr", "3.0e-5"], "unknown option --trainer.max_lr; did you mean --tmod.max_lr?"),
    (["--num_train_epochs", "3"], "unknown option --num_train_epochs; did you mean --trainer.epochs?"),
    (["--dproc.taks", "RTE"], "did you mean --dproc.task?"),
    (["--xyz.abc", "1"], "unknown option --xyz.abc (the keys are in"),
    (["--tmod.max_lr=3.0e-5"], "--tmod.max_lr=3.0e-5: write --tmod.max_lr 3.0e-5 (a space, not '=')"),
    (["--tmod.task", "RTE", "MRPC"], "unexpected argument 'MRPC'"),
    (["--tmod", "x"], "--tmod is a group of config.yaml: override one of its keys, e.g. --tmod.task"),
    (["--params", '{"--tmod.lr": 1}'], "unknown option --tmod.lr; did you mean --tmod.max_lr?"),
    (["--params", "[1]"], "--params must be a JSON object"),
    (["--tmod.seed", "1", "--tmod.seed", "2"], "--tmod.seed is given twice"),
    (["--tmod.seed", "1", "--params", '{"--tmod.seed": 2}'], "--tmod.seed is given twice"),
])
def test_command_line_mistakes_stop_with_a_suggestion(argv, args, message):
    argv(*args)
    with pytest.raises(SystemExit) as stop:
        strict_config.parse_config()
    assert message in str(stop.value.code)


def test_good_overrides_arrive_typed_and_params_apply(argv):
    argv("--tmod.max_lr", "3.0e-5", "--trainer.epochs", "3", "--trainer.disable_tqdm", "--tmod.task", "MRPC",
         "--trainer.max_train_steps_per_epoch", "7", "--params", '{"--tmod.seed": 5}')
    config = strict_config.parse_config()
    assert config["tmod"]["max_lr"] == 3e-5 and config["trainer"]["epochs"] == 3 and config["tmod"]["task"] == "MRPC"
    assert config["trainer"]["disable_tqdm"] is True and config["trainer"]["max_train_steps_per_epoch"] == 7
    assert config["tmod"]["seed"] == 5


def test_a_value_of_the_wrong_type_stops_the_script_naming_the_key():
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--trainer.epochs", "three"], cwd=ROOT,
                            env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "argument --trainer.epochs: invalid int value: 'three'" in result.stderr


def test_a_misspelled_override_stops_the_real_script_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "data.py"), "--dmod.input_dir", str(ROOT / "RTE"),
                             "--dmod.output_dir", str(tmp_path / "out"), "--dproc.max_seq_length", "64"],
                            cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("unknown option --dproc.max_seq_length; did you mean --dproc.max_seq_len?")
    assert not (tmp_path / "out").exists()


def test_the_saved_config_reruns_the_same_settings(argv, tmp_path):
    argv("--tmod.max_lr", "3.0e-5", "--trainer.writers", "stdout")
    path = strict_config.save_config(strict_config.parse_config(), str(tmp_path))
    argv("--config_path", path)
    again = strict_config.parse_config()
    assert again["tmod"]["max_lr"] == 3e-5 and again["trainer"]["writers"] == ["stdout"]
    assert again == yaml.safe_load(open(path))


def test_missing_paths_are_named_with_a_close_existing_name(tmp_path):
    (tmp_path / "processed_data").mkdir()
    with pytest.raises(SystemExit, match=r"--tmod.valpath .*processed_dat: no such file or folder \(features\); "
                                         r"did you mean .*processed_data\?"):
        strict_config.require_path("--tmod.valpath", str(tmp_path / "processed_dat"), "features")
    with pytest.raises(SystemExit, match="--dmod.input_dir is required: the GLUE folder"):
        strict_config.require_path("--dmod.input_dir", "", "the GLUE folder")
    assert strict_config.require_path("--x", str(tmp_path), "y") == str(tmp_path)


def test_params_values_are_typed_like_the_command_line(argv):
    argv("--params", '{"--tmod.overwrite_output_dir": "false", "--trainer.epochs": "3", '
                     '"--trainer.writers": ["stdout"], "--tmod.max_lr": 3e-5, "--trainer.disable_tqdm": true}')
    config = strict_config.parse_config()
    assert config["tmod"]["overwrite_output_dir"] is False and config["trainer"]["epochs"] == 3
    assert config["trainer"]["writers"] == ["stdout"] and config["tmod"]["max_lr"] == 3e-5
    assert config["trainer"]["disable_tqdm"] is True


def test_help_lists_every_option_with_its_default(argv, capsys):
    argv("--help")
    with pytest.raises(SystemExit) as stop:
        strict_config.parse_config()
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "  --tmod.max_lr 5.0e-05" in printed and "  --trainer.writers [stdout, tensorboard]" in printed
