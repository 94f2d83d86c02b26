"""Training-state checkpoints a run can resume from exactly, even mid-epoch, and only a run of the same identity.

``StepCheckpointer`` keeps pymarlin's ``DefaultCheckpointer`` interface and ``ckpt`` settings, but names each file by
its optimizer step, writes it atomically with the identity of its run (the model, the data and the settings that
shape training) and loads it with ``weights_only=True``, refusing a checkpoint of another identity
(``check_resume`` does so before the model loads, ``check_save_dir`` refuses to write among another run's).
``CheckpointingTrainer`` is pymarlin's Trainer that also checkpoints every ``ckpt.period_steps`` steps and on SIGTERM
or Ctrl-C (``StopRequest``), validates every ``tmod.eval_steps`` steps, stops early when asked, and stops with
``Diverged`` at a step whose loss, or weights, are not finite. Where training stands in its data is the module's
state (``filegen_dataloaders.DataOrder``); ``rng_state`` captures the random generators in a form ``weights_only``
loading accepts.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import signal
from typing import Any, Callable, Optional

import numpy as np
import torch

from glue_support.atomic_write import atomic_path
from glue_support.exit_codes import ConfigError
from glue_support.marlin import (
    CallbackInterface,
    Checkpoint,
    DefaultCheckpointer,
    DefaultCheckpointerArguments,
    ModuleInterface,
    Trainer,
    TrainerArguments,
    TrainerBackend,
    getlogger,
)
from glue_support.output_folder import CHECKPOINTS

logger = getlogger(__name__)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from, as tensors and plain numbers."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuples(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))


def _tuples(value: Any) -> Any:
    """``random.setstate`` needs the tuples ``getstate`` gave; a saved state may come back with lists."""
    return tuple(_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


def checkpoint_files(folder: str, file_prefix: str, file_ext: str) -> list[str]:
    """The checkpoints in ``folder``, by step, the newest last."""
    pattern = re.compile(rf"{re.escape(file_prefix)}_step(\d+)\.{re.escape(file_ext)}$")
    found = [(int(match.group(1)), name) for name in os.listdir(folder) if (match := pattern.match(name))
             ] if os.path.isdir(folder) else []
    return [os.path.join(folder, name) for _, name in sorted(found)]


def latest_checkpoint(folder: str, file_prefix: str, file_ext: str) -> Optional[str]:
    """The checkpoint of the highest step in ``folder``; None if there is none."""
    found = checkpoint_files(folder, file_prefix, file_ext)
    return found[-1] if found else None


def checkpointer_arguments(ckpt: dict[str, Any], output_dir: str) -> DefaultCheckpointerArguments:
    """pymarlin's checkpointer arguments from config.yaml's ``ckpt`` group (less ``period_steps`` and ``resume``,
    which are this project's). Checkpoints left "" go to ``<output_dir>/checkpoints``; ``ckpt.resume`` reads the
    newest there (or in ``ckpt.load_dir``), and starts from the beginning when there is none."""
    if (ckpt["resume"] or ckpt["load_dir"]) and ckpt["delete_existing_checkpoints"]:
        raise ConfigError("ckpt.resume with ckpt.delete_existing_checkpoints true would delete the checkpoint to "
                         "resume from: leave delete_existing_checkpoints false")
    arguments = {key: value for key, value in ckpt.items() if key not in ("period_steps", "resume")}
    arguments["save_dir"] = arguments["save_dir"] or os.path.join(output_dir, CHECKPOINTS)
    if ckpt["resume"]:
        arguments["load_dir"] = arguments["load_dir"] or arguments["save_dir"]
        if not latest_checkpoint(arguments["load_dir"], arguments["file_prefix"], arguments["file_ext"]):
            logger.info(f"Nothing to resume in {arguments['load_dir']}: starting from the beginning")
            arguments["load_dir"] = ""
    return DefaultCheckpointerArguments(**arguments)


# how a run refused a checkpoint can start afresh instead
START_AFRESH = ("leave out --ckpt.resume and --ckpt.load_dir (with --tmod.overwrite_output_dir true to replace the run "
                "in --tmod.output_dir), or use another --tmod.output_dir")


def resume_path(args: DefaultCheckpointerArguments) -> Optional[str]:
    """The checkpoint a run resumes from: ``ckpt.load_filename`` in ``ckpt.load_dir``, or the newest there; None
    without a ``load_dir`` (``checkpointer_arguments`` leaves it empty when ``ckpt.resume`` finds nothing)."""
    if not args.load_dir:
        return None
    path = (os.path.join(args.load_dir, args.load_filename) if args.load_filename
            else latest_checkpoint(args.load_dir, args.file_prefix, args.file_ext))
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"{path or args.load_dir}: no checkpoint to resume from "
                                f"(expected {args.file_prefix}_step<N>.{args.file_ext})")
    return path


def read_checkpoint(path: str, lazily: bool = False) -> dict[str, Any]:
    """A checkpoint file's content: the fields of pymarlin's ``Checkpoint`` and the ``identity`` of its run (None in
    one written before checkpoints recorded it). ``lazily``: its tensors are mapped, not read (to check its
    identity). A file that is not a checkpoint is refused in one line naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=lazily)
    except Exception as error:  # a damaged or foreign file: name it, whatever torch raised
        raise ValueError(f"{path}: not a loadable marlin-glue checkpoint ({error})") from None
    fields = {field.name for field in dataclasses.fields(Checkpoint)}
    if not isinstance(state, dict) or set(state) - {"identity"} != fields:
        raise ValueError(f"{path}: a PyTorch file, but not a marlin-glue checkpoint (no training state: a "
                         "model's weights?); resume from a file train.py wrote into its checkpoints folder")
    return {"identity": None, **state}


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How identity ``current`` differs from ``saved``, one entry per key that differs (``<key> <old> -> <new>``);
    where both are mappings (a file's data, the model), only their fields that differ."""
    found = []
    for key in dict.fromkeys([*saved, *current]):
        old, new = saved.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            fields = [field for field in dict.fromkeys([*old, *new]) if old.get(field) != new.get(field)]
            found.append(f"{key} " + ", ".join(f"{field} {_shown(old.get(field))} -> {_shown(new.get(field))}"
                                               for field in fields))
        else:
            found.append(f"{key} {_shown(old)} -> {_shown(new)}")
    return found


def _shown(value: Any) -> str:
    """A value of an identity, short: a SHA-256 by its first 12 digits, a mapping as its fields."""
    if isinstance(value, dict):
        return ", ".join(f"{field} {_shown(item)}" for field, item in value.items())
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12]
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def check_identity(path: str, saved: Optional[dict[str, Any]], identity: dict[str, Any]) -> None:
    """Refuse to resume checkpoint ``path`` unless its run's identity (``saved``) is this run's, in one line naming
    each difference and how to start afresh."""
    if saved is None:
        raise ValueError(f"{path}: a checkpoint written before checkpoints recorded their run's model, data and "
                         f"settings, so resuming it cannot be checked; to start afresh, {START_AFRESH}")
    found = differences(saved, identity)
    if found:
        raise ValueError(f"{path}: a checkpoint of another run ({'; '.join(found)}): resume it with the model, data "
                         f"and settings it was written with; to start afresh, {START_AFRESH}")


def check_resume(args: DefaultCheckpointerArguments, identity: dict[str, Any]) -> None:
    """The checkpoint a run would resume from (``resume_path``) is of its identity: checked before the model
    loads, with the checkpoint's tensors mapped, not read."""
    path = resume_path(args)
    if path:
        check_identity(path, read_checkpoint(path, lazily=True)["identity"], identity)


def check_save_dir(args: DefaultCheckpointerArguments, identity: dict[str, Any], option: str) -> None:
    """A run does not write its checkpoints among another run's: ``ckpt.save_dir`` (chosen with ``option``) holds
    none of another identity, unless ``ckpt.delete_existing_checkpoints`` deletes them."""
    if args.delete_existing_checkpoints:
        return
    for path in reversed(checkpoint_files(args.save_dir, args.file_prefix, args.file_ext)):
        saved = read_checkpoint(path, lazily=True)["identity"]
        found = ["written before checkpoints recorded their run"] if saved is None else differences(saved, identity)
        if found:
            raise ValueError(f"{args.save_dir} holds checkpoints of another run ({os.path.basename(path)}: "
                             f"{'; '.join(found)}): this run would write its own among them; choose another "
                             f"{option}, resume that run with its settings, or delete them with "
                             "--ckpt.delete_existing_checkpoints true")


class StepCheckpointer(DefaultCheckpointer):
    """pymarlin's checkpointer, keyed by optimizer step, written atomically with ``identity`` (the identity of the
    run, as ``differences`` compares it), and loaded safely, only into a run of the same identity."""

    def __init__(self, args: DefaultCheckpointerArguments, identity: dict[str, Any]):
        super().__init__(args)
        self.identity = identity

    def due(self, index: int, force: bool = False) -> bool:
        """Whether the end of epoch ``index`` (from 0) is checkpointed: ``ckpt.checkpoint`` is on and the epoch is
        due by ``ckpt.period``, or ``force`` (the end of training)."""
        return self.args.checkpoint and ((index + 1) % self.args.period == 0 or force)

    def save(self, checkpoint_state: Checkpoint, index: int, force: bool = False) -> Optional[str]:
        """pymarlin's end-of-epoch call: saves when the epoch is ``due``."""
        return self.write(checkpoint_state) if self.due(index, force) else None

    def write(self, checkpoint_state: Checkpoint) -> str:
        """Write a checkpoint now, named by its optimizer step; it appears only when complete."""
        step = checkpoint_state.trainer_backend_state["global_step_completed"]
        path = os.path.join(self.args.save_dir, f"{self.args.file_prefix}_step{step:08d}.{self.args.file_ext}")
        with atomic_path(path) as temporary:
            torch.save({**checkpoint_state.__dict__, "identity": self.identity}, temporary)
        logger.info(f"Saved a resumable checkpoint at step {step} to {path}")
        return path

    def load(self) -> Checkpoint:
        """The checkpoint named by ``ckpt.load_dir`` (and ``ckpt.load_filename``), if of this run's identity; or an
        empty one."""
        path = resume_path(self.args)
        if path is None:
            return Checkpoint()
        state = read_checkpoint(path)
        check_identity(path, state.pop("identity"), self.identity)
        logger.info(f"Resuming from {path} (step {state['trainer_backend_state']['global_step_completed']})")
        return Checkpoint(**state)


class StopRequest:
    """SIGTERM (a scheduler's preemption) or Ctrl-C while training: the current optimizer step finishes, then a
    resumable checkpoint is written and the run exits non-zero; a second signal stops at once. ``handle`` is the
    signal handler (``runtime.on_stop_signals``)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        logger.warning(f"{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

    def agreed(self, device: torch.device) -> Optional[int]:
        """The signal that stops training after this step, if any. Under DDP a stop asked of any process stops
        them all: one that went on alone would wait forever for the others at its next step."""
        if torch.distributed.is_initialized():
            stop = torch.tensor([self.signal or 0], device=device)
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            self.signal = int(stop.item()) or None
        return self.signal


class Diverged(Exception):
    """Training diverged at optimizer step ``step``: its ``loss`` (the mean over the processes) is not finite, or,
    with ``weights``, the weights after it are not."""

    def __init__(self, step: int, loss: float, weights: bool):
        super().__init__(f"training diverged at step {step}")
        self.step, self.loss, self.weights = step, loss, weights


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every weight of ``module`` is finite: one pass over them, one synchronisation with the device."""
    return bool(torch.stack([parameter.isfinite().all() for parameter in module.parameters()]).all())


class _StopEarly(Exception):
    """Out of pymarlin's epoch loop: training ends early (``stop_early()`` after a validation)."""


class CheckpointingTrainer(Trainer):
    """pymarlin's Trainer, also checkpointing between epochs: after every ``period_steps`` optimizer steps (None:
    only at epochs' ends), and after the step during which ``stop`` was requested, which then ends the run. It
    validates after each epoch and, with ``eval_steps``, after every ``eval_steps`` optimizer steps too (once at
    a step that is both); after a validation, ``stop_early()`` true ends training as its last epoch would. A step
    whose loss is not finite raises ``Diverged`` at once, as do weights that are not, found before a validation or a
    checkpoint: no number and no state of a diverged model is recorded. Under DDP every process stops together.

    pymarlin's backends report each optimizer step to the callback the Trainer hands them, which is the module
    itself in pymarlin; here it is ``_ModuleThenTrainer``, so the module's hooks run first, then this trainer's."""

    def __init__(self, module: ModuleInterface, args: TrainerArguments, trainer_backend: TrainerBackend,
                 checkpointer: StepCheckpointer, period_steps: Optional[int], stop: StopRequest,
                 eval_steps: Optional[int] = None, stop_early: Callable[[], bool] = lambda: False):
        super().__init__(module=module, args=args, trainer_backend=trainer_backend, checkpointer=checkpointer)
        # set after pymarlin's __init__, which logs every attribute the Trainer has by then as a hyperparameter
        self.period_steps = period_steps
        self.stop = stop
        self.eval_steps = eval_steps
        self.stop_early = stop_early
        # the optimizer step last validated at, checkpointed: a resumed epoch that ends at a step validated
        # before the checkpoint does not validate it again
        self.validated_at: Optional[int] = (self.checkpointed_states.trainer_state or {}).get("validated_at")
        # the optimizer step of the last epoch-end checkpoint this process wrote: pymarlin's end-of-training call
        # right after it would write the same state again
        self.epoch_checkpoint_at: Optional[int] = None
        self.step_loss: Optional[float] = None  # the loss of the last optimizer step this process took (None: none)

    def train(self) -> None:
        """pymarlin's, ended early when ``stop_early()`` after a validation: then the final checkpoint, the saved
        model state and the module's ``on_end_train``, as after pymarlin's last epoch."""
        try:
            if self.stop_early():  # resumed from the final checkpoint of a run that had stopped early
                raise _StopEarly
            super().train()
        except _StopEarly:
            self.logger.info(f"Stopping early after step {self.global_steps_finished}")
            self.save_checkpoint(force=True)
            self.save_model_checkpoint()
            self.module.on_end_train(self.global_steps_finished)
            self.stats.log_long_stats(self.global_steps_finished)

    def validate(self) -> Optional[list[torch.Tensor]]:
        """pymarlin's, unless this step was validated already (mid-epoch, at the epoch's last step); ``_StopEarly``
        after it when ``stop_early()``."""
        if self.validated_at == self.global_steps_finished:
            return None
        if self.step_loss is not None:  # training, not validating a given model
            self.check_weights()
        outputs = super().validate()
        self.validated_at = self.global_steps_finished
        if self.stop_early():
            raise _StopEarly
        return outputs

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "validated_at": self.validated_at}

    def train_epoch(self) -> list[torch.Tensor]:
        dataloader = self.module.get_train_dataloader(batch_size=self.train_step_batch_size, sampler=self.train_sampler)
        return self.trainer_backend.train_dl(dataloader, _ModuleThenTrainer(self.module, self.after_optimizer_step))

    def after_optimizer_step(self, global_step: int, losses: torch.Tensor) -> None:
        """After optimizer step ``global_step`` (``losses``: its micro-batches' on this process): stop if it diverged,
        validate, stop at a signal, checkpoint, as due."""
        self.step_loss = self.agreed_loss(losses)
        if not math.isfinite(self.step_loss):
            raise Diverged(global_step, self.step_loss, weights=False)
        # validation first: a checkpoint of this step then holds what it found (the best model so far)
        if self.eval_steps and global_step % self.eval_steps == 0:
            self.validate()
            self.module.train()  # back from validation's eval mode: dropout on for the rest of the epoch
        stop = self.stop.agreed(self.device)
        if stop is not None:
            path = self.write_checkpoint()
            raise SystemExit(f"Stopped by {signal.Signals(stop).name} after step {global_step}; "
                             f"resume with --ckpt.resume true (checkpoint {path})")
        if self.period_steps and global_step % self.period_steps == 0:
            self.write_checkpoint()

    @staticmethod
    def agreed_loss(losses: torch.Tensor) -> float:
        """A step's loss: the mean of its micro-batches' over every process under DDP, so that a loss that is not
        finite on any process stops them all (one that went on alone would wait forever for the others)."""
        loss = losses.detach().float().mean()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss)
            loss /= torch.distributed.get_world_size()
        return loss.item()

    def check_weights(self) -> None:
        """``Diverged`` if a weight is not finite (after the last step, whose loss was). The same on every process:
        DDP keeps their weights equal."""
        if not weights_finite(self.module):
            raise Diverged(self.global_steps_finished, self.step_loss, weights=True)

    def write_checkpoint(self) -> str:
        """The whole training state now, as the main process writes it; its path ("" on the other processes)."""
        self.check_weights()
        if not self.is_main_process:
            return ""
        return self.checkpointer.write(Checkpoint(
            module_interface_state=self.module.get_state(), trainer_state=self.get_state(),
            trainer_backend_state=self.trainer_backend.get_state()))

    def save_checkpoint(self, force: bool = False) -> None:
        """pymarlin's end-of-epoch checkpoint, unless the epoch ended inside a gradient accumulation: its pending
        gradients are not part of a checkpoint, so the next optimizer step is the first consistent point. With
        ``force`` (the end of training), none where the last epoch's was just written."""
        if force and self.epoch_checkpoint_at == self.global_steps_finished:
            return  # the end of training, right after the last epoch's checkpoint of this very state
        if self.trainer_backend.get_batches_completed() % self.gradient_accumulation == 0:
            super().save_checkpoint(force)
            if self.checkpointer.due(self.last_epoch, force):
                self.epoch_checkpoint_at = self.global_steps_finished
        elif self.is_main_process and self.checkpointer.due(self.last_epoch, force):
            logger.info("Epoch ended inside a gradient accumulation: no checkpoint until the next optimizer step")


class _ModuleThenTrainer(CallbackInterface):
    """The callback pymarlin's backends call while training an epoch: the module's hooks, then ``after_step``
    after each optimizer step, with the step's losses."""

    def __init__(self, module: ModuleInterface, after_step: Callable[[int, torch.Tensor], None]):
        self.module = module
        self.after_step = after_step

    def on_end_backward(self, global_step: int, loss_tensor: torch.Tensor) -> None:
        self.module.on_end_backward(global_step, loss_tensor)

    def on_end_train_step(self, global_step: int, *train_step_collated_outputs: torch.Tensor) -> None:
        self.module.on_end_train_step(global_step, *train_step_collated_outputs)
        self.after_step(global_step, train_step_collated_outputs[0])
