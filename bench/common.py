"""Shared helpers of the bench scripts: paths, child processes that report JSON, medians, machine facts."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
GLUE = os.environ.get("GLUE_DIR", "/work/shared/glue_data")
PYTHON = sys.executable
# train.py options for bfloat16 autocast (the bench scripts' bf16 variants)
OURS_BF16 = ["--trainer.backend", "sp-amp", "--amp.dtype", "bfloat16"]
MARK = "BENCH_RESULT "


def setup_path() -> None:
    """Make the project's modules (data, train, embedded_model, ...) importable."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def model_path() -> str:
    setup_path()
    from glue_support import embedded_model
    return embedded_model.resolve(embedded_model.DEFAULT_MODEL)


def report(result: dict[str, Any]) -> None:
    """Called in a child: hand the measurement back to the parent."""
    print(MARK + json.dumps(result), flush=True)


def run_child(args: list[str], timeout: float = 3600, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python <args>`` in a fresh process (fresh threads, no forked tokenizer state); return what it reported."""
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    results = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not results:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise RuntimeError(f"child {' '.join(args)} failed (exit {proc.returncode})")
    return {**results[-1], "process_wall_s": wall}


def run_logged(command: list[str], log_path: str, env: dict[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run ``command`` (from the repository) with its output appended to ``log_path``, timed as a whole process;
    return the last result it reported (``report``), if any, with ``process_wall_s``. For runs too long to hold
    their output in memory, and whose log is worth keeping; a failure raises with the log's end."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    # what an earlier command appended to the same log is not this one's result
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        start = time.perf_counter()
        returncode = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                    env={**os.environ, **(env or {})}).returncode
        wall = time.perf_counter() - start
    with open(log_path, "rb") as log:
        log.seek(offset)
        lines = log.read().decode("utf-8", errors="replace").splitlines()
    if returncode != 0:
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"{command[1]} failed (exit {returncode}); the end of {log_path}:\n{tail}")
    results = [json.loads(line[len(MARK):]) for line in lines if line.startswith(MARK)]
    return {**(results[-1] if results else {}), "process_wall_s": wall}


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as stream:
            cpu = next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as stream:
            mem = int(next(line.split()[1] for line in stream if line.startswith("MemTotal"))) / 2 ** 20
    except (OSError, StopIteration):
        mem = float("nan")
    import torch
    import transformers
    versions = f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), " \
               f"transformers {transformers.__version__}"
    try:
        import datasets
        versions += f", datasets {datasets.__version__}"
    except ImportError:
        pass
    try:
        import tokenizers
        versions += f", tokenizers {tokenizers.__version__}"
    except ImportError:
        pass
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.1f} GiB RAM; {versions}; "
            f"load average at start {load[0]:.2f}")


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
