"""What a training script needs around its recipe, none of it about GLUE: the output folder (one run's at a time)
and its disk, the ranks torchrun gives each process and the process group they form, pymarlin's trainer backend
(with AMP) and its TrainerArguments, a TensorBoard folder per run, and handlers for SIGTERM and Ctrl-C.

torch and pymarlin load inside the functions that need them: aml_submit.py (which backend several processes
train with) and benchmark.py (the signal handlers) use this module without paying seconds for them.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import signal
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from glue_support.atomic_write import remove_leftovers
from glue_support.exit_codes import ConfigError
from glue_support.marlin import getlogger
from glue_support.path_checks import require_writable_folder

try:
    import fcntl
except ImportError:  # Windows: output folders are not locked (see _locked)
    fcntl = None

if TYPE_CHECKING:
    import torch

    from glue_support.marlin import (
        DefaultCheckpointerArguments,
        DistributedTrainingArguments,
        TrainerArguments,
        TrainerBackend,
    )

logger = getlogger(__name__)

# What a run writes in its output folder (shell patterns): results, curves, submission files, checkpoints, the model
# and tokenizer under the names save_pretrained gives them, the run's config and its TensorBoard logs. Only these
# are set aside when a run replaces an earlier one: the user's other files in the folder are never touched.
RUN_OUTPUTS = ("results.json", "history.json", "submission", "checkpoints", "config.json", "generation_config.json",
               "model*.safetensors*", "pytorch_model*.bin*", "tokenizer*", "special_tokens_map.json",
               "added_tokens.json", "vocab.*", "merges.txt", "*.model", "run_config.yaml", "logs")
STARTED_ONLY = ("run_config.yaml", "logs")  # written first: alone, a run that ended before any result
LOCK_FILE = ".marlin_glue.lock"  # never removed: a run locking a new file would not exclude one holding the old
ASIDE = ".overwritten."  # + random: the outputs of the run being replaced, until the replacing run completes
MOVING = ".moving"  # the suffix of an ASIDE folder until every output is in it


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes torchrun started; without torchrun, the only process."""

    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> Ranks:
        """torchrun's ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``: read here only, so every part of a run agrees
        on them."""
        return cls(global_rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   world_size=int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files; the other processes only train and validate their shares."""
        return self.global_rank == 0


def multi_process_backend(name: str) -> str:
    """pymarlin's backend of the same kind for several processes: ``sp`` -> ``ddp``, ``sp-amp`` -> ``ddp-amp``."""
    return name if name.startswith("ddp") else "ddp" + name.removeprefix("sp")


def with_process_backend(config: dict[str, Any], ranks: Ranks) -> dict[str, Any]:
    """``config`` with the ``trainer.backend`` this process trains with: under torchrun, pymarlin's DDP backend of
    the kind asked for, so that run_config.yaml records the backend that ran."""
    backend = config["trainer"]["backend"]
    if ranks.world_size == 1:
        if backend.startswith("ddp"):
            raise ConfigError(f"trainer.backend {backend} needs several processes: start train.py with "
                             "torchrun --nproc_per_node N (or use sp)")
        return config
    return {**config, "trainer": {**config["trainer"], "backend": multi_process_backend(backend)}}


def trains_on_gpu(config: dict[str, Any]) -> bool:
    """``trainer.use_gpu`` asks for a GPU and this machine has one (pymarlin falls back to CPU otherwise)."""
    import torch

    return config["trainer"]["use_gpu"] and torch.cuda.is_available()


def distributed_arguments(config: dict[str, Any], ranks: Ranks) -> DistributedTrainingArguments:
    """pymarlin's ranks and process group: ``dist.backend`` for the group, where ``auto`` is NCCL when the processes
    use GPUs and gloo on CPU."""
    from glue_support.marlin import DistributedTrainingArguments

    if ranks.world_size == 1:
        return DistributedTrainingArguments()
    on_gpu = trains_on_gpu(config)
    group_backend = config["dist"]["backend"]
    if group_backend == "auto":
        group_backend = "nccl" if on_gpu else "gloo"
    if group_backend == "nccl" and not on_gpu:
        raise ConfigError("dist.backend nccl needs GPUs; on CPU use gloo (or auto)")
    logger.info(f"Process {ranks.global_rank} of {ranks.world_size}: trainer.backend {config['trainer']['backend']}, "
                f"process group {group_backend}")
    return DistributedTrainingArguments(local_rank=ranks.local_rank, global_rank=ranks.global_rank,
                                        world_size=ranks.world_size, backend=group_backend)


def build_backend(config: dict[str, Any]) -> TrainerBackend:
    """pymarlin's backend for ``trainer.backend``. The AMP ones (``sp-amp``, ``ddp-amp``) compute in ``amp.dtype``:
    on a GPU float16 with loss scaling, or bfloat16; on CPU bfloat16 only (CPUs with AVX512-BF16 or AMX run it
    faster than float32; float16 has no fast CPU path, so on CPU it is switched off with a warning). ``amp.dtype``
    names one of torch's dtypes (config.yaml's range for it)."""
    import torch

    from glue_support.marlin import build_trainer_backend

    name = config["trainer"]["backend"]
    dtype = config["amp"]["dtype"]
    amp = "amp" in name
    on_gpu = trains_on_gpu(config)
    amp_on = amp and (on_gpu or dtype == "bfloat16")
    backend = build_trainer_backend(name, enable_amp=amp_on) if amp else build_trainer_backend(name)
    # pymarlin's constructors take neither setting: the compat fixes added them as attributes (pymarlin_compat 6, 7)
    if name.startswith("ddp"):
        backend.find_unused_parameters = config["dist"]["find_unused_parameters"]
    if amp_on:
        getattr(backend, "trainer_backend", backend).amp_dtype = getattr(torch, dtype)  # DDP wraps the AMP backend
        logger.info(f"AMP: {dtype} autocast on {'GPU' if on_gpu else 'CPU'}"
                    + (" with loss scaling" if dtype == "float16" else ""))
        if not on_gpu and not torch.cpu._is_avx512_bf16_supported():
            logger.warning("This CPU has no AVX512-BF16: bfloat16 autocast is emulated and may be slower "
                           "than float32")
    elif amp:
        logger.warning(f"trainer.backend {name} with amp.dtype float16 needs a GPU: ignored on CPU (training in "
                       "float32); on CPU use --amp.dtype bfloat16")
    return backend


def new_run_folder(parent: str) -> str:
    """``<parent>/<start time>``, suffixed ``-2``, ``-3``, ... if a run started in the same second."""
    stem = os.path.join(parent, time.strftime("%Y%m%d-%H%M%S"))
    path, number = stem, 1
    while os.path.exists(path):
        number += 1
        path = f"{stem}-{number}"
    return path


def trainer_arguments(config: dict[str, Any], output_dir: str, distributed: DistributedTrainingArguments,
                      checkpointer_args: DefaultCheckpointerArguments) -> TrainerArguments:
    """pymarlin's TrainerArguments from the ``trainer``, ``stats`` and ``wrts`` groups, with the process's ranks and
    the checkpointer's arguments. Each run logs to its own ``<output_dir>/logs/<start time>``: pymarlin empties its
    log folder at start, which must not wipe an earlier run's (or the interrupted run's) TensorBoard logs."""
    from glue_support.marlin import StatInitArguments, TrainerArguments, WriterInitArguments
    from glue_support.mlflow_writer import MLflowWriter, in_tracked_run

    writer = dict(config["wrts"])
    writer["tb_log_dir"] = new_run_folder(writer["tb_log_dir"] or os.path.join(output_dir, "logs"))
    writers = [name for name in config["trainer"]["writers"] if name != "mlflow"]
    main_process = distributed.global_rank == 0  # pymarlin writes metrics from rank 0 only
    if main_process and ("mlflow" in config["trainer"]["writers"] or in_tracked_run()):
        writers.append(MLflowWriter())
    return TrainerArguments(
        **{**config["trainer"], "writers": writers},
        checkpointer_args=checkpointer_args,
        distributed_training_args=distributed,
        stats_args=StatInitArguments(**config["stats"]),
        writer_args=WriterInitArguments(**writer),
    )


def run_outputs(output_dir: str) -> list[str]:
    """The names in ``output_dir`` that a run writes there (``RUN_OUTPUTS``), in that order."""
    names = sorted(os.listdir(output_dir))
    return list(dict.fromkeys(name for pattern in RUN_OUTPUTS for name in names if fnmatch.fnmatchcase(name, pattern)))


class OwnedOutputDir:
    """The output folder while this run owns it (``own_output_dir``)."""

    def __init__(self, path: str, replacing: bool):
        self.path = path
        self.replacing = replacing
        self.aside: Optional[str] = None

    def set_aside_earlier(self) -> None:
        """Move the outputs of the run this one replaces into a hidden folder, removed when this run completes.
        Called after the run's checks, before its first write: a refused run leaves them in place. One step even
        if killed: the folder is named ``...moving`` until every output is in it, and a run that finds one finishes
        the move; a killed run's ``.overwritten.*`` folder is removed by the next run."""
        earlier = run_outputs(self.path) if self.replacing else []
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
def own_output_dir(output_dir: str, overwrite: bool, resuming: bool, ranks: Ranks) -> Iterator[OwnedOutputDir]:
    """``output_dir`` for this run alone while the block runs, cleared of what killed runs left there; refused, before
    any work, if another run holds it, if it cannot be written, or if it holds an earlier run's outputs and the run
    neither overwrites (``set_aside_earlier``) nor resumes. A run that fails or is killed leaves its partial outputs
    and, if it replaced a run, that run's outputs set aside: the next run removes those. Under torchrun rank 0 owns
    the folder; the other ranks write nothing there and take no lock (if rank 0 is refused, torchrun stops them)."""
    if not ranks.is_main:
        yield OwnedOutputDir(output_dir, replacing=False)
        return
    # an unwritable folder found now, not after training
    os.makedirs(require_writable_folder("--tmod.output_dir", output_dir, "the run's outputs"), exist_ok=True)
    with _locked(output_dir):
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
def _locked(output_dir: str) -> Iterator[None]:
    """Hold ``output_dir``'s lock while the block runs, or refuse in one line naming the folder and the run holding
    it. An ``flock``: the kernel releases it when its process ends, however it ends, so a killed run leaves nothing
    stuck. Where there is no ``flock`` (Windows, a file system without locks) the run goes on with a warning."""
    with open(os.path.join(output_dir, LOCK_FILE), "a+", encoding="utf-8") as lock:
        try:
            if fcntl is None:
                raise OSError(errno.ENOTSUP, "no fcntl.flock on this platform")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "starting"
            raise ValueError(f"{output_dir} is in use by another run ({holder}): wait for it to end, or choose "
                             "another --tmod.output_dir") from None
        except OSError as error:
            logger.warning(f"{output_dir}: cannot lock it ({error.strerror}): a second run started there "
                           "would not be refused")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        yield


def _remove_leftovers(output_dir: str) -> bool:
    """Remove what killed runs left: atomic_write's temporaries (in the folder, checkpoints/ and submission/) and
    outputs set aside; whether a run was killed while setting them aside."""
    removed = [os.path.join(folder, name) for folder in ("", "checkpoints", "submission")
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
    paths = {name: os.path.join(output_dir, name) for name in run_outputs(output_dir) if name not in STARTED_ONLY}
    found = [name for name, path in paths.items() if not os.path.isdir(path) or os.listdir(path)]
    if found:
        resume = " (--ckpt.resume true continues it)" if "checkpoints" in found else ""
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


@contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` receives SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) while the block runs; the
    previous handlers are back after it, however it ends."""
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)
