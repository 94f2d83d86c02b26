"""Make pymarlin 0.3.6 (its last release, 2022) import and train on Python 3.11 and torch 2.x.

``glue_support.marlin`` loads pymarlin through ``load()``, so every fix is in place before pymarlin's own code
runs. Each fix is one function below, applied once; ``tests/test_pymarlin_compat.py`` shows each is needed
(``MARLIN_GLUE_COMPAT_SKIP``). Nothing in site-packages is edited.

Every difference from pymarlin 0.3.6 that remains (the rest is pymarlin's own):
- without azureml-core, ``azureml.core.run.Run`` is a stand-in whose ``get_context()`` raises,
  so the ``aml`` writer turns itself off;
- ``DefaultCheckpointerArguments``, ``StatInitArguments`` and ``WriterInitArguments`` hash by identity;
- a value for a key whose YAML default is null is a YAML scalar, not text: ``3`` -> 3, ``None`` -> None;
- a list value is never ``eval``-ed: it is YAML (``[a, b]``), ``a,b`` or pymarlin's ``a-b``;
  ``-1`` and ``2e-5`` are one number; a list with both separators splits at commas;
- a list value not of the default's type (``range(3)``, ``2.5`` for ints) is refused in one line;
- pymarlin's loggers do not propagate: a line prints once, and root-logger handlers do not see it;
- DDP calls ``torch.cuda.set_device`` only with nccl; on CPU ``device_ids`` and ``output_device`` are None;
- DDP's ``find_unused_parameters`` is a class attribute, True as in pymarlin;
- AMP autocasts with ``torch.amp`` on the run's device, in ``amp_dtype``: float16 (pymarlin's) or bfloat16;
- AMP scales the loss only for float16 on a CUDA device (pymarlin: whenever CUDA is present);
- AMP in bfloat16 autocasts on CPU too, without a scaler; float16 on CPU does nothing, as in pymarlin;
- AMP's ``get_state`` has a ``scaler`` key; ``update_state`` loads it when present;
- the config parser and the logger load without pymarlin's ``__init__`` (so without torch).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import yaml


@contextmanager
def _pymarlin_package_without_init() -> Iterator[None]:
    """Import pymarlin submodules without running ``pymarlin/__init__.py``.

    That ``__init__`` imports ``pymarlin.core.trainer`` (which fails before fix 2), so the modules a fix
    patches are first imported under a bare package object; the real package is imported afterwards and
    reuses them from ``sys.modules``.
    """
    if "pymarlin" in sys.modules:
        yield
        return
    spec = importlib.util.find_spec("pymarlin")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("pymarlin is not installed: run `pip install --no-deps pymarlin==0.3.6`")
    package = types.ModuleType("pymarlin")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["pymarlin"] = package
    try:
        yield
    finally:
        del sys.modules["pymarlin"]


def _import(name: str) -> types.ModuleType:
    with _pymarlin_package_without_init():
        return importlib.import_module(name)


class _NoAzureMLRun:
    """Stand-in for ``azureml.core.run.Run`` when azureml-core (Azure ML SDK v1) is not installed."""

    @classmethod
    def get_context(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "azureml-core (Azure ML SDK v1) is not installed; marlin-glue logs Azure ML metrics with MLflow"
        )


def stub_azureml_run() -> None:
    """Fix 1: ``pymarlin.utils.distributed`` imports ``azureml.core.run.Run`` (the retired Azure ML SDK v1) at module
    top, for AzureML-only helpers and the ``aml`` writer: a stand-in unless the real SDK is importable."""
    try:
        import azureml.core.run  # noqa: F401  (the real SDK v1, if a user has it)
        return
    except ImportError:
        pass
    names = ("azureml", "azureml.core", "azureml.core.run")
    modules = {name: types.ModuleType(name) for name in names}
    modules["azureml"].core = modules["azureml.core"]
    modules["azureml.core"].run = modules["azureml.core.run"]
    modules["azureml.core.run"].Run = _NoAzureMLRun
    for name, module in modules.items():
        sys.modules.setdefault(name, module)


def hashable_trainer_defaults() -> None:
    """Fix 2: Python 3.11 refuses unhashable field defaults (``ValueError: mutable default``), and
    ``TrainerArguments`` has three dataclass instances as defaults: their classes hash by identity, as before 3.11."""
    for module_name, class_name in (
        ("pymarlin.utils.checkpointer.checkpoint_utils", "DefaultCheckpointerArguments"),
        ("pymarlin.utils.stats.basic_stats", "StatInitArguments"),
        ("pymarlin.utils.writer.base", "WriterInitArguments"),
    ):
        cls = getattr(_import(module_name), class_name)
        if cls.__hash__ is None:
            cls.__hash__ = object.__hash__


def _yaml_scalar(text: str) -> Any:
    """Read one command-line value as a YAML scalar (the type a YAML file would have given it)."""
    if text == "None":
        return None
    value = yaml.safe_load(text)
    return value if value is None or isinstance(value, (int, float, bool, str)) else text


def typed_null_overrides() -> None:
    """Fix 3: pymarlin types a ``null`` default as ``str``, so ``--trainer.max_train_steps_per_epoch 3`` arrived as
    ``'3'`` and crashed when compared with an int: such values are read as YAML scalars."""
    parser_class = _import("pymarlin.utils.config_parser.custom_arg_parser").CustomArgParser
    original: Callable[..., None] = parser_class._add_known_arguments_to_parser

    def add_known_argument(self: Any, arg: str, value: Any) -> None:
        if value is None:
            self.parser.add_argument(arg, type=_yaml_scalar, default=None)
        else:
            original(self, arg, value)

    parser_class._add_known_arguments_to_parser = add_known_argument


EXAMPLES = {"int": "3, 3,5 or [3, 5]", "float": "2.0e-5, 2.0e-5,3.0e-5 or [2.0e-5, 3.0e-5]"}  # list overrides


def _is_dashed(text: str) -> bool:
    """pymarlin's ``a-b-c`` list form: a dash between items, where the text is not one number (``-1``, ``2.0e-5``,
    and ``2e-5``, which YAML 1.1 reads as text)."""
    try:
        float(text)
    except ValueError:
        return "-" in text.strip("-")
    return False


def list_overrides_without_eval() -> None:
    """Fix 5: pymarlin ``eval``-s list values (``--trainer.writers stdout`` raised NameError, and any expression
    ran): read them as YAML, ``a,b`` or ``a-b``, and refuse other values in one line (argparse's own message would
    name the converter, ``invalid <lambda> value``)."""
    parser_class = _import("pymarlin.utils.config_parser.custom_arg_parser").CustomArgParser

    def read_list(self: Any, text: Any, eval_type: type = float) -> list[Any]:
        if not isinstance(text, str):
            return list(text)
        separator = "," if "," in text or not _is_dashed(text) else "-"  # pymarlin's own form: a-b-c
        try:
            items = yaml.safe_load(text) if text.strip().startswith("[") else [
                item.strip() for item in text.split(separator) if item.strip()]
            if not isinstance(items, list) or (eval_type is int and any(isinstance(item, float) for item in items)):
                raise ValueError
            return [eval_type(item) for item in items]
        except (TypeError, ValueError, yaml.YAMLError):  # [[1]], [null]; 2.5; [a
            name = eval_type.__name__
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of {name}: give one {name} or several, "
                                             f"as {EXAMPLES.get(name, 'a,b or [a, b]')}") from None

    parser_class._eval_str_list = read_list


def single_log_lines() -> None:
    """Fix 4: every pymarlin logger and its parent carry the same console handler, so each metric line printed
    twice: loggers made by ``getlogger`` no longer propagate."""
    logging_utils = _import("pymarlin.utils.logger.logging_utils")
    original: Callable[..., logging.Logger] = logging_utils.getlogger

    def getlogger(name: str, log_level: str = "INFO") -> logging.Logger:
        logger = original(name, log_level)
        logger.propagate = False
        return logger

    for module in list(sys.modules.values()):
        if vars(module).get("getlogger") is original:  # vars: no module __getattr__ runs
            module.getlogger = getlogger
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("pymarlin") and isinstance(logger, logging.Logger):
            logger.propagate = False


def ddp_on_cpu() -> None:
    """Fix 6: pymarlin's DDP backend assumes CUDA (``torch.cuda.set_device``, ``device_ids=[device]``): on CPU
    with gloo it leaves the device alone. ``find_unused_parameters`` becomes an attribute a caller can turn off."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    backends = _import("pymarlin.core.trainer_backend")

    def setup_distributed_env(self: Any) -> None:
        ranks = self.distributed_training_args
        torch.distributed.init_process_group(backend=ranks.backend, init_method=ranks.init_method,
                                             rank=ranks.global_rank, world_size=ranks.world_size)
        if ranks.backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)

    def init(self: Any, args: Any) -> None:
        self.args = args
        self.distributed_training_args = args.distributed_training_args
        self.setup_distributed_env()
        self.trainer_backend.init(args)
        on_gpu = torch.device(args.device).type == "cuda"
        self.trainer_backend.model = DistributedDataParallel(
            args.model, device_ids=[args.device] if on_gpu else None, output_device=args.device if on_gpu else None,
            find_unused_parameters=self.find_unused_parameters)

    backends.DDPTrainerBackend.find_unused_parameters = True  # pymarlin's own choice; train.py turns it off
    backends.DDPTrainerBackend.setup_distributed_env = setup_distributed_env
    backends.DDPTrainerBackend.init = init


def torch_amp() -> None:
    """Fix 7: pymarlin's AMP backend uses ``torch.cuda.amp`` (a FutureWarning every step in torch 2) and loses
    its loss scale on resume: ``torch.amp`` on the run's device, in ``amp_dtype``, with the scaler checkpointed."""
    import torch

    backends = _import("pymarlin.core.trainer_backend")
    amp_backend = backends.SingleProcessAmp
    single_process = backends.SingleProcess

    def init(self: Any, args: Any) -> None:
        single_process.init(self, args)
        # pymarlin's torch.cuda.amp does nothing without CUDA: float16 (with loss scaling) on a GPU only
        on_gpu = torch.device(args.device).type == "cuda"
        self.autocast_enabled = self.enable_amp and (on_gpu or self.amp_dtype == torch.bfloat16)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=4096,
                                           enabled=self.autocast_enabled and self.amp_dtype == torch.float16)

    def forward(self: Any, batch: Any, stage: Any, global_step: int) -> Any:
        with torch.autocast(torch.device(self.args.device).type, dtype=self.amp_dtype, enabled=self.autocast_enabled):
            return self.model.forward(stage=stage, batch=batch, device=self.args.device, global_step=global_step)

    def get_state(self: Any) -> dict[str, Any]:
        return {**single_process.get_state(self), "scaler": self.scaler.state_dict()}

    def update_state(self: Any, state: Any) -> None:
        single_process.update_state(self, state)
        if state and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    amp_backend.amp_dtype = torch.float16
    amp_backend.init = init
    amp_backend._forward = forward
    amp_backend.get_state = get_state
    amp_backend.update_state = update_state


FIXES: dict[str, Callable[[], None]] = {
    "stub_azureml_run": stub_azureml_run,
    "single_log_lines": single_log_lines,
    "hashable_trainer_defaults": hashable_trainer_defaults,
    "typed_null_overrides": typed_null_overrides,
    "list_overrides_without_eval": list_overrides_without_eval,
    "ddp_on_cpu": ddp_on_cpu,
    "torch_amp": torch_amp,
}
# pymarlin modules that load without the package (and torch), and the fixes that concern them
LIGHT_MODULES = ("pymarlin.utils.config_parser.custom_arg_parser", "pymarlin.utils.logger.logging_utils")
LIGHT_FIXES = ("single_log_lines", "typed_null_overrides", "list_overrides_without_eval")
_applied: set[str] = set()


def _skipped() -> tuple[str, ...]:
    """MARLIN_GLUE_COMPAT_SKIP=fix1,fix2 leaves fixes out: to see a failure again, or to check whether a future
    pymarlin still needs a fix. The tests use it to prove that each one is needed."""
    return tuple(filter(None, os.environ.get("MARLIN_GLUE_COMPAT_SKIP", "").split(",")))


def _apply_fixes(names: tuple[str, ...]) -> None:
    for name in names:
        if name not in _applied and name not in _skipped():
            FIXES[name]()
            _applied.add(name)


def apply() -> None:
    """Apply every fix (each once; those in MARLIN_GLUE_COMPAT_SKIP left out), then import pymarlin itself."""
    _apply_fixes(tuple(FIXES))
    importlib.import_module("pymarlin")
    # Submodules imported before the real package exists are not yet attributes of their parents.
    for name in sorted(module for module in sys.modules if module.startswith("pymarlin.")):
        parent, _, child = name.rpartition(".")
        if not hasattr(sys.modules[parent], child):
            setattr(sys.modules[parent], child, sys.modules[name])


def load(name: str) -> types.ModuleType:
    """The pymarlin module ``name``, fixed. A light module (the config parser, the logger) loads alone while the
    rest of pymarlin has not been needed; any other module first applies every fix and imports the package."""
    if name in LIGHT_MODULES and "pymarlin" not in sys.modules:
        _apply_fixes(LIGHT_FIXES)
        return _import(name)
    apply()
    return importlib.import_module(name)
