"""(f) Validation and prediction throughput: train.py in length order vs train.py in file order vs transformers.Trainer.

    python bench/validation.py --tasks RTE MRPC SST-2 --repeats 3

Files: RTE dev and test, MRPC dev, SST-2 dev (from GLUE_DIR), featurized once by data.py (max_seq_len 128, dynamic
padding). Every side scores the same model, the embedded MiniLM with a classification head drawn once per task
(``--seed``) and saved, on the same token ids, in batches of ``--batch_size``, in a fresh process per run; runs are
interleaved (for each repeat, each task: every variant) and the table gives medians.

Variants (names used in the tables):
  ours_length  train.py as it runs (``--tmod.valpath`` dev, ``--tmod.predictpath`` test): batches longest first
  ours_file    the same with the batches in file order (``FilesDictDataloader(by_length=False)``: before)
  peer         ``Trainer.evaluate`` on dev (loss and the task's metrics) and ``Trainer.predict`` on test (argmax,
               then the same ``index<TAB>prediction`` file), ``DataCollatorWithPadding`` (dynamic padding)
Timed: ours = ``trainer.validate()`` (loaders, forward, metrics, results.json) and ``predict()`` (loaders, forward,
submission file); peer = ``evaluate()`` and ``predict()`` with its file. Not timed: interpreter start, imports,
loading the model, featurizing, and building the peer's dataset from our features.
The Trainer needs accelerate (``pip install -r bench/requirements.txt``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

VARIANTS = ["ours_length", "ours_file", "peer"]
FILES = {"RTE": ("dev", "test"), "MRPC": ("dev",), "SST-2": ("dev",)}
# what Trainer.evaluate returns besides the loss and the metrics
PEER_FIGURES = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")


def features_file(workdir: str, task: str, set_type: str) -> str:
    return os.path.join(workdir, "features", task, set_type, f"{set_type}.tsv")


def model_dir(workdir: str, task: str) -> str:
    return os.path.join(workdir, f"model_{task}")


def digest(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()[:12]


def child_ours(a: argparse.Namespace, by_length: bool) -> None:
    """train.py's ``main()`` with ``validate`` and ``predict`` timed, and the padded tokens of their batches."""
    common.setup_path()
    import functools

    import train
    from filegen_dataloaders import FilesDictDataloader
    if not by_length:
        train.FilesDictDataloader = functools.partial(FilesDictDataloader, by_length=False)
    tokens: list[int] = []
    timings: dict[str, dict[str, float]] = {}
    original_step = train.Recipe.val_step

    def val_step(self, global_step, batch, device):
        tokens.append(batch["input_ids"].numel())
        return original_step(self, global_step, batch, device)

    def timed(set_type, function):
        def run(*args, **kwargs):
            tokens.clear()
            start = time.perf_counter()
            result = function(*args, **kwargs)
            timings[set_type] = {"seconds": time.perf_counter() - start, "tokens": sum(tokens)}
            return result
        return run

    train.Recipe.val_step = val_step
    train.CheckpointingTrainer.validate = timed("dev", train.CheckpointingTrainer.validate)
    train.predict = timed("test", train.predict)
    out = tempfile.mkdtemp(prefix="bench_validation_ours_")
    sys.argv = ["train.py", "--model.hf_model", model_dir(a.workdir, a.task), "--tmod.output_dir", out,
                "--tmod.overwrite_output_dir", "true", "--trainer.val_batch_size", str(a.batch_size),
                "--trainer.writers", "stdout", "--trainer.disable_tqdm", "true",
                "--tmod.valpath", features_file(a.workdir, a.task, "dev")]
    if "test" in FILES[a.task]:
        sys.argv += ["--tmod.predictpath", features_file(a.workdir, a.task, "test")]
    recipe = train.main()
    timings["dev"]["metrics"] = {name: value for name, value in recipe.results["dev.tsv"].items()
                                 if name not in ("epoch", "step", "examples")}
    if "test" in timings:
        submission = os.path.join(out, "submission", f"{a.task}.tsv")
        timings["test"]["submission"] = digest(submission)
    shutil.rmtree(out, ignore_errors=True)
    common.report(timings)


def child_peer(a: argparse.Namespace) -> None:
    """``Trainer.evaluate`` / ``Trainer.predict`` on our features, as lists of token ids padded per batch."""
    common.setup_path()
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    import data
    import glue_metrics
    from glue_processors import get_task

    def rows(set_type: str) -> tuple[list[dict], list[int]]:
        dataset = data.TaskDataset(features_file(a.workdir, a.task, set_type))
        items = [{"input_ids": feature.input_ids.tolist(), "token_type_ids": feature.token_type_ids.tolist(),
                  **({} if feature.label is None else {"label": feature.label})} for feature in dataset]
        return items, [feature.index for feature in dataset]

    tokenizer = AutoTokenizer.from_pretrained(model_dir(a.workdir, a.task))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir(a.workdir, a.task))
    padding = DataCollatorWithPadding(tokenizer)
    tokens: list[int] = []

    def collate(features):
        batch = padding(features)
        tokens.append(batch["input_ids"].numel())
        return batch

    def metrics(prediction):
        return glue_metrics.compute(a.task, prediction.label_ids, prediction.predictions.argmax(-1))

    out = tempfile.mkdtemp(prefix="bench_validation_peer_")
    args = TrainingArguments(output_dir=out, per_device_eval_batch_size=a.batch_size, report_to="none",
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, data_collator=collate, processing_class=tokenizer,
                      compute_metrics=metrics)
    timings: dict[str, dict] = {}
    dev, _ = rows("dev")
    tokens.clear()
    start = time.perf_counter()
    result = trainer.evaluate(dev)
    timings["dev"] = {"seconds": time.perf_counter() - start, "tokens": sum(tokens),
                      "metrics": {name.removeprefix("eval_"): value for name, value in result.items()
                                  if name.removeprefix("eval_") not in PEER_FIGURES}}
    if "test" in FILES[a.task]:
        test, indexes = rows("test")
        labels = get_task(a.task).labels
        path = os.path.join(out, f"{a.task}.tsv")
        tokens.clear()
        start = time.perf_counter()
        predicted = np.asarray(trainer.predict(test).predictions).argmax(-1)
        with open(path, "w", encoding="utf-8", newline="\n") as stream:
            stream.write("index\tprediction\n")
            stream.writelines(f"{index}\t{labels[label]}\n" for index, label in zip(indexes, predicted.tolist()))
        timings["test"] = {"seconds": time.perf_counter() - start, "tokens": sum(tokens), "submission": digest(path)}
    shutil.rmtree(out, ignore_errors=True)
    common.report(timings)


def prepare(a: argparse.Namespace) -> dict[tuple[str, str], int]:
    """Features of every file and one classifier per task (head drawn with ``--seed``); examples per file."""
    common.setup_path()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import data
    from glue_processors import get_task
    counts = {}
    for task in a.tasks:
        labels = get_task(task).labels
        torch.manual_seed(a.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            common.model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
        model.save_pretrained(model_dir(a.workdir, task))
        AutoTokenizer.from_pretrained(common.model_path()).save_pretrained(model_dir(a.workdir, task))
        for set_type in FILES[task]:
            path = features_file(a.workdir, task, set_type)
            subprocess.run([common.PYTHON, "data.py", "--dmod.input_dir", os.path.join(common.GLUE, task),
                            "--dmod.output_dir", os.path.dirname(path), "--dproc.task", task, "--dproc.set_type",
                            set_type, "--dproc.max_seq_len", "128", "--dproc.padding", "dynamic"],
                           cwd=common.ROOT, check=True, capture_output=True)
            counts[task, set_type] = data.read_metadata(path)["count"]
    return counts


def summarize(a: argparse.Namespace, counts: dict[tuple[str, str], int], results: dict) -> None:
    """Per file: examples/s and padded tokens per example (medians), and the ratios; RTE dev + test together."""
    def rate(variant, files):
        return common.median([sum(counts[f] for f in files) / sum(run[f[1]]["seconds"] for f in files)
                              for run in results[variant][files[0][0]]])

    def per_example(variant, file):
        return common.median([run[file[1]]["tokens"] / counts[file] for run in results[variant][file[0]]])

    groups = [[file] for file in counts]
    if ("RTE", "test") in counts:
        groups.append([("RTE", "dev"), ("RTE", "test")])
    rows, ratios = [], []
    for files in groups:
        name = " + ".join(f"{task} {set_type}" for task, set_type in files)
        med = {variant: rate(variant, files) for variant in VARIANTS}
        padded = [f"{per_example(variant, files[0]):.1f}" for variant in VARIANTS] if len(files) == 1 else [""] * 3
        rows.append([name, str(sum(counts[f] for f in files)), *(f"{med[v]:.1f}" for v in VARIANTS), *padded])
        target = "target >= 1.6" if files[0][0] == "RTE" and len(files) == 2 else ""
        ratios.append([name, f"**{med['ours_length'] / med['peer']:.3f}**",
                       f"{med['ours_length'] / med['ours_file']:.3f}", f"{med['ours_file'] / med['peer']:.3f}", target])
    print()
    print(f"batch {a.batch_size}, max_seq_len 128, {a.threads} thread(s); medians of {a.repeats} interleaved repeats")
    print(common.table(rows, ["file", "examples", *(f"{v} ex/s" for v in VARIANTS),
                              *(f"{v} padded tokens/example" for v in VARIANTS)]))
    print()
    print(common.table(ratios, ["file", "ours_length / peer", "ours_length / ours_file", "ours_file / peer", "note"]))
    print()
    for task in a.tasks:
        for set_type, field in (("dev", "metrics"), ("test", "submission")):
            if (task, set_type) in counts:
                seen = {variant: results[variant][task][0][set_type][field] for variant in VARIANTS}
                print(f"{task} {set_type} {field}: " + "; ".join(f"{v} {seen[v]}" for v in VARIANTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (default 1, as bench/training.py: every variant gets the same)")
    parser.add_argument("--workdir", default=None, help="where features and models go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        import torch
        torch.set_num_threads(a.threads)
        if a.child == "peer":
            child_peer(a)
        else:
            child_ours(a, by_length=a.child == "ours_length")
        return
    print(common.machine(), flush=True)
    temporary = a.workdir is None
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="bench_validation_")
    counts = prepare(a)
    results: dict[str, dict[str, list]] = {variant: {task: [] for task in a.tasks} for variant in VARIANTS}
    threads_env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    for repeat in range(a.repeats):
        for task in a.tasks:
            for variant in VARIANTS:
                result = common.run_child([os.path.abspath(__file__), "--child", variant, "--task", task,
                                           "--workdir", a.workdir, "--batch_size", str(a.batch_size),
                                           "--threads", str(a.threads)], env=threads_env)
                results[variant][task].append(result)
                print(f"repeat {repeat + 1}/{a.repeats} {task:5s} {variant:11s} " + ", ".join(
                    f"{set_type} {counts[task, set_type] / result[set_type]['seconds']:.1f} ex/s "
                    f"({result[set_type]['seconds']:.2f} s)" for set_type in FILES[task]), flush=True)
    summarize(a, counts, results)
    if temporary:
        shutil.rmtree(a.workdir, ignore_errors=True)
    print(json.dumps({"load_average_at_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
