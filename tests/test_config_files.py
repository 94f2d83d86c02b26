"""Config files (config.yaml, benchmark.yaml, a user's ``--config_path``) are read strictly before anything runs: a
YAML tag that would build Python objects, invalid YAML, a key given twice, an empty file, a list or a value where
groups belong, a group or key config.yaml lacks or has that the file leaves out, and a file that is not a regular
one each stop the script in one line naming the file (and the line), exit 2, as a bad option does."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, python_env
from glue_support import command_line
from glue_support.exit_codes import ConfigError

CONFIG = (ROOT / "config.yaml").read_text(encoding="utf-8")


def line_of(text: str, start: str) -> int:
    """The number of the first line of ``text`` that starts with ``start``."""
    return next(number for number, line in enumerate(text.split("\n"), start=1) if line.startswith(start))


# (what, the file's text, the message after "<path>"): each a whole config file but for the one mistake
CASES = [
    ("a tag that runs a command", "tmod: !!python/object/apply:os.system ['touch {marker}']\n",
     ", line 1: the tag !!python/object/apply:os.system, which a config file cannot hold; expected plain values "
     "(numbers, text, true/false, null, lists, mappings)"),
    ("a syntax error", "tmod:\n  max_lr: [5.0e-5\n",
     ", line 3: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"),
    ("an empty file", "",
     ": no groups (an empty file), expected a mapping of groups, each a mapping of keys (group: then indented key: "
     "value lines)"),
    ("only comments", "# nothing yet\n",
     ": no groups (an empty file), expected a mapping of groups, each a mapping of keys (group: then indented key: "
     "value lines)"),
    ("a value", "tmod.max_lr 3.0e-5\n",
     ": the value 'tmod.max_lr 3.0e-5', expected a mapping of groups, each a mapping of keys (group: then indented "
     "key: value lines)"),
    ("a list", "- tmod\n- trainer\n",
     ": a list, expected a mapping of groups, each a mapping of keys (group: then indented key: value lines)"),
    ("a key twice in a group", CONFIG.replace("  max_lr: 5.0e-5", "  max_lr: 5.0e-5\n  max_lr: 3.0e-5"),
     f", line {line_of(CONFIG, '  max_lr:') + 1}: key 'max_lr' given twice in one mapping (first on line "
     f"{line_of(CONFIG, '  max_lr:')}); give each key once"),
    ("a group twice", CONFIG + "tmod:\n  max_lr: 3.0e-5\n",
     f", line {CONFIG.count(chr(10)) + 1}: key 'tmod' given twice in one mapping (first on line "
     f"{line_of(CONFIG, 'tmod:')}); give each key once"),
    ("a key twice on one line", CONFIG.replace("amp:\n", "amp: {enabled: true, enabled: false}\nunused:\n"),
     f", line {line_of(CONFIG, 'amp:')}: key 'enabled' given twice in one mapping (first on line "
     f"{line_of(CONFIG, 'amp:')}); give each key once"),
    ("an unknown group", CONFIG + "tmdo:\n  max_lr: 3.0e-5\n",
     f", line {CONFIG.count(chr(10)) + 1}: unknown group 'tmdo', expected one of config.yaml's; did you mean tmod?"),
    ("an unknown key", CONFIG.replace("  max_lr: 5.0e-5", "  max_lrr: 5.0e-5"),
     f", line {line_of(CONFIG, '  max_lr:')}: unknown key tmod.max_lrr, expected one of config.yaml's tmod keys; "
     "did you mean tmod.max_lr?"),
    ("a group that is a value", CONFIG.replace("amp:\n", "amp: true\nunused:\n"),
     f", line {line_of(CONFIG, 'amp:')}: group amp holds the value 'true', expected a mapping of its keys, as in "
     "config.yaml"),
    ("a mapping where a value belongs", CONFIG.replace("  max_lr: 5.0e-5", "  max_lr: {peak: 5.0e-5}"),
     f", line {line_of(CONFIG, '  max_lr:')}: tmod.max_lr holds a mapping, expected a value like config.yaml's "
     "(5.0e-05)"),
    ("groups left out", "tmod:\n  max_lr: 3.0e-5\n",
     ": lacks dmod, dproc, model, tmod.task, tmod.trainpath and 20 more, which config.yaml has; expected every "
     "group and key of config.yaml"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_config_file_that_is_not_one_stops_the_script_in_one_line_naming_file_and_line(argv, tmp_path, text,
                                                                                        message):
    marker = tmp_path / "command-ran"
    path = tmp_path / "mine.yaml"
    path.write_text(text.format(marker=marker) if "{marker}" in text else text, encoding="utf-8")
    argv("--config_path", path)
    with pytest.raises(ConfigError) as refusal:
        command_line.parse_config()
    assert refusal.value.code == f"{path}{message}"
    assert not marker.exists()


def test_the_projects_config_files_and_a_saved_run_config_read_as_the_safe_loader_reads_them(argv, tmp_path):
    for default, group in (("config.yaml", "tmod"), ("benchmark.yaml", "bench")):
        text = (ROOT / default).read_text(encoding="utf-8")
        config, lines = command_line.read_config_file(str(ROOT / default))
        assert config == yaml.safe_load(text) and lines[group] == line_of(text, f"{group}:")
        assert lines[f"{group}.{next(iter(config[group]))}"] == lines[group] + 1
    argv("--tmod.max_lr", "3.0e-5")
    saved = command_line.save_config(command_line.parse_config(), str(tmp_path))
    argv("--config_path", saved)
    assert command_line.parse_config()["tmod"]["max_lr"] == 3e-5


def test_a_benchmark_config_is_checked_against_benchmark_yaml(argv, tmp_path):
    text = (ROOT / "benchmark.yaml").read_text(encoding="utf-8")
    path = tmp_path / "mine.yaml"
    path.write_text(text.replace("rte:", "rtee:"), encoding="utf-8")
    argv("--config_path", path)
    with pytest.raises(ConfigError) as refusal:
        command_line.parse_config(str(ROOT / "benchmark.yaml"), short_group="bench")
    assert refusal.value.code == (f"{path}, line {line_of(text, 'rte:')}: unknown group 'rtee', expected one of "
                                  "benchmark.yaml's; did you mean rte?")


def test_a_fifo_as_the_config_file_is_refused_at_once(argv, fifo):
    argv("--config_path", fifo)
    with pytest.raises(ConfigError) as refusal:
        command_line.parse_config()
    assert refusal.value.code == f"{fifo}: a FIFO (named pipe), expected a regular file (a YAML config file)"


@pytest.mark.parametrize("extra", [[], ["--help"]], ids=["run", "help"])
def test_the_script_exits_2_with_one_line_and_no_traceback(tmp_path, fifo, extra):
    """download_glue.py stands for every script: each reads its options through parse_config (or, for --help,
    answer_help) before any work."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("  max_lr: 5.0e-5", "  max_lr: 5.0e-5\n  max_lr: 3.0e-5"), encoding="utf-8")
    for path, message in ((bad, "key 'max_lr' given twice"), (fifo, "a FIFO (named pipe), expected a regular file")):
        result = subprocess.run([sys.executable, str(ROOT / "download_glue.py"), "--config_path", str(path), *extra],
                                cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"download_glue.py: {path}") and message in result.stderr
