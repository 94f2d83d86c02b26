"""Options as their config file documents them: each key's meaning is the comment on its line, ended by the
values it takes in brackets (the range language of ``Range``). ``--help`` prints these comments and
``check_ranges`` enforces the brackets, so an option is explained and bounded in one place."""
from __future__ import annotations

import math
import operator
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from glue_support.exit_codes import ConfigError


def cli_value(value: Any) -> str:
    """A config value written as the command line takes it: strings as they are, anything else as YAML
    (``true``, ``null``, ``3.0e-05`` with the dot YAML 1.1 needs, ``[stdout, tensorboard]``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()


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
