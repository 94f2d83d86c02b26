"""A run's output folder: owned by one run at a time (an ``flock``), refused if it holds an earlier run's outputs
unless the run overwrites or resumes, cleared of what killed runs left, and checked for the disk space the run
needs, all before any work. A run's checkpoint folder is owned by one run at a time too, with the same lock."""
from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional

from glue_support.atomic_write import remove_leftovers
from glue_support.marlin import getlogger
from glue_support.path_checks import require_writable_folder

try:
    import fcntl
except ImportError:  # Windows: output folders are not locked (see locked)
    fcntl = None

if TYPE_CHECKING:
    import torch

    from glue_support.marlin import TrainerArguments

logger = getlogger(__name__)
# What a run writes in its output folder (shell patterns): results, curves, submission files, checkpoints, the model
# and tokenizer under the names save_pretrained gives them with its card, the run's config and its TensorBoard logs.
# Only these are set aside when a run replaces an earlier one: the user's other files in the folder are never touched.
CHECKPOINTS = "checkpoints"  # the run's checkpoint folder, unless --ckpt.save_dir names another
RUN_OUTPUTS = ("results.json", "history.json", "dev_predictions.json", "submission", CHECKPOINTS, "config.json",
               "generation_config.json", "model*.safetensors*", "pytorch_model*.bin*", "tokenizer*",
               "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model", "README.md",
               "run_config.yaml", "logs")
STARTED_ONLY = ("run_config.yaml", "logs")  # written first: alone, a run that ended before any result
LOCK_FILE = ".marlin_glue.lock"  # never removed: a run locking a new file would not exclude one holding the old
ASIDE = ".overwritten."  # + random: the outputs of the run being replaced, until the replacing run completes
MOVING = ".moving"  # the suffix of an ASIDE folder until every output is in it


def outputs_in(output_dir: str) -> list[str]:
    """The names in ``output_dir`` that a run writes there (``RUN_OUTPUTS``), in that order."""
    names = sorted(os.listdir(output_dir))
    return list(dict.fromkeys(name for pattern in RUN_OUTPUTS for name in names if fnmatch.fnmatchcase(name, pattern)))


class OwnedOutputDir:
    """The output folder while this run owns it (``own_output_dir``)."""

    def __init__(self, path: str, replacing: bool):
        self.path = path
        self.replacing = replacing
        self.aside: Optional[str] = None

    def sets_aside(self, path: str) -> bool:
        """Whether ``path`` is one of the earlier run's outputs, which ``set_aside_earlier`` will move away."""
        return self.replacing and any(os.path.realpath(path) == os.path.realpath(os.path.join(self.path, name))
                                      for name in outputs_in(self.path))

    def set_aside_earlier(self) -> None:
        """Move the outputs of the run this one replaces into a hidden folder, removed when this run completes.
        Called after the run's checks, before its first write: a refused run leaves them in place. One step even
        if killed: the folder is named ``...moving`` until every output is in it, and a run that finds one finishes
        the move; a killed run's ``.overwritten.*`` folder is removed by the next run."""
        earlier = outputs_in(self.path) if self.replacing else []
        self.replacing = False  # once: what the folder holds from now on is this run's
        if not earlier:
            return
        moving = tempfile.mkdtemp(prefix=ASIDE, suffix=MOVING, dir=self.path)
        for name in earlier:
            os.replace(os.path.join(self.path, name), os.path.join(moving, name))
        self.aside = moving.removesuffix(MOVING)
        os.replace(moving, self.aside)
        logger.info(f"{self.path}: the earlier run's outputs ({', '.join(earlier)}) are set aside in {self.aside}, "
                    "removed when this run completes")


@contextmanager
def own_output_dir(output_dir: str, overwrite: bool, resuming: bool, is_main: bool) -> Iterator[OwnedOutputDir]:
    """``output_dir`` for this run alone while the block runs, cleared of what killed runs left there; refused, before
    any work, if another run holds it, if it cannot be written, or if it holds an earlier run's outputs and the run
    neither overwrites (``set_aside_earlier``) nor resumes. A run that fails or is killed leaves its partial outputs
    and, if it replaced a run, that run's outputs set aside: the next run removes those. Under torchrun rank 0 owns
    the folder; the other ranks write nothing there and take no lock (if rank 0 is refused, torchrun stops them)."""
    if not is_main:
        yield OwnedOutputDir(output_dir, replacing=False)
        return
    # an unwritable folder found now, not after training
    os.makedirs(require_writable_folder("--tmod.output_dir", output_dir, "the run's outputs"), exist_ok=True)
    with locked(output_dir, "--tmod.output_dir"):
        interrupted = _remove_leftovers(output_dir)
        if not (overwrite or resuming or interrupted):
            _refuse_earlier_outputs(output_dir)
        owned = OwnedOutputDir(output_dir, replacing=interrupted or (overwrite and not resuming))
        if interrupted:  # the earlier outputs were already being replaced: finish that before the run reads any
            owned.set_aside_earlier()
        yield owned
        if owned.aside:
            shutil.rmtree(owned.aside)


@contextmanager
def own_checkpoint_dir(save_dir: str, output_dir: str, is_main: bool) -> Iterator[None]:
    """``save_dir`` (``ckpt.save_dir``) for this run's checkpoints alone while the block runs: refused, before any
    work, if another run holds it. Its lock is the output folder's: a folder named ``checkpoints`` is locked by the
    folder it is in (whose run's checkpoints it holds by default), any other by itself; where that is this run's
    output folder, it is held already. Under torchrun rank 0 takes it, as ``own_output_dir``."""
    folder = os.path.abspath(save_dir)
    lock_folder = os.path.dirname(folder) if os.path.basename(folder) == CHECKPOINTS else folder
    if not is_main or os.path.realpath(lock_folder) == os.path.realpath(output_dir):
        yield
        return
    require_writable_folder("--ckpt.save_dir", save_dir, "the run's checkpoints")
    os.makedirs(lock_folder, exist_ok=True)
    with locked(lock_folder, "--ckpt.save_dir", save_dir):
        yield


@contextmanager
def locked(folder: str, option: str, named: Optional[str] = None) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs, or refuse in one line naming the folder (``named``, by default
    ``folder``: the value of ``option``) and the run holding it. An ``flock``: the kernel releases it when its
    process ends, however it ends, so a killed run leaves nothing stuck. Where there is no ``flock`` (Windows, a file
    system without locks) the run goes on with a warning."""
    named = named or folder
    with open(os.path.join(folder, LOCK_FILE), "a+", encoding="utf-8") as lock:
        try:
            if fcntl is None:
                raise OSError(errno.ENOTSUP, "no fcntl.flock on this platform")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "starting"
            raise ValueError(f"{named} is in use by another run ({holder}): wait for it to end, or choose "
                             f"another {option}") from None
        except OSError as error:
            logger.warning(f"{named}: cannot lock it ({error.strerror}): a second run started there "
                           "would not be refused")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        yield


def _remove_leftovers(output_dir: str) -> bool:
    """Remove what killed runs left: atomic_write's temporaries (in the folder, checkpoints/ and submission/) and
    outputs set aside; whether a run was killed while setting them aside."""
    removed = [os.path.join(folder, name) for folder in ("", CHECKPOINTS, "submission")
               for name in remove_leftovers(os.path.join(output_dir, folder))]
    asides = sorted(name for name in os.listdir(output_dir)
                    if name.startswith(ASIDE) and os.path.isdir(os.path.join(output_dir, name)))
    for name in asides:
        shutil.rmtree(os.path.join(output_dir, name))
    if removed or asides:
        logger.info(f"{output_dir}: removed what killed runs left there ({', '.join(removed + asides)})")
    return any(name.endswith(MOVING) for name in asides)


def _refuse_earlier_outputs(output_dir: str) -> None:
    """A new run into a folder with an earlier run's results, model or checkpoints would mix the two (an empty
    checkpoints/ or submission/ is a run killed before writing there)."""
    paths = {name: os.path.join(output_dir, name) for name in outputs_in(output_dir) if name not in STARTED_ONLY}
    found = [name for name, path in paths.items() if not os.path.isdir(path) or os.listdir(path)]
    if found:
        resume = " (--ckpt.resume true continues it)" if CHECKPOINTS in found else ""
        raise ValueError(f"{output_dir} already holds a run's outputs ({', '.join(found)}): choose another "
                         f"--tmod.output_dir, or pass --tmod.overwrite_output_dir true to replace them{resume}")


def checkpoints_written(trainer_args: TrainerArguments, period_steps: Optional[int], total_steps: int) -> int:
    """How many training-state checkpoints a run leaves in its save_dir: with ``ckpt.checkpoint``, one every
    ``ckpt.period`` epochs and the final one; one every ``ckpt.period_steps`` optimizer steps. None of them is
    deleted during the run (``delete_existing_checkpoints`` empties the folder only when the run starts)."""
    ckpt = trainer_args.checkpointer_args
    per_epoch = trainer_args.epochs // max(1, ckpt.period) + 1 if ckpt.checkpoint else 0
    return per_epoch + (total_steps // period_steps if period_steps else 0)


def check_free_space(output_dir: str, model: torch.nn.Module, checkpoints: int, keep_best: bool) -> None:
    """Enough disk for the fine-tuned model and ``checkpoints`` training states (each: the weights, AdamW's two
    moments and, with ``keep_best``, the best weights), checked before training instead of failing at its end."""
    size = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    needed = size * (1 + (3 + keep_best) * checkpoints) + 2 ** 26  # + 64 MiB for tokenizer, logs and results
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise ValueError(f"{output_dir}: {free / 2 ** 20:.0f} MiB free on its disk; the fine-tuned model"
                         f"{f' and {checkpoints} checkpoints' if checkpoints else ''} need about "
                         f"{needed / 2 ** 20:.0f} MiB: free some space, or choose another --tmod.output_dir")
