"""The command line is checked against config.yaml before anything runs: a misspelled or misplaced key, `=`
syntax, a stray word or a value of the wrong type stops the script with the key and a suggestion."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, python_env
from glue_support import command_line, option_docs, path_checks


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
        command_line.parse_config()
    assert message in str(stop.value.code)


def test_good_overrides_arrive_typed_and_params_apply(argv):
    argv("--tmod.max_lr", "3.0e-5", "--trainer.epochs", "3", "--trainer.disable_tqdm", "--tmod.task", "MRPC",
         "--trainer.max_train_steps_per_epoch", "7", "--params", '{"--tmod.seed": 5}')
    config = command_line.parse_config()
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
    assert result.returncode == 2
    assert result.stderr.strip() == "data.py: unknown option --dproc.max_seq_length; did you mean --dproc.max_seq_len?"
    assert not (tmp_path / "out").exists()


def test_the_saved_config_reruns_the_same_settings(argv, tmp_path):
    argv("--tmod.max_lr", "3.0e-5", "--trainer.writers", "stdout")
    path = command_line.save_config(command_line.parse_config(), str(tmp_path))
    argv("--config_path", path)
    again = command_line.parse_config()
    assert again["tmod"]["max_lr"] == 3e-5 and again["trainer"]["writers"] == ["stdout"]
    assert again == yaml.safe_load(open(path))


def test_missing_paths_are_named_with_a_close_existing_name(tmp_path):
    (tmp_path / "processed_data").mkdir()
    with pytest.raises(SystemExit, match=r"--tmod.valpath .*processed_dat: no such file or folder \(features\); "
                                         r"did you mean .*processed_data\?"):
        path_checks.require_path("--tmod.valpath", str(tmp_path / "processed_dat"), "features")
    with pytest.raises(SystemExit, match="--dmod.input_dir is required: the GLUE folder"):
        path_checks.require_path("--dmod.input_dir", "", "the GLUE folder")
    assert path_checks.require_path("--x", str(tmp_path), "y") == str(tmp_path)


def test_params_values_are_typed_like_the_command_line(argv):
    argv("--params", '{"--tmod.overwrite_output_dir": "false", "--trainer.epochs": "3", '
                     '"--trainer.writers": ["stdout"], "--tmod.max_lr": 3e-5, "--trainer.disable_tqdm": true}')
    config = command_line.parse_config()
    assert config["tmod"]["overwrite_output_dir"] is False and config["trainer"]["epochs"] == 3
    assert config["trainer"]["writers"] == ["stdout"] and config["tmod"]["max_lr"] == 3e-5
    assert config["trainer"]["disable_tqdm"] is True


def test_help_lists_every_option_with_its_default_and_meaning(argv, capsys):
    argv("--help")
    with pytest.raises(SystemExit) as stop:
        command_line.parse_config()
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    max_lr = next(line for line in lines if line.startswith("  --tmod.max_lr "))
    assert "5.0e-5" in max_lr and "peak learning rate of AdamW" in max_lr
    writers = lines.index(next(line for line in lines if line.startswith("  --trainer.writers ")))
    # a long default: its meaning starts on the next line
    assert "[stdout, tensorboard]" in lines[writers] and "also mlflow" in lines[writers + 1]
    # a comment under a key continues its meaning; the comment above a group describes it
    workers = lines.index(next(line for line in lines if line.startswith("  --dproc.workers ")))
    assert "N > 1: N single-threaded processes" in lines[workers + 1]
    assert lines[lines.index("dproc:") + 1] == "  data.py: how examples become features"


def test_help_shows_a_one_line_groups_keys_with_their_defaults():
    usage = option_docs.usage(str(ROOT / "benchmark.yaml"), None, "bench")
    rte = next(line for line in usage.splitlines() if line.startswith("  --rte.<key>: "))
    assert rte.endswith('seeds 0, init_from ""') and "max_lr [5.0e-05]" in rte


@pytest.mark.parametrize("config", ["config.yaml", "benchmark.yaml"])
def test_every_option_has_a_meaning_in_its_config_file(config):
    """--help takes each option's meaning from the comments: a key without one would show a bare default. The
    keys of one-line groups (rte: {epochs: 5, ...}) are explained once, above the first such group."""
    groups = option_docs.documented_options(str(ROOT / config))
    assert {group.name for group in groups} == set(yaml.safe_load((ROOT / config).read_text()))
    for group in groups:
        assert all(option.meaning for option in group.options), [o.key for o in group.options if not o.meaning]


def test_a_hash_inside_quotes_or_a_word_is_not_a_comment():
    assert option_docs._split_comment("'a # b'  # real") == ("'a # b'", "real")
    assert option_docs._split_comment("x#y") == ("x#y", "")


@pytest.mark.parametrize("script, groups", [
    ("data.py", ["dmod:", "dproc:"]), ("train.py", ["tmod:", "trainer:", "ckpt:"]),
    ("benchmark.py", ["bench:", "rte:"]), ("download_glue.py", ["download:"]), ("aml_submit.py", ["aml:"]),
])
def test_every_script_answers_help_without_importing_torch(script, groups):
    """--help of every script is cheap: no torch, no transformers (each takes seconds to import)."""
    done = subprocess.run([sys.executable, "-X", "importtime", script, "--help"], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()}
    assert not imported & {"torch", "transformers"}
    assert all(group in done.stdout.splitlines() for group in groups)
