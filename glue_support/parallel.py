"""Several runs at once, each with its share of the machine: ``benchmark.py --parallel N``.

A share is what one run adds to its environment: its own GPUs (``CUDA_VISIBLE_DEVICES``), or on CPU
``cores / N`` threads (bench/RESULTS.md (i)). ``--parallel 1`` adds nothing.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Generic, Mapping, TypeVar

# the thread pools torch's CPU kernels read at start: OpenMP's (torch.get_num_threads()) and MKL's
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPUs a child may be given: those CUDA_VISIBLE_DEVICES names, else every device torch counts."""
    named = environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [device for device in named.split(",") if device.strip()]
    import torch  # only here: the other commands of benchmark.py load no torch

    return [str(index) for index in range(torch.cuda.device_count())]


def auto_parallel(processes_per_run: int, gpus: list[str], cores: int) -> int:
    """``--parallel 0``: the runs at once a machine gets by default. On GPUs one run per ``processes_per_run``
    devices, all of them busy; on CPU two runs wherever each process can have a core of its own, else one
    (bench/RESULTS.md (i))."""
    if gpus:
        return max(1, len(gpus) // processes_per_run)
    return 2 if cores >= 2 * processes_per_run else 1


def shares(parallel: int, processes_per_run: int, gpus: list[str], cores: int,
           option: str = "--bench.parallel") -> list[dict[str, str]]:
    """What each of ``parallel`` concurrent runs adds to the environment, one dict per run slot: with ``gpus``
    (``visible_gpus``) its devices, else its threads of ``cores``. ValueError, naming ``option``, where the
    machine has too few of them."""
    if parallel == 1:
        return [{}]
    if gpus:
        needed = parallel * processes_per_run
        if needed > len(gpus):
            raise ValueError(f"{option} {parallel}: {parallel} runs of {processes_per_run} GPU(s) need {needed} "
                             f"GPUs, and {len(gpus)} are visible ({','.join(gpus)}): lower {option}")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[slot * processes_per_run:(slot + 1) * processes_per_run])}
                for slot in range(parallel)]
    threads = cores // (parallel * processes_per_run)
    if threads < 1:
        raise ValueError(f"{option} {parallel}: {parallel} runs of {processes_per_run} process(es) need "
                         f"{parallel * processes_per_run} cores, and this process may use {cores}: lower {option}")
    return [dict.fromkeys(THREAD_VARIABLES, str(threads)) for _ in range(parallel)]


def describe(share: dict[str, str]) -> str:
    """A share as the log names it: ``GPU 1``, ``1 thread``; "" for the whole machine."""
    if "CUDA_VISIBLE_DEVICES" in share:
        return f"GPU {share['CUDA_VISIBLE_DEVICES']}"
    if THREAD_VARIABLES[0] in share:
        threads = int(share[THREAD_VARIABLES[0]])
        return f"{threads} thread{'s' if threads > 1 else ''}"
    return ""


Key = TypeVar("Key")


@dataclass
class Child(Generic[Key]):
    key: Key
    process: subprocess.Popen
    share: dict[str, str]
    started: float  # time.perf_counter() at its start


class ProcessPool(Generic[Key]):
    """Child processes, each started with a free share's environment, which is free again once it has exited.
    Each child runs in its own session: a Ctrl-C in the terminal reaches the parent only, which decides what the
    children get (``signal_all``)."""

    def __init__(self, shares: list[dict[str, str]], poll_s: float = 0.2) -> None:
        self.free = list(shares)
        self.running: list[Child[Key]] = []
        self.poll_s = poll_s

    def has_room(self) -> bool:
        return bool(self.free)

    def start(self, key: Key, command: list[str], log, cwd: str) -> Child[Key]:
        """Start ``command`` with its output into the open file ``log``; needs ``has_room()``."""
        share = self.free.pop(0)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **share}, start_new_session=True)
        child = Child(key, process, share, time.perf_counter())
        self.running.append(child)
        return child

    def wait_any(self) -> list[tuple[Child[Key], int]]:
        """Block until at least one child has exited; those that have, with their exit codes (their shares are
        free again). [] when none runs."""
        while self.running:
            finished = [(child, code) for child in self.running if (code := child.process.poll()) is not None]
            if finished:
                for child, _ in finished:
                    self.running.remove(child)
                    self.free.append(child.share)
                return finished
            time.sleep(self.poll_s)
        return []

    def signal_all(self, signum: int) -> None:
        """Pass ``signum`` to every running child (train.py then finishes its step and writes a checkpoint)."""
        for child in self.running:
            if child.process.poll() is None:
                child.process.send_signal(signum)
