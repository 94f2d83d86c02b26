"""(i) The wall time of one small grid with ``benchmark.py --parallel 1`` and ``--parallel N``, sides interleaved.

    python bench/parallel.py                       # RTE, 2 learning rates x 2 seeds, 600 train examples, 2 epochs
    python bench/parallel.py --parallel 2 3 --repeats 2 --max_train_examples 600 --epochs 2

Each side is one whole ``benchmark.py`` process (features, the runs, the scoreboard) into a fresh output folder,
so the two measure exactly what a user waits for; the sides alternate, repeat after repeat, so a change in the
machine's load falls on both. The grid's dev scores are printed per side: the same runs with other thread counts
may differ in the last digits (a thread count changes the order of float sums), not more.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import common


def grid_command(args: argparse.Namespace, parallel: int, output: str) -> list[str]:
    lrs = ",".join(args.lrs)
    return [common.PYTHON, os.path.join(common.ROOT, "benchmark.py"), "--tasks", args.task, "--data_dir",
            args.data_dir, "--seeds", str(args.seeds), "--output_dir", output, "--parallel", str(parallel),
            f"--{args.hf_name}.max_lr", lrs, f"--{args.hf_name}.epochs", str(args.epochs),
            "--max_train_examples", str(args.max_train_examples)]


def scores(output: str) -> dict[str, list[float]]:
    """Each cell's dev scores over its seeds, from the scoreboard's results.json."""
    with open(os.path.join(output, "results.json"), encoding="utf-8") as stream:
        summary = json.load(stream)
    return {cell["name"]: [round(run["score"], 2) for run in cell["runs"]]
            for entry in summary["tasks"].values() for cell in entry["cells"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RTE")
    parser.add_argument("--data_dir", default=common.GLUE,
                        help="GLUE files, one folder per task (default: %(default)s)")
    parser.add_argument("--lrs", nargs="+", default=["2.0e-5", "5.0e-5"], help="the grid's learning rates")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_train_examples", type=int, default=600, help="0 = the whole train.tsv")
    parser.add_argument("--parallel", type=int, nargs="+", default=[2], help="the values set against --parallel 1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--logs", default=os.path.join(common.ROOT, "bench", "logs", "parallel"),
                        help="one log per side and repeat (default: %(default)s)")
    args = parser.parse_args()
    common.setup_path()
    from glue_processors import get_task

    args.hf_name = get_task(args.task).hf_name
    print(f"machine: {common.machine()}", flush=True)
    sides = [1, *args.parallel]
    walls: dict[int, list[float]] = {side: [] for side in sides}
    grids: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_parallel_") as workdir:
        for repeat in range(args.repeats):
            for side in sides:
                output = os.path.join(workdir, f"parallel{side}")
                shutil.rmtree(output, ignore_errors=True)  # every repeat from nothing: features and runs
                command = grid_command(args, side, output)
                log = os.path.join(args.logs, f"parallel{side}_repeat{repeat + 1}.txt")
                if os.path.exists(log):
                    os.remove(log)
                wall = common.run_logged(command, log)["process_wall_s"]
                walls[side].append(wall)
                grids[side] = scores(output)
                print(f"repeat {repeat + 1}, --parallel {side}: {wall:.1f} s ({log})", flush=True)
    others = ", ".join(map(str, args.parallel))
    print(f"\n`{' '.join(grid_command(args, 1, '<output>')[1:])}` against --parallel {others} "
          f"({len(args.lrs)} x {args.seeds} runs)\n")
    rows = [[f"--parallel {side}", " / ".join(f"{wall:.1f}" for wall in walls[side]),
             f"{common.median(walls[side]):.1f}", f"{common.median(walls[1]) / common.median(walls[side]):.2f}x",
             "; ".join(f"{cell} {values}" for cell, values in grids[side].items())] for side in sides]
    print(common.table(rows, ["side", "wall s per repeat", "median s", "speed vs --parallel 1", "dev scores"]))


if __name__ == "__main__":
    sys.exit(main())
