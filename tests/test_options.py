"""Numbers you can trust: every numeric option has a range, written once in its comment and checked before any
work; max_seq_len within the model's positions; every refusal one line, exit code 2 for a command line the
scripts cannot run with and 1 for input they cannot use."""
from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

import data
import train
from conftest import FIXTURES, ROOT, config_defaults, featurize, python_env, write_rte_subset
from glue_support import command_line, embedded_model, exit_codes, option_docs, path_checks, preflight
from glue_support.checkpoints import StepCheckpointer
from glue_support.marlin import DefaultCheckpointerArguments

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


def run_command(monkeypatch, capsys, script: str, *args) -> tuple[int, str, str]:
    """``python <script> <args>`` as its ``__main__`` block runs it, in this process: exit code, stdout, stderr."""
    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        exit_codes.run_main(module.main)
    out, err = capsys.readouterr()
    return stop.value.code, out, err


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


def test_bad_input_stops_data_py_and_train_py_in_one_line_with_exit_code_1(tmp_path, inputs):
    raw = tmp_path / "RTE"
    raw.mkdir()
    (raw / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n",
                                   encoding="utf-8")
    result = subprocess.run([sys.executable, str(ROOT / "data.py"), "--dmod.input_dir", raw, "--dmod.output_dir",
                             tmp_path / "out"], env=python_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (f"data.py: {raw / 'train.tsv'}, line 3: blank line, expected 4 "
                                              "tab-separated columns for RTE train (--dproc.skip_malformed true "
                                              "leaves such rows out)")
    assert not (tmp_path / "out").exists()

    damaged = tmp_path / "features" / "dev.tsv"
    damaged.parent.mkdir()
    damaged.write_bytes(b"not features")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--tmod.valpath", damaged.parent,
                             "--tmod.output_dir", tmp_path / "val"], env=python_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"train.py: {damaged}: not a marlin-glue features file")


# -- the input, said as what it is --------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n   \n1\tc\td\tentailment\n",
     "{path}, line 3: blank line, expected 4 tab-separated columns for RTE train (--dproc.skip_malformed true "
     "leaves such rows out)"),
    (b"index\tsentence1\tsentence2\tlabel\r\n0\ta\tb\tentailment\r\n\r\n",
     "{path}, line 3: blank line, expected 4 tab-separated columns for RTE train"),
    (b"index\tsentence1\tsentence2\tlabel\r0\ta\tb\tentailment\r1\tc\td\tentailment\r",
     "{path}: its lines end in a carriage return alone (old Mac line endings), so the whole file reads as one "
     "line; convert them to newlines, e.g. with sed -i 's/\\r/\\n/g' {path}"),
])
def test_a_blank_line_or_old_mac_line_endings_are_named_as_such(monkeypatch, capsys, tiny_bert, tmp_path, content,
                                                                message):
    raw = tmp_path / "RTE"
    raw.mkdir()
    (raw / "train.tsv").write_bytes(content)
    code, _, stderr = run_command(monkeypatch, capsys, "data.py", "--dmod.input_dir", raw, "--dmod.output_dir",
                                  tmp_path / "out", "--dproc.tokenizer", tiny_bert)
    assert code == 1 and stderr.splitlines()[-1].startswith("data.py: " + message.format(path=raw / "train.tsv"))
    assert not (tmp_path / "out").exists()


def test_a_blank_line_is_skipped_as_a_malformed_row(tiny_bert, tmp_path):
    raw = tmp_path / "RTE"
    raw.mkdir()
    (raw / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n1\tc\td\tentailment\n",
                                   encoding="utf-8")
    path = featurize(raw, tmp_path / "out", tiny_bert, "RTE", "train", skip_malformed=True)
    metadata = data.read_metadata(str(path))
    assert metadata["count"] == 2 and metadata["skipped_lines"] == [3]


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
    data.check_max_seq_len(args, types.SimpleNamespace(model_max_length=VERY_LARGE_INTEGER))
    with pytest.raises(exit_codes.ConfigError):
        data.check_max_seq_len(args, types.SimpleNamespace(model_max_length=4096))


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


# -- checkpoints -------------------------------------------------------------------------------------------------


def test_resuming_from_a_checkpoint_of_another_task_is_refused_in_one_line(monkeypatch, capsys, tiny_bert, inputs,
                                                                             tmp_path):
    rte = {set_type: featurize(inputs["raw"], tmp_path / "rte" / set_type, tiny_bert, "RTE", set_type).parent
           for set_type in ("train", "dev")}
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, (
        "--model.hf_model", tiny_bert, "--tmod.trainpath", rte["train"], "--tmod.valpath", rte["dev"],
        "--tmod.output_dir", tmp_path / "rte-run", "--trainer.epochs", 1, "--ckpt.checkpoint", "true"))])
    train.main()
    [checkpoint] = (tmp_path / "rte-run" / "checkpoints").iterdir()
    mnli = featurize(FIXTURES / "MNLI", tmp_path / "mnli", tiny_bert, "MNLI", "train").parent
    code, _, stderr = run_command(monkeypatch, capsys, "train.py", "--model.hf_model", tiny_bert,
                                  "--tmod.trainpath", mnli, "--tmod.output_dir", tmp_path / "mnli-run",
                                  "--ckpt.load_dir", checkpoint.parent, "--trainer.disable_tqdm", "true")
    assert code == 1 and stderr.splitlines()[-1].startswith(
        f"train.py: {checkpoint}: a checkpoint of another run (--tmod.task RTE -> MNLI; ")
    # WNLI has two labels too: the same shapes, told apart by the task the checkpoint records
    wnli = featurize(FIXTURES / "WNLI", tmp_path / "wnli", tiny_bert, "WNLI", "train").parent
    code, _, stderr = run_command(monkeypatch, capsys, "train.py", "--model.hf_model", tiny_bert,
                                  "--tmod.trainpath", wnli, "--tmod.output_dir", tmp_path / "wnli-run",
                                  "--ckpt.load_dir", checkpoint.parent, "--trainer.disable_tqdm", "true")
    assert code == 1 and stderr.splitlines()[-1].startswith(
        f"train.py: {checkpoint}: a checkpoint of another run (--tmod.task RTE -> WNLI; ")


def test_a_pytorch_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path):
    torch.save({"classifier.weight": torch.zeros(2, 4)}, tmp_path / "marlin_glue_step00000001.pt")
    checkpointer = StepCheckpointer(DefaultCheckpointerArguments(load_dir=str(tmp_path), file_prefix="marlin_glue"),
                                    identity={})
    with pytest.raises(ValueError, match=r"marlin_glue_step00000001.pt: a PyTorch file, but not a marlin-glue "
                                         r"checkpoint \(no training state: a model's weights\?\)"):
        checkpointer.load()
