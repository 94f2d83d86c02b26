"""Training-state checkpoints a run can resume from exactly, even mid-epoch.

pymarlin's ``DefaultCheckpointer`` saves once per epoch, names files by epoch, writes in place (a kill during
the write leaves a truncated file that resuming then picks) and loads with ``torch.load``'s defaults.
``StepCheckpointer`` keeps pymarlin's interface and settings (``ckpt`` in config.yaml) but names each file by
its optimizer step (``marlin_glue_step00000120.pt``), writes it atomically, can be asked for a checkpoint at
any optimizer step (``ckpt.period_steps``, or on SIGTERM), and loads with ``weights_only=True``, so a
checkpoint from elsewhere cannot run code.

What makes a mid-epoch resume exact is in the module's state (``train.Recipe.get_state``): the epoch, the
batches it has consumed, and the random-number state at the start of the epoch (which fixes the data order)
and at the checkpoint (which fixes dropout from there on). ``rng_state``/``set_rng_state`` capture and restore
those generators in a form ``weights_only`` loading accepts.
"""
from __future__ import annotations

import os
import random
import re
from typing import Any, Optional

import numpy as np
import torch

from glue_support.marlin import Checkpoint, DefaultCheckpointer, getlogger

from glue_support.atomic_write import atomic_path

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


class StepCheckpointer(DefaultCheckpointer):
    """pymarlin's checkpointer, keyed by optimizer step, written atomically and loaded safely."""

    gradient_accumulation = 1  # micro-batches per optimizer step; train.py sets it from the Trainer

    def save(self, checkpoint_state: Checkpoint, index: int, force: bool = False) -> Optional[str]:
        """pymarlin's end-of-epoch call: saves when ``ckpt.checkpoint`` is on and the epoch is due, unless the epoch
        ended inside a gradient accumulation (its pending gradients are not part of a checkpoint; the next step
        boundary is a consistent point)."""
        if not (self.args.checkpoint and ((index + 1) % self.args.period == 0 or force)):
            return None
        if checkpoint_state.trainer_backend_state["batches_completed"] % self.gradient_accumulation:
            logger.info("Epoch ended inside a gradient accumulation: no checkpoint until the next optimizer step")
            return None
        return self.write(checkpoint_state)

    def write(self, checkpoint_state: Checkpoint) -> str:
        """Write a checkpoint now, named by its optimizer step; it appears only when complete."""
        step = checkpoint_state.trainer_backend_state["global_step_completed"]
        path = os.path.join(self.args.save_dir, f"{self.args.file_prefix}_step{step:08d}.{self.args.file_ext}")
        with atomic_path(path) as temporary:
            torch.save(checkpoint_state.__dict__, temporary)
        logger.info(f"Saved a resumable checkpoint at step {step} to {path}")
        return path

    def latest(self, folder: str) -> Optional[str]:
        """The checkpoint of the highest step in ``folder``; None if there is none."""
        pattern = re.compile(rf"{re.escape(self.args.file_prefix)}_step(\d+)\.{re.escape(self.args.file_ext)}$")
        found = [(int(match.group(1)), name) for name in os.listdir(folder) if (match := pattern.match(name))
                 ] if os.path.isdir(folder) else []
        return os.path.join(folder, max(found)[1]) if found else None

    def load(self) -> Checkpoint:
        """The checkpoint named by ``ckpt.load_dir`` (and ``ckpt.load_filename``), or an empty one."""
        if not self.args.load_dir:
            return Checkpoint()
        path = (os.path.join(self.args.load_dir, self.args.load_filename) if self.args.load_filename
                else self.latest(self.args.load_dir))
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"{path or self.args.load_dir}: no checkpoint to resume from "
                                    f"(expected {self.args.file_prefix}_step<N>.{self.args.file_ext})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged or foreign file: name it, whatever torch raised
            raise ValueError(f"{path}: not a loadable marlin-glue checkpoint ({error})") from None
        logger.info(f"Resuming from {path} (step {state['trainer_backend_state']['global_step_completed']})")
        return Checkpoint(**state)
