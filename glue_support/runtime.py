"""What a training process runs with, none of it about GLUE: the ranks torchrun gives it and the process group they
form, pymarlin's trainer backend (with AMP) and its TrainerArguments, a TensorBoard folder per run, and handlers for
SIGTERM and Ctrl-C. torch and pymarlin load inside the functions that need them, so aml_submit.py and benchmark.py
use this module without importing them.
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from glue_support.exit_codes import ConfigError
from glue_support.marlin import getlogger

if TYPE_CHECKING:
    from glue_support.marlin import (
        DefaultCheckpointerArguments,
        DistributedTrainingArguments,
        TrainerArguments,
        TrainerBackend,
    )

logger = getlogger(__name__)


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
