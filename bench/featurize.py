"""(a) Featurization speed: data.py vs datasets.map (batched, run_glue's way) vs one bare batched tokenizer call.

    python bench/featurize.py --tasks SST-2 RTE --repeats 3

Every measurement runs in a fresh process; repeats are interleaved (ours, map, bare, ours, ...). Timed:
  ours      data.featurize(): read the TSV, load the tokenizer, tokenize (one process by default, or --workers N),
            write the features file
  ours_cli  the whole `python data.py ...` command (interpreter start and imports included)
  map       datasets.load_dataset("csv") of the same TSV + Dataset.map(batched=True) with the fast tokenizer
            (num_proc as run_glue's default: one process; its cache files are written), tokenizer load included
  map_process  the whole process that ran `map` (interpreter start and imports included): the peer's
            counterpart of ours_cli
  bare      one tokenizer(texts_a, texts_b, truncation=True, max_length=L) call on lists already in memory
Ratios are of throughput (examples/s): ours / map and ours / bare.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TEXT_COLUMNS = {"SST-2": ("sentence", None), "RTE": ("sentence1", "sentence2"), "MRPC": ("#1 String", "#2 String"),
                "CoLA": (None, None), "STS-B": ("sentence1", "sentence2")}


def read_texts(path: str, task: str) -> tuple[list[str], list[str] | None]:
    import csv
    a_col, b_col = TEXT_COLUMNS[task]
    with open(path, encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    a = [row[header.index(a_col)] for row in rows]
    b = [row[header.index(b_col)] for row in rows] if b_col else None
    return a, b


def child(kind: str, task: str, max_len: int, padding: str, workers: int | None) -> None:
    tsv_dir = os.path.join(common.GLUE, task)
    tsv = os.path.join(tsv_dir, "train.tsv")
    common.setup_path()
    out = tempfile.mkdtemp(prefix=f"bench_feat_{kind}_")
    if kind == "ours":
        import data
        from glue_support import command_line  # noqa: F401
        proc = data.DataProcessorArguments(task=task, set_type="train", max_seq_len=max_len,
                                           tokenizer="sentence-transformers/all-MiniLM-L6-v2", workers=workers,
                                           tokenize_batch_size=1000, skip_malformed=False, padding=padding)
        start = time.perf_counter()
        path = data.featurize(data.DataInterfaceArguments(input_dir=tsv_dir, output_dir=out), proc)
        elapsed = time.perf_counter() - start
        count = data.read_metadata(path)["count"]
        common.report({"seconds": elapsed, "examples": count, "bytes": os.path.getsize(path)})
    elif kind == "map":
        import datasets
        from transformers import AutoTokenizer
        datasets.disable_progress_bars()
        a_col, b_col = TEXT_COLUMNS[task]
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(common.model_path())
        raw = datasets.load_dataset("csv", data_files={"train": tsv}, delimiter="\t", quoting=3,
                                    cache_dir=os.path.join(out, "cache"))["train"]
        loaded = time.perf_counter()

        def preprocess(examples):
            args = (examples[a_col],) if b_col is None else (examples[a_col], examples[b_col])
            return tokenizer(*args, padding="max_length" if padding == "max_length" else False,
                             max_length=max_len, truncation=True)

        encoded = raw.map(preprocess, batched=True, desc="tokenize")
        elapsed = time.perf_counter() - start
        common.report({"seconds": elapsed, "map_seconds": time.perf_counter() - loaded, "examples": len(encoded)})
    elif kind == "bare":
        from transformers import AutoTokenizer
        a, b = read_texts(tsv, task)
        tokenizer = AutoTokenizer.from_pretrained(common.model_path())
        start = time.perf_counter()
        encoded = tokenizer(a, b, truncation=True, max_length=max_len,
                            padding="max_length" if padding == "max_length" else False)
        elapsed = time.perf_counter() - start
        common.report({"seconds": elapsed, "examples": len(encoded["input_ids"])})
    else:
        raise SystemExit(f"unknown kind {kind}")
    import shutil
    shutil.rmtree(out, ignore_errors=True)


def cli_run(task: str, max_len: int, padding: str) -> dict:
    out = tempfile.mkdtemp(prefix="bench_feat_cli_")
    start = time.perf_counter()
    import subprocess
    subprocess.run([common.PYTHON, "data.py", "--dmod.input_dir", os.path.join(common.GLUE, task),
                    "--dmod.output_dir", out, "--dproc.task", task, "--dproc.set_type", "train",
                    "--dproc.max_seq_len", str(max_len), "--dproc.padding", padding],
                   cwd=common.ROOT, check=True, capture_output=True)
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["SST-2", "RTE"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--padding", choices=["dynamic", "max_length"], default="dynamic",
                        help="dynamic: unpadded features / map without padding (default); "
                             "max_length: run_glue's default")
    parser.add_argument("--workers", type=int, default=None,
                        help="data.py worker processes (default: data.py's, one process using the tokenizer's threads)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.max_seq_len, args.padding, args.workers)
        return

    print(f"machine: {common.machine()}", flush=True)
    kinds = ["ours", "ours_cli", "map", "bare"]
    rows = []
    for task in args.tasks:
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        map_only: list[float] = []
        map_process: list[float] = []
        count = 0
        for repeat in range(args.repeats):
            for kind in kinds:
                if kind == "ours_cli":
                    result = cli_run(task, args.max_seq_len, args.padding)
                else:
                    extra = ["--workers", str(args.workers)] if args.workers else []
                    result = common.run_child([os.path.abspath(__file__), "--child", kind, task,
                                               "--max_seq_len", str(args.max_seq_len), "--padding", args.padding,
                                               *extra])
                    count = result["examples"]
                    if kind == "map":
                        map_only.append(result["map_seconds"])
                        map_process.append(result["process_wall_s"])
                times[kind].append(result["seconds"])
                print(f"{task} repeat {repeat + 1}/{args.repeats} {kind:8s} {result['seconds']:.2f} s", flush=True)
        med = {kind: common.median(values) for kind, values in times.items()}
        rows.append([task, str(count)]
                    + [f"{med[k]:.2f} s ({count / med[k]:,.0f}/s)" for k in kinds]
                    + [f"{common.median(map_only):.2f} s", f"{common.median(map_process):.2f} s",
                       f"**{med['map'] / med['ours']:.2f}x**",
                       f"{common.median(map_process) / med['ours_cli']:.2f}x",
                       f"**{med['bare'] / med['ours']:.2f}** ({med['ours'] / med['bare']:.2f}x the time)"])
    print()
    print(f"padding {args.padding}, max_seq_len {args.max_seq_len}, medians of {args.repeats} interleaved repeats")
    print(common.table(rows, ["task", "examples", "ours: data.featurize", "ours: python data.py (CLI)",
                              "peer: load_dataset+map", "bare tokenizer call", "map() alone",
                              "peer: whole process (imports included)", "ours/map (throughput)",
                              "ours CLI / peer process", "ours/bare (throughput)"]))


if __name__ == "__main__":
    main()
