"""Options and exit codes. The command line is checked against config.yaml before anything runs: a misspelled or
misplaced key, `=` syntax, a stray word or a value of the wrong type stops the script with the key and a
suggestion; --help tells every option. Numbers you can trust: every numeric option has a range, written once in its
comment and checked before any work; max_seq_len within the model's positions; every refusal one line, exit code 2
for a command line the scripts cannot run with and 1 for input they cannot use."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

import data
from conftest import ROOT, config_defaults, featurize, python_env, run_command, write_rte_subset
from glue_support import command_line, embedded_model, exit_codes, option_docs, path_checks, preflight

# -- the command line, checked against config.yaml ---------------------------------------------------------------


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


# -- the ranges, where the options are documented ---------------------------------------------------------------


@pytest.mark.parametrize("config", ["config.yaml", "benchmark.yaml"])
def test_every_numeric_option_declares_a_range_that_holds_its_default(config):
    """Numeric: a number by default, or null (the "no limit" ones). --help shows the range with the comment."""
    defaults = yaml.safe_load((ROOT / config).read_text(encoding="utf-8"))
    options = [option for group in option_docs.documented_options(str(ROOT / config)) for option in group.options]
    typed = {option.key: defaults[option.key.partition(".")[0]][option.key.partition(".")[2]] for option in options}
    numeric = {key for key, value in typed.items()
               if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))}
    ranged = {option.key: option.range for option in options if option.range}
    assert numeric - set(ranged) == set()
    assert [key for key, accepted in ranged.items() if not accepted.admits(typed[key])] == []


def test_help_shows_each_range_as_part_of_its_comment():
    lines = option_docs.usage(command_line.CONFIG_PATH).splitlines()
    assert any(line.startswith("  --trainer.max_grad_norm 1.0 ") and line.endswith("clips to [> 0]") for line in lines)


def test_the_options_with_a_fixed_set_of_values_declare_it():
    options = {option.key: option.range for group in option_docs.documented_options(command_line.CONFIG_PATH)
               for option in group.options}
    assert options["dproc.padding"].choices == ("dynamic", "max_length")
    assert options["amp.dtype"].choices == ("float16", "bfloat16")
    assert options["dist.backend"].choices == ("auto", "nccl", "gloo")
    assert {"sp", "sp-amp", "ddp", "ddp-amp"} <= set(options["trainer.backend"].choices)


@pytest.mark.parametrize("text, admitted, refused, expected", [
    ("> 0", [1.0e-9, 3], [0, -1.0, float("nan"), float("inf"), True, "1", None], "a number > 0"),
    (">= 1", [1, 7, 1.5], [0, -1], "a number >= 1"),
    (">= 0, < 1", [0, 0.5, 0.999], [1, -0.1, 2], "a number >= 0 and < 1"),
    ("integer >= 1 or null", [None, 1, 3], [0, 2.5, "3", False], "an integer >= 1, or null"),
    ("one of: dynamic, max_length", ["dynamic", "max_length"], ["longest", None, 0], "one of dynamic, max_length"),
])
def test_a_range_admits_what_it_says(text, admitted, refused, expected):
    accepted = option_docs.Range.parse(text)
    assert all(accepted.admits(value) for value in admitted)
    assert not any(accepted.admits(value) for value in refused)
    assert str(accepted) == expected


@pytest.mark.parametrize("text", ["0, 1)", ">= one", "between 1 and 2", ">=1", "> 0 or none"])
def test_a_bracket_that_is_not_a_range_is_an_error_not_a_missing_check(text):
    with pytest.raises(ValueError, match="is not a range"):
        option_docs.Range.parse(text)


# -- each refused before any work: one line, exit code 2 --------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tiny_bert, tmp_path_factory):
    """A small RTE folder, its dev features, and a GLUE folder holding it: what each script would work on."""
    root = tmp_path_factory.mktemp("inputs")
    raw = write_rte_subset(root / "glue" / "RTE", train_rows=16, dev_rows=8)
    return {"raw": raw, "glue": raw.parent, "features": featurize(raw, root / "features", tiny_bert, "RTE", "dev")}


def work_args(script: str, inputs, tiny_bert, out) -> list:
    """Options that would make ``script`` do its work, into ``out``."""
    return {
        "data.py": ["--dmod.input_dir", inputs["raw"], "--dmod.output_dir", out, "--dproc.tokenizer", tiny_bert],
        "train.py": ["--tmod.trainpath", inputs["features"], "--tmod.valpath", inputs["features"],
                     "--tmod.output_dir", out, "--model.hf_model", tiny_bert, "--trainer.disable_tqdm", "true"],
        "download_glue.py": ["--data_dir", out, "--base_url", "http://127.0.0.1:9/", "--tasks", "RTE"],
        "aml_submit.py": ["--aml.dry_run", "true", "--aml.data_path", "azureml://datastores/d/paths/glue"],
        "benchmark.py": ["--data_dir", inputs["glue"], "--output_dir", out, "--model", tiny_bert, "--tasks", "RTE",
                         "--report_only", "true"],
    }[script]


@pytest.mark.parametrize("script, args, refusal", [
    ("train.py", ["--trainer.max_grad_norm", "-1"], "--trainer.max_grad_norm -1: expected a number > 0"),
    ("train.py", ["--trainer.epochs", "0"], "--trainer.epochs 0: expected a number >= 1"),
    ("train.py", ["--tmod.max_lr", "0"], "--tmod.max_lr 0: expected a number > 0"),
    ("train.py", ["--tmod.max_lr", "nan"], "--tmod.max_lr nan: expected a number > 0"),
    ("train.py", ["--tmod.warmup_prop", "2"], "--tmod.warmup_prop 2: expected a number >= 0 and < 1"),
    ("train.py", ["--tmod.warmup_prop", "1"], "--tmod.warmup_prop 1: expected a number >= 0 and < 1"),
    ("train.py", ["--tmod.weight_decay", "-5"], "--tmod.weight_decay -5: expected a number >= 0"),
    ("train.py", ["--tmod.seed", "-1"], "--tmod.seed -1: expected a number >= 0 and <= 4294967295"),
    ("train.py", ["--trainer.val_batch_size", "0"], "--trainer.val_batch_size 0: expected a number >= 1"),
    ("train.py", ["--trainer.train_batch_size", "0"], "--trainer.train_batch_size 0: expected a number >= 1"),
    ("train.py", ["--trainer.max_train_steps_per_epoch", "0"],
     "--trainer.max_train_steps_per_epoch 0: expected an integer >= 1, or null"),
    ("train.py", ["--trainer.max_val_steps_per_epoch", "2.5"],
     "--trainer.max_val_steps_per_epoch 2.5: expected an integer >= 1, or null"),
    ("train.py", ["--ckpt.period", "0"], "--ckpt.period 0: expected a number >= 1"),
    ("train.py", ["--ckpt.period_steps", "0"], "--ckpt.period_steps 0: expected an integer >= 1, or null"),
    ("train.py", ["--stats.log_steps", "0"], "--stats.log_steps 0: expected a number >= 1"),
    ("train.py", ["--amp.dtype", "fp8"], "--amp.dtype fp8: expected one of float16, bfloat16"),
    ("train.py", ["--dist.backend", "mpi"], "--dist.backend mpi: expected one of auto, nccl, gloo"),
    ("train.py", ["--trainer.backend", "tpu"],
     "--trainer.backend tpu: expected one of sp, sp-amp, ddp, ddp-amp, sp-amp-apex, ddp-amp-apex"),
    ("data.py", ["--dproc.max_seq_len", "4"], "--dproc.max_seq_len 4: expected a number >= 8"),
    ("data.py", ["--dproc.tokenize_batch_size", "0"], "--dproc.tokenize_batch_size 0: expected a number >= 1"),
    ("data.py", ["--dproc.workers", "0"], "--dproc.workers 0: expected an integer >= 1, or null"),
    ("data.py", ["--dproc.padding", "longest"], "--dproc.padding longest: expected one of dynamic, max_length"),
    ("download_glue.py", ["--timeout", "0"], "--download.timeout 0: expected a number > 0"),
    ("aml_submit.py", ["--aml.instance_count", "0"], "--aml.instance_count 0: expected a number >= 1"),
    ("aml_submit.py", ["--aml.processes_per_node", "0"], "--aml.processes_per_node 0: expected a number >= 1"),
    ("benchmark.py", ["--seeds", "0"], "--bench.seeds 0: expected a number >= 1"),
    ("benchmark.py", ["--nproc_per_node", "0"], "--bench.nproc_per_node 0: expected a number >= 1"),
    ("benchmark.py", ["--checkpoint_steps", "-1"], "--bench.checkpoint_steps -1: expected a number >= 0"),
    ("benchmark.py", ["--rte.epochs", "0"], "--rte.epochs 0: expected a number >= 1"),
    ("benchmark.py", ["--stsb.max_lr", "-0.5"], "--stsb.max_lr -0.5: expected a number > 0"),
    ("benchmark.py", ["--mrpc.max_seq_len", "4"], "--mrpc.max_seq_len 4: expected a number >= 8"),
    ("benchmark.py", ["--sst2.seeds", "-1"], "--sst2.seeds -1: expected a number >= 0"),
])
def test_a_value_out_of_range_is_refused_in_one_line_before_any_work(monkeypatch, capsys, tiny_bert, inputs, tmp_path,
                                                                     script, args, refusal):
    def never(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    monkeypatch.setattr(data.AutoTokenizer, "from_pretrained", never)
    monkeypatch.setattr(AutoConfig, "from_pretrained", never)
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", never)
    out = tmp_path / "out"
    code, stdout, stderr = run_command(monkeypatch, capsys, script, *work_args(script, inputs, tiny_bert, out), *args)
    assert (code, stderr) == (2, f"{script}: {refusal}\n")
    assert not out.exists() and stdout == ""


@pytest.mark.parametrize("script, args, refusal", [
    ("data.py", ["--dproc.workers", "0"], "--dproc.workers 0: expected an integer >= 1, or null"),
    ("train.py", ["--trainer.max_grad_norm", "-1"], "--trainer.max_grad_norm -1: expected a number > 0"),
    ("train.py", ["--trainer.epochs", "three"], "argument --trainer.epochs: invalid int value: 'three'"),
    ("download_glue.py", ["--timeout", "-1"], "--download.timeout -1: expected a number > 0"),
    ("aml_submit.py", ["--aml.instance_count", "0"], "--aml.instance_count 0: expected a number >= 1"),
    ("benchmark.py", ["--wnli.batch_size", "0"], "--wnli.batch_size 0: expected a number >= 1"),
    ("data.py", ["--dproc.max_seq_length", "64"],
     "unknown option --dproc.max_seq_length; did you mean --dproc.max_seq_len?"),
])
def test_each_script_refuses_a_bad_command_line_in_one_line_with_exit_code_2(tmp_path, script, args, refusal):
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, env=python_env(),
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (2, f"{script}: {refusal}\n")
    assert list(tmp_path.iterdir()) == []


# -- the policy: 2 for the command line, 1 for the input, a traceback for a bug ----------------------------------


@pytest.mark.parametrize("error, code, line", [
    (exit_codes.ConfigError("unknown option --x"), 2, "unknown option --x"),
    (ValueError("a.tsv, line 3: blank line"), 1, "a.tsv, line 3: blank line"),
    (FileNotFoundError("a.tsv: no such file"), 1, "a.tsv: no such file"),
    (ValueError("a message\n  over two lines"), 1, "a message over two lines"),
])
def test_run_main_answers_a_refusal_with_one_line_and_its_exit_code(monkeypatch, capsys, error, code, line):
    def main():
        raise error

    monkeypatch.setattr(sys, "argv", ["/somewhere/script.py"])
    with pytest.raises(SystemExit) as stop:
        exit_codes.run_main(main)
    assert stop.value.code == code and capsys.readouterr().err == f"script.py: {line}\n"


def test_run_main_leaves_a_bug_its_traceback():
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        exit_codes.run_main(main)


def test_data_py_exits_non_zero_with_one_line_and_a_missing_folder_is_named(tmp_path):
    raw = tmp_path / "RTE"
    raw.mkdir()
    (raw / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", encoding="utf-8")
    command = [sys.executable, str(ROOT / "data.py"), "--dmod.output_dir", str(tmp_path / "out")]
    result = subprocess.run(command + ["--dmod.input_dir", str(raw)], env=python_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"data.py: {raw / 'train.tsv'}, line 2: label 'maybe' is not one of entailment, not_entailment "
        "(--dproc.skip_malformed true leaves such rows out)")
    result = subprocess.run(command + ["--dmod.input_dir", str(tmp_path / "RTe")], env=python_env(),
                            capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(f"did you mean {raw}?")
    assert not (tmp_path / "out").exists()


def test_damaged_features_stop_train_py_in_one_line_with_exit_code_1(tmp_path, inputs):
    damaged = tmp_path / "features" / "dev.tsv"
    damaged.parent.mkdir()
    damaged.write_bytes(b"not features")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--tmod.valpath", damaged.parent,
                             "--tmod.output_dir", tmp_path / "val"], env=python_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"train.py: {damaged}: not a marlin-glue features file")


# -- the paths, said as what they are ----------------------------------------------------------------------------


def test_a_file_given_for_a_folder_and_an_output_folder_that_cannot_be_written_are_refused_first(
        monkeypatch, capsys, tiny_bert, inputs, tmp_path):
    tsv = inputs["raw"] / "train.tsv"
    code, _, stderr = run_command(monkeypatch, capsys, "data.py", "--dmod.input_dir", tsv, "--dmod.output_dir",
                                  tmp_path / "out")
    assert code == 2 and stderr == (f"data.py: --dmod.input_dir {tsv}: a file, expected a folder (the folder holding "
                                    f"the task's <set_type>.tsv files); did you mean --dmod.input_dir "
                                    f"{inputs['raw']}?\n")

    (tmp_path / "a-file").write_text("")
    code, _, stderr = run_command(monkeypatch, capsys, "data.py", "--dmod.input_dir", inputs["raw"],
                                  "--dmod.output_dir", tmp_path / "a-file" / "out")
    assert code == 2 and stderr == (f"data.py: --dmod.output_dir {tmp_path / 'a-file' / 'out'}: "
                                    f"{tmp_path / 'a-file'} is a file, expected a folder (the folder for the "
                                    "features file)\n")

    def unwritable(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(path_checks.tempfile, "TemporaryFile", unwritable)  # as for a user without the right
    code, _, stderr = run_command(monkeypatch, capsys, "data.py", "--dmod.input_dir", inputs["raw"],
                                  "--dmod.output_dir", tmp_path / "new" / "out")
    assert code == 2 and stderr == (f"data.py: --dmod.output_dir {tmp_path / 'new' / 'out'}: cannot write in "
                                    f"{tmp_path} (Permission denied); choose a folder you can write to\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


# -- max_seq_len within the model's positions --------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_bert(tmp_path_factory) -> str:
    """The tiny BERT of conftest.py with 64 positions instead of 512."""
    path = tmp_path_factory.mktemp("short-bert")
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(path)
    AutoTokenizer.from_pretrained(embedded_model.resolve(embedded_model.DEFAULT_MODEL)).save_pretrained(path)
    return str(path)


def test_data_py_refuses_a_max_seq_len_over_the_tokenizers_limit_before_tokenizing(monkeypatch, capsys, tiny_bert,
                                                                                    inputs, tmp_path):
    monkeypatch.setattr(data.Featurizer, "process", lambda *args: pytest.fail("tokenized"))
    code, _, stderr = run_command(monkeypatch, capsys, "data.py", *work_args("data.py", inputs, tiny_bert,
                                                                             tmp_path / "out"),
                                  "--dproc.max_seq_len", "600")
    assert code == 2 and stderr == (f"data.py: --dproc.max_seq_len 600: {tiny_bert} takes at most 512 tokens per "
                                    "example (its model_max_length); give --dproc.max_seq_len 512 or less\n")
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_without_a_limit_takes_any_max_seq_len(tiny_bert):
    """transformers gives a tokenizer without a recorded limit a huge sentinel: no limit, not a real one."""
    args = data.DataProcessorArguments(**config_defaults("dproc", tokenizer=tiny_bert, max_seq_len=100_000))
    data.check_max_seq_len(args.max_seq_len, args.tokenizer, types.SimpleNamespace(model_max_length=VERY_LARGE_INTEGER))
    with pytest.raises(exit_codes.ConfigError):
        data.check_max_seq_len(args.max_seq_len, args.tokenizer, types.SimpleNamespace(model_max_length=4096))


def test_train_py_refuses_features_longer_than_the_models_positions_before_loading_it(monkeypatch, capsys,
                                                                                       short_bert, inputs, tmp_path):
    features = data.featurize(data.DataInterfaceArguments(str(inputs["raw"]), str(tmp_path / "features")),
                              data.DataProcessorArguments(**config_defaults("dproc", set_type="dev",
                                                                            tokenizer=short_bert, max_seq_len=128)))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        lambda *args, **kwargs: pytest.fail("the model's weights were loaded"))
    code, _, stderr = run_command(monkeypatch, capsys, "train.py", "--tmod.valpath", features, "--model.hf_model",
                                  short_bert, "--tmod.output_dir", tmp_path / "val")
    assert code == 1 and stderr.splitlines()[-1] == (
        f"train.py: {features}: features of up to 128 tokens (its max_seq_len), but {short_bert} has 64 positions "
        "(max_position_embeddings): featurize again with --dproc.max_seq_len 64")
    preflight.check_positions({features: {"max_seq_len": 64}}, short_bert)  # within them: no refusal
