"""config.yaml merged with ``--group.key value`` overrides, strictly.

pymarlin's ``CustomArgParser`` does the merge and types each value like its default; on its own it only warns
about an unknown key and silently drops ``--key=value``. ``parse_config`` checks the command line against the
config file first and stops with the closest known key instead, then checks every value's range
(``option_docs.check_ranges``).
"""
from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any, Iterator, Optional

import yaml

from glue_support.atomic_write import atomic_path
from glue_support.exit_codes import ConfigError
from glue_support.marlin import CustomArgParser
from glue_support.option_docs import check_ranges, cli_value, usage
from glue_support.path_checks import read_small_text

CONFIG_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.yaml")
PARSER_OPTIONS = ("config_path", "params")  # CustomArgParser's own options


YAML_TAG = "tag:yaml.org,2002:"  # the prefix of YAML's own tags, written !! in a file


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain values only: a ``!!python/...`` tag builds nothing), refusing a key given twice
    in one mapping, of which the safe loader would silently keep the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}  # key -> the line it is first on
        for key_node, _ in node.value:
            if key_node.tag == YAML_TAG + "merge":  # "<<: *defaults": the keys after it may override the merged ones
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in lines
            except TypeError:  # an unhashable key: the safe loader refuses it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping (first on line {lines[key]}); give each key "
                    "once", key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_undefined(self, node: yaml.Node) -> None:
        raise yaml.constructor.ConstructorError(
            None, None, f"the tag {node.tag.replace(YAML_TAG, '!!')}, which a config file cannot hold; expected plain "
            "values (numbers, text, true/false, null, lists, mappings)", node.start_mark)


StrictLoader.add_constructor(None, StrictLoader.construct_undefined)


def read_config_file(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """A config file's groups, and the line of each group and key (``tmod``, ``tmod.max_lr``). What is not such a
    file stops the script (ConfigError) naming the file, and the line where YAML gives one: not a regular file, not
    UTF-8, not valid YAML, a tag (``!!python/...``), a key given twice, an empty file, a list or a value."""
    try:
        text = read_small_text(path, "a YAML config file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except ValueError as error:  # not a regular file, not UTF-8, too large
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        loader = StrictLoader(text)
    except yaml.reader.ReaderError as error:  # a character YAML takes nowhere, such as a control character
        raise ConfigError(f"{path}, line {text[:error.position].count(chr(10)) + 1}: not valid YAML: "
                          f"{error.reason} (character #x{error.character:04x})") from None
    try:
        node = loader.get_single_node()
        config = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}, line {mark.line + 1}" if mark else path
        context = f" ({error.context})" if error.context else ""
        syntax = "" if isinstance(error, yaml.constructor.ConstructorError) else "not valid YAML: "
        raise ConfigError(f"{where}: {syntax}{error.problem}{context}") from None
    finally:
        loader.dispose()
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: {'no groups (an empty file)' if config is None else _kind(config)}, expected a "
                          "mapping of groups, each a mapping of keys (group: then indented key: value lines)")
    lines = {}
    for group_node, keys_node in node.value:
        lines[group_node.value] = group_node.start_mark.line + 1
        if isinstance(keys_node, yaml.MappingNode):
            lines.update((f"{group_node.value}.{key_node.value}", key_node.start_mark.line + 1)
                         for key_node, _ in keys_node.value)
    return config, lines


def _kind(value: Any) -> str:
    """What a config file holds where a mapping belongs, for messages."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"the value {cli_value(value)[:40]!r}"


def read_config(path: str, default_path: str) -> dict[str, Any]:
    """The config file at ``path`` (``read_config_file``), whose groups and keys must be those of ``default_path``
    (config.yaml, benchmark.yaml): an unknown or missing group or key, or a group that is not a mapping, stops the
    script naming it and its line."""
    config, lines = read_config_file(path)
    if os.path.abspath(path) == os.path.abspath(default_path):
        return config
    defaults, _ = read_config_file(default_path)
    name = os.path.basename(default_path)
    for group, keys in config.items():
        where = f"{path}, line {lines[str(group)]}" if str(group) in lines else path
        if group not in defaults:
            close = difflib.get_close_matches(str(group), list(defaults), n=1, cutoff=0.6)
            raise ConfigError(f"{where}: unknown group {group!r}, expected one of {name}'s" +
                              (f"; did you mean {close[0]}?" if close else f": {', '.join(defaults)}"))
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}: group {group} holds {_kind(keys)}, expected a mapping of its keys, as in "
                              f"{name}")
        for key, value in keys.items():
            where = f"{path}, line {lines[f'{group}.{key}']}" if f"{group}.{key}" in lines else path
            if key not in defaults[group]:
                close = difflib.get_close_matches(str(key), list(defaults[group]), n=1, cutoff=0.6)
                raise ConfigError(f"{where}: unknown key {group}.{key}, expected one of {name}'s {group} keys" +
                                  (f"; did you mean {group}.{close[0]}?" if close else ""))
            if isinstance(value, dict) and not isinstance(defaults[group][key], dict):
                raise ConfigError(f"{where}: {group}.{key} holds a mapping, expected a value like {name}'s "
                                  f"({cli_value(defaults[group][key])})")
    missing: list[str] = []
    for group, keys in defaults.items():
        missing += [f"{group}.{key}" for key in keys if key not in config[group]] if group in config else [group]
    if missing:
        raise ConfigError(f"{path}: lacks {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if
                          len(missing) > 5 else "") + f", which {name} has; expected every group and key of {name}")
    return config


def config_keys(config: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every leaf key as the command line names it: ``tmod.max_lr``, ``trainer.epochs``, ..."""
    for name, value in config.items():
        if isinstance(value, dict):
            yield from config_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


# run_glue.py's names for our keys: users coming from Hugging Face's script type these.
RUN_GLUE_NAMES = {
    "learning_rate": "tmod.max_lr", "lr": "tmod.max_lr", "warmup_ratio": "tmod.warmup_prop",
    "num_train_epochs": "trainer.epochs", "per_device_train_batch_size": "trainer.train_batch_size",
    "batch_size": "trainer.train_batch_size", "per_device_eval_batch_size": "trainer.val_batch_size",
    "max_seq_length": "dproc.max_seq_len", "model_name_or_path": "model.hf_model", "task_name": "dproc.task",
    "max_steps": "trainer.max_train_steps_per_epoch", "max_grad_norm": "trainer.max_grad_norm",
}


def closest_key(name: str, keys: list[str]) -> Optional[str]:
    """The known key a misspelled or misplaced one most likely meant: the same name in another group, then
    run_glue.py's name for it, then the closest spelling."""
    group, _, leaf = name.rpartition(".")
    same_group_last = sorted(keys, key=lambda key: key.startswith(group + "."))
    by_leaf = {key.rpartition(".")[2]: key for key in same_group_last}
    candidates = {**by_leaf, **{alias: key for alias, key in RUN_GLUE_NAMES.items() if key in keys}}
    if leaf in candidates:
        return candidates[leaf]
    in_group = {key.rpartition(".")[2]: key for key in keys if group and key.startswith(group + ".")}
    matches = difflib.get_close_matches(leaf, list(in_group), n=1, cutoff=0.75)
    if matches:  # a misspelling within the group named: its own key, not a closer spelling elsewhere
        return in_group[matches[0]]
    matches = difflib.get_close_matches(leaf, list(candidates), n=1, cutoff=0.75)
    if matches:
        return candidates[matches[0]]
    matches = difflib.get_close_matches(name, keys, n=1, cutoff=0.6)
    return matches[0] if matches else None


def expand_params(argv: list[str]) -> list[str]:
    """``--params '{"--tmod.max_lr": 3e-5}'`` (pymarlin's JSON form, used by Azure ML pipelines) as ordinary
    ``--tmod.max_lr 3.0e-05`` options, so its values are typed and checked like any other."""
    if "--params" not in argv[:-1]:
        return argv
    position = argv.index("--params")
    try:
        overrides = json.loads(argv[position + 1])
    except json.JSONDecodeError as error:
        raise ConfigError(f"--params is not a JSON object of overrides: {error}") from None
    if not isinstance(overrides, dict):
        raise ConfigError("--params must be a JSON object such as '{\"--tmod.max_lr\": 3e-5}'")
    expanded = [part for key, value in overrides.items() for part in (key, cli_value(value))]
    return argv[:position] + argv[position + 2:] + expanded


def config_file(argv: list[str], default: str) -> str:
    """The config file a command line reads: the one ``--config_path`` names, else ``default``."""
    return argv[argv.index("--config_path") + 1] if "--config_path" in argv[:-1] else default


def answer_help(path: str = CONFIG_PATH, groups: Optional[tuple[str, ...]] = None,
                short_group: Optional[str] = None) -> None:
    """With ``--help`` or ``-h`` on the command line, print ``usage`` and exit 0. Scripts call this before their
    heavy imports (torch, transformers), so asking for help takes a fraction of a second."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        read_config(config_file(argv, path), path)  # a file that is not a config file: one line, not a traceback
        print(usage(config_file(argv, path), groups, short_group))
        raise SystemExit(0)


def check_command_line(argv: list[str], config: dict[str, Any], short_group: Optional[str] = None,
                       path: str = CONFIG_PATH) -> None:
    """Refuse what pymarlin's parser would ignore: unknown keys, ``--key=value``, options given twice, stray
    words. ``path``: the config file the keys come from, named in the messages."""
    keys = list(config_keys(config))
    known = set(keys) | set(PARSER_OPTIONS)
    value_allowed = False
    seen: set[str] = set()
    for token in argv:
        if not token.startswith("--") or " " in token:  # with a space it is a value, as argparse reads it
            if not value_allowed:
                raise ConfigError(f"unexpected argument {token!r}: every option is written --group.key value")
            value_allowed = False
            continue
        name = token[2:]
        if "=" in name:
            key, _, value = name.partition("=")
            raise ConfigError(f"{token}: write --{key} {value} (a space, not '='), or the value is ignored")
        if name not in known:
            own = difflib.get_close_matches(name, list(config.get(short_group, {})), n=1, cutoff=0.75
                                            ) if short_group and "." not in name else []
            hint = f"{short_group}.{own[0]}" if own else closest_key(name, keys)
            if name in config:
                raise ConfigError(f"--{name} is a group of {os.path.basename(path)}: override one of its keys, "
                                  f"e.g. --{next(key for key in keys if key.startswith(name + '.'))}")
            raise ConfigError(f"unknown option --{name}" + (f"; did you mean --{hint}?" if hint else
                                                            f" (the keys are in {path})"))
        if name in seen:
            raise ConfigError(f"--{name} is given twice: give each option once")
        seen.add(name)
        value_allowed = True


def expand_short_names(argv: list[str], config: dict[str, Any], group: Optional[str]) -> list[str]:
    """A script's own group may be written without its name: ``--tasks`` for ``--bench.tasks``."""
    if not group:
        return argv
    return [f"--{group}.{token[2:]}" if token.startswith("--") and token[2:] in config.get(group, {}) else token
            for token in argv]


def parse_config(default_yamlfile: str = CONFIG_PATH, short_group: Optional[str] = None) -> dict[str, Any]:
    """config.yaml (beside this script, or ``--config_path``) merged with the command line's overrides.
    ``short_group``: the script's own group, whose keys may also be given as ``--key``.

    Values are typed like their defaults by pymarlin's parser (a value of the wrong type, ``--trainer.epochs
    three``, is refused naming the key), then each is checked against the range its comment in
    ``default_yamlfile`` declares (``check_ranges``): all before a script does any work."""
    argv = expand_params(sys.argv[1:])
    path = config_file(argv, default_yamlfile)
    defaults = read_config(path, default_yamlfile)
    if "--help" in argv or "-h" in argv:
        print(usage(path, short_group=short_group))
        raise SystemExit(0)
    argv = expand_short_names(argv, defaults, short_group)
    check_command_line(argv, defaults, short_group, path)
    command_line, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        # keys were checked above; its own warnings would only misread values that hold spaces ("--a 1 --b 2")
        parser = CustomArgParser(default_yamlfile=default_yamlfile, log_level="ERROR")
        parser.parser.error = _refuse_value
        config = parser.parse()
    finally:
        sys.argv = command_line
    config = {group: values for group, values in config.items() if group not in PARSER_OPTIONS}
    check_ranges(config, default_yamlfile)
    return config


def _refuse_value(message: str) -> None:
    """argparse's ``error`` for a value of the wrong type: one line, like every refusal (argparse's own prints
    its usage of every option first)."""
    raise ConfigError(message)


def save_config(config: dict[str, Any], output_dir: str) -> str:
    """Write the merged config as ``<output_dir>/run_config.yaml``: ``--config_path`` reruns it exactly."""
    path = os.path.join(output_dir, "run_config.yaml")
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return path
