"""The one gateway to pymarlin 0.3.6: ``from glue_support.marlin import Trainer``, never ``import pymarlin``.

Each name loads on first use with ``pymarlin_compat``'s fixes already applied, so import order never matters;
the config parser and the logger load without torch, for commands that only parse options.
"""
from __future__ import annotations

from typing import Any

from glue_support import pymarlin_compat

_MODULES = {
    "pymarlin.utils.config_parser.custom_arg_parser": ("CustomArgParser",),
    "pymarlin.utils.logger.logging_utils": ("getlogger",),
    "pymarlin.core.data_interface": ("DataInterface", "DataProcessor"),
    "pymarlin.core.module_interface": ("CallbackInterface", "ModuleInterface"),
    "pymarlin.core.trainer": ("Trainer", "TrainerArguments"),
    "pymarlin.core.trainer_backend": ("TrainerBackend", "build_trainer_backend"),
    "pymarlin.utils.checkpointer.checkpoint_utils": ("Checkpoint", "DefaultCheckpointer",
                                                      "DefaultCheckpointerArguments"),
    "pymarlin.utils.distributed": ("DistributedTrainingArguments", "rank_zero_only"),
    "pymarlin.utils.stats": ("StatInitArguments", "global_stats"),
    "pymarlin.utils.writer.base": ("Writer", "WriterInitArguments"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    """``from glue_support.marlin import <name>``: pymarlin's object, loaded (and fixed) on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}: add pymarlin's {name} to _MODULES")
    value = getattr(pymarlin_compat.load(_WHERE[name]), name)
    globals()[name] = value
    return value
