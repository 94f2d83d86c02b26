"""config.yaml merged with ``--group.key value`` overrides, strictly.

pymarlin's ``CustomArgParser`` does the merge and types each value like its default; on its own it only warns
about an unknown key (``--tmod.lerning_rate 3e-5`` would train with the default rate) and silently drops
``--key=value``. ``parse_config`` checks the command line against config.yaml first and stops with the closest
known key instead, then checks every value against the range its comment declares (``Range``).
``require_path`` and its kin do the same for paths a script cannot run without, and ``run_main`` turns every
refusal into one line and an exit code.
"""
from __future__ import annotations

import difflib
import json
import math
import operator
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import yaml

from glue_support.atomic_write import atomic_path
from glue_support.marlin import CustomArgParser

CONFIG_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.yaml")
PARSER_OPTIONS = ("config_path", "params")  # CustomArgParser's own options


class ConfigError(SystemExit):
    """A command line the scripts cannot run with: an unknown option, a value of the wrong type or out of its
    range, a path that names nothing. Exits with the message; under ``run_main`` with exit code 2."""


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


def cli_value(value: Any) -> str:
    """A config value written as the command line takes it: strings as they are, anything else as YAML
    (``true``, ``null``, ``3.0e-05`` with the dot YAML 1.1 needs, ``[stdout, tensorboard]``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()


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


# The values an option takes end its comment in config.yaml or benchmark.yaml, in brackets, so that --help shows
# them and parse_config checks them: bounds that must all hold, "or null" where null is allowed, "integer" where a
# null default gives the value no type; or a fixed set of names:
#   [> 0]   [>= 1]   [>= 0, < 1]   [integer >= 1 or null]   [one of: dynamic, max_length]
RANGE_AT_END = re.compile(r"\[([^\[\]]+)\]$")
BOUND = re.compile(r"(>=|<=|>|<) (-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)")
COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class Range:
    """The values one option takes, as the bracket ending its comment declares them (``RANGE_AT_END``)."""

    bounds: tuple[tuple[str, str], ...] = ()  # (comparison, number as written)
    choices: tuple[str, ...] = ()
    integer: bool = False
    null: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        """``text`` inside the brackets; a ValueError for anything but the forms above (a typo in a config file's
        comment must not silently drop its check)."""
        if text.startswith("one of: "):
            return cls(choices=tuple(name.strip() for name in text.removeprefix("one of: ").split(",")))
        parts = text.removeprefix("integer ").removesuffix(" or null").split(", ")
        bounds = [BOUND.fullmatch(part) for part in parts]
        if not all(bounds):
            raise ValueError(f"[{text}] is not a range: write e.g. [> 0], [>= 0, < 1], [integer >= 1 or null], "
                             "[one of: a, b]")
        return cls(tuple(bound.groups() for bound in bounds), integer=text.startswith("integer "),
                   null=text.endswith(" or null"))

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is within the range; a list (an option whose default is a list, such as benchmark.yaml's
        per-task grids) when it holds at least one value and every value is."""
        if isinstance(value, list):
            return bool(value) and all(not isinstance(item, list) and self.admits(item) for item in value)
        if value is None:
            return self.null
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False  # a bool is an int to Python, not a number to the user; nan and inf train nothing
        if self.integer and not isinstance(value, int):
            return False
        return all(COMPARE[comparison](value, float(bound)) for comparison, bound in self.bounds)

    def __str__(self) -> str:
        """What a refusal says was expected: ``a number >= 0 and < 1``, ``an integer >= 1, or null``, ..."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        limits = " and ".join(f"{comparison} {bound}" for comparison, bound in self.bounds)
        return f"{'an integer' if self.integer else 'a number'} {limits}" + (", or null" if self.null else "")


@dataclass
class OptionHelp:
    """One key of a config file as ``--help`` shows it: its default as written there, and its comment."""

    key: str
    default: str
    meaning: list[str] = field(default_factory=list)

    @property
    def range(self) -> Optional[Range]:
        """The values the option takes: the bracket that ends its comment (``[> 0]``); None if there is none."""
        match = RANGE_AT_END.search(" ".join(self.meaning))
        return Range.parse(match.group(1)) if match else None


@dataclass
class GroupHelp:
    """One group of a config file: the comment above it, and its keys in the file's order."""

    name: str
    about: list[str] = field(default_factory=list)
    options: list[OptionHelp] = field(default_factory=list)
    inline: bool = False  # written on one line (``rte: {epochs: 5, ...}``): its keys are explained above the groups


def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (``value``, ``comment``); a ``#`` inside quotes or inside a word is not a comment."""
    quote = None
    for position, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or text[position - 1].isspace()):
            return text[:position].rstrip(), text[position + 1:].strip()
    return text.rstrip(), ""


def _explanations(comment: list[str]) -> dict[str, str]:
    """The ``key: meaning`` lines of a comment, by key."""
    lines = (line.partition(": ") for line in comment)
    return {key: meaning for key, separator, meaning in lines if separator and key.isidentifier()}


def documented_options(path: str) -> list[GroupHelp]:
    """The groups and keys of a config file with their comments, in the file's order. The comment lines right
    above a group describe it; a key's meaning is the comment on its line and the indented comment lines under
    it. A group written on one line (``rte: {epochs: 5, ...}  # comment``) gets that line's comment; its keys
    are explained once, by ``key: meaning`` lines in the comment above the first such group. The comments are the
    one place options are explained: ``--help`` reads them instead of repeating them, ``parse_config`` their
    ranges."""
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    groups: list[GroupHelp] = []
    above: list[str] = []
    explained: dict[str, str] = {}  # the keys of one-line groups
    for line in lines:
        text = line.strip()
        indented = line[:1].isspace()
        if not text:
            above = []
        elif text.startswith("#"):
            comment = text.lstrip("#").strip()
            if indented and groups and groups[-1].options:
                groups[-1].options[-1].meaning.append(comment)
            elif not indented:
                above.append(comment)
        elif not indented:
            name, _, rest = text.partition(":")
            value, comment = _split_comment(rest.strip())
            group = GroupHelp(name, above + ([comment] if comment else []), inline=bool(value))
            if value:  # a flow mapping on the group's line
                explained.update(_explanations(group.about))
                # an empty string as the command line takes it, not as nothing: init_from ""
                group.options = [OptionHelp(f"{name}.{key}", cli_value(default) or '""',
                                            [explained[key]] if key in explained else [])
                                 for key, default in yaml.safe_load(value).items()]
            groups.append(group)
            above = []
        elif groups:
            key, _, rest = text.partition(":")
            value, comment = _split_comment(rest.strip())
            groups[-1].options.append(OptionHelp(f"{groups[-1].name}.{key}", value, [comment] if comment else []))
    return groups


def usage(path: str, groups: Optional[tuple[str, ...]] = None, short_group: Optional[str] = None) -> str:
    """``--help``: the options of ``groups`` (all groups when None), each with its default and its meaning from
    the config file's comments, grouped as in the file."""
    found = documented_options(path)
    shown = [group for group in found if groups is None or group.name in groups]
    width = min(36, max(len(f"--{option.key} {option.default}") for group in shown for option in group.options))
    lines = [f"Options, with their defaults from {path} (write --group.key value; "
             "values take the type of their default):"]
    if short_group:
        lines.append(f"the keys of {short_group} may also be written without it: --{shown[0].options[0].key} "
                     f"is --{shown[0].options[0].key.partition('.')[2]}")
    for group in shown:
        lines += ["", f"{group.name}:" + "".join(f"\n  {about}" for about in group.about)]
        if group.inline:
            lines.append(f"  --{group.name}.<key>: " + ", ".join(
                f"{option.key.partition('.')[2]} {option.default}" for option in group.options))
            continue
        for option in group.options:
            head = f"  --{option.key} {option.default}"
            meaning = option.meaning or [""]
            if len(head) > width + 2:
                lines += [head] + [f"{'':{width + 4}}{text}" for text in meaning if text]
            else:
                lines += [f"{head:{width + 4}}{meaning[0]}".rstrip()] + [f"{'':{width + 4}}{text}"
                                                                     for text in meaning[1:]]
    others = [group.name for group in found if group not in shown]
    if others:
        lines += ["", f"(The other groups of {os.path.basename(path)}, {', '.join(others)}, are for other scripts.)"]
    return "\n".join(lines)


def config_file(argv: list[str], default: str) -> str:
    """The config file a command line reads: the one ``--config_path`` names, else ``default``."""
    return argv[argv.index("--config_path") + 1] if "--config_path" in argv[:-1] else default


def answer_help(path: str = CONFIG_PATH, groups: Optional[tuple[str, ...]] = None,
                short_group: Optional[str] = None) -> None:
    """With ``--help`` or ``-h`` on the command line, print ``usage`` and exit 0. Scripts call this before their
    heavy imports (torch, transformers), so asking for help takes a fraction of a second."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
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
    try:
        with open(path, encoding="utf-8") as stream:
            defaults = yaml.safe_load(stream)
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{path}: no such config file") from None
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


def check_ranges(config: dict[str, Any], path: str) -> None:
    """Every value within the range its comment in ``path`` declares (``Range``), every value of a list; the first
    one outside stops the script: ``--trainer.max_grad_norm -1: expected a number > 0``."""
    values = {f"{group}.{key}": value for group, keys in config.items() for key, value in keys.items()}
    for option in (option for group in documented_options(path) for option in group.options):
        accepted, value = option.range, values.get(option.key)
        if accepted and option.key in values and not accepted.admits(value):
            if isinstance(value, list) and value:  # a list: the first value out of range
                value = next(item for item in value if isinstance(item, list) or not accepted.admits(item))
            shown = f"{value:g}" if isinstance(value, float) else cli_value(value)  # -1 as typed, not -1.0
            raise ConfigError(f"--{option.key} {shown}: expected {accepted}{', at least one' if value == [] else ''}")


def save_config(config: dict[str, Any], output_dir: str) -> str:
    """Write the merged config as ``<output_dir>/run_config.yaml``: ``--config_path`` reruns it exactly."""
    path = os.path.join(output_dir, "run_config.yaml")
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return path


def require_path(option: str, path: str, what: str) -> str:
    """``path`` (the value of ``option``) must exist; otherwise an error naming it, with a close name if any."""
    if not path:
        raise ConfigError(f"{option} is required: {what}")
    if os.path.exists(path):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    siblings = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
    close = difflib.get_close_matches(os.path.basename(os.path.normpath(path)), siblings, n=1, cutoff=0.6)
    hint = f"; did you mean {os.path.join(os.path.dirname(path), close[0])}?" if close else ""
    raise ConfigError(f"{option} {path}: no such file or folder ({what}){hint}")


def require_folder(option: str, path: str, what: str) -> str:
    """``require_path`` for a folder: a file given instead is named as one, with the folder it is in as the fix."""
    require_path(option, path, what)
    if not os.path.isdir(path):
        raise ConfigError(f"{option} {path}: a file, expected a folder ({what}); did you mean "
                          f"{option} {os.path.dirname(path) or '.'}?")
    return path


def require_writable_folder(option: str, path: str, what: str) -> str:
    """A folder a script will write into, refused now if it cannot be made or written (a file in its way, no
    permission, a read-only disk) rather than once the work is done. Nothing is created: the test file goes into
    the nearest folder that exists."""
    if not path:
        raise ConfigError(f"{option} is required: {what}")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{option} {path}: {existing} is a file, expected a folder ({what})")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot write in {existing} ({error.strerror}); choose a folder "
                          "you can write to") from None
    return path


def run_main(main: Callable[[], Any]) -> None:
    """Run a script's ``main`` as a command. A refusal ends it with one line on stderr, ``<script>: <what>``: exit
    code 2 for a command line it cannot run with (``ConfigError``), 1 for input it cannot use (a file, features, a
    checkpoint: ``ValueError`` or ``OSError``, whose messages name the file). Anything else is a bug and keeps
    its traceback."""
    try:
        main()
        return
    except ConfigError as error:
        message, code = error.code, 2
    except (ValueError, OSError) as error:
        message, code = error, 1
    print(f"{os.path.basename(sys.argv[0])}: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)
