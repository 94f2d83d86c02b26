"""(c) Dev metrics after a full fine-tune: train.py vs transformers.Trainer, same hyperparameters, several seeds.

    python bench/accuracy.py --tasks RTE MRPC --seeds 42 1 2

For each task: data.py featurizes train and dev once; then for each seed, interleaved, (1) ours:
`python train.py` with the defaults of config.yaml (lr 5e-5, batch 16, 5 epochs, warmup 0.1, weight decay 0.01,
dynamic padding, length grouping), the metric of its last validation (results.json); (2) the peer:
transformers.Trainer with the same lr, batch, epochs, warmup ratio, weight decay, grad clipping and seed,
DataCollatorWithPadding, evaluated on dev after the last epoch. Both sides score with the same code
(glue_metrics.compute). Prints per-seed metrics, means, and the difference of means (target: within 1 point).
--bf16 trains both sides with bfloat16 autocast (ours: --trainer.backend sp-amp --amp.dtype bfloat16; the peer:
TrainingArguments(bf16=True)), to compare its metrics with float32 runs.
--ours_options passes more train.py options to our side only (e.g. "--tmod.group_by_length false").
--max_steps_per_epoch limits each epoch (for a quick check of the script, not for the comparison).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training import COLUMNS, LABELS  # noqa: E402

import common  # noqa: E402

PRIMARY = {"RTE": "accuracy", "MRPC": "accuracy"}
ALSO = {"MRPC": ["f1"]}


def read(task: str, split: str):
    a_col, b_col, label_col = COLUMNS[task]
    with open(os.path.join(common.GLUE, task, f"{split}.tsv"), encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    ia, ib, il = header.index(a_col), header.index(b_col), header.index(label_col)
    return {"s1": [r[ia] for r in rows], "s2": [r[ib] for r in rows],
            "label": [LABELS[task].index(r[il]) for r in rows]}


def child_peer(a: argparse.Namespace, task: str, seed: int) -> None:
    common.setup_path()
    import datasets
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    import glue_metrics
    torch.set_num_threads(a.threads)
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())

    def encode(split):
        return datasets.Dataset.from_dict(read(task, split)).map(
            lambda ex: tokenizer(ex["s1"], ex["s2"], truncation=True, max_length=a.max_seq_len),
            batched=True, remove_columns=["s1", "s2"])

    train, dev = encode("train"), encode("dev")
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=len(LABELS[task]))
    out = tempfile.mkdtemp(prefix="bench_acc_peer_")
    steps = {"max_steps": a.epochs * a.max_steps_per_epoch} if a.max_steps_per_epoch else {}
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
                             learning_rate=a.lr, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
                             max_grad_norm=1.0, num_train_epochs=a.epochs, seed=seed, logging_strategy="no",
                             save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True, bf16=a.bf16, **steps)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    prediction = trainer.predict(dev)
    preds = np.argmax(prediction.predictions, axis=-1)
    metrics = glue_metrics.compute(task, np.array(dev["label"]), preds)
    shutil.rmtree(out, ignore_errors=True)
    common.report({**{k: float(v) for k, v in metrics.items()}, "train_s": train_s})


def run_ours(a: argparse.Namespace, task: str, seed: int, feats: str) -> dict:
    out = tempfile.mkdtemp(prefix="bench_acc_ours_")
    cmd = [common.PYTHON, "train.py", "--tmod.trainpath", os.path.join(feats, "train"),
           "--tmod.valpath", os.path.join(feats, "dev"), "--tmod.output_dir", out,
           "--tmod.overwrite_output_dir", "true",
           "--tmod.seed", str(seed), "--tmod.max_lr", str(a.lr), "--trainer.epochs", str(a.epochs),
           "--trainer.train_batch_size", str(a.batch_size), "--trainer.writers", "stdout",
           "--trainer.disable_tqdm", "true"]
    if a.max_steps_per_epoch:
        cmd += ["--trainer.max_train_steps_per_epoch", str(a.max_steps_per_epoch)]
    if a.bf16:
        cmd += common.OURS_BF16
    cmd += shlex.split(a.ours_options)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise RuntimeError("train.py failed")
    with open(os.path.join(out, "results.json")) as stream:
        results = json.load(stream)
    shutil.rmtree(out, ignore_errors=True)
    return {**results["dev.tsv"], "process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["RTE", "MRPC"], choices=sorted(LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5.0e-5)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--max_steps_per_epoch", type=int, default=None, help="quick check only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (both sides)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on both sides")
    parser.add_argument("--ours_options", default="", help="more train.py options for our side")
    parser.add_argument("--sides", nargs="+", default=["ours", "peer"], choices=["ours", "peer"])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        child_peer(a, a.child[0], int(a.child[1]))
        return

    print(f"machine: {common.machine()}", flush=True)
    work = a.workdir or tempfile.mkdtemp(prefix="bench_accuracy_")
    lines = []
    for task in a.tasks:
        feats = os.path.join(work, task)
        for split in ("train", "dev"):
            subprocess.run([common.PYTHON, "data.py", "--dmod.input_dir", os.path.join(common.GLUE, task),
                            "--dmod.output_dir", os.path.join(feats, split), "--dproc.task", task,
                            "--dproc.set_type", split, "--dproc.max_seq_len", str(a.max_seq_len)],
                           cwd=common.ROOT, check=True, capture_output=True)
        scores: dict[str, list[dict]] = {side: [] for side in a.sides}
        for seed in a.seeds:
            for side in a.sides:
                if side == "ours":
                    result = run_ours(a, task, seed, feats)
                else:
                    result = common.run_child([os.path.abspath(__file__), "--child", task, str(seed),
                                               "--epochs", str(a.epochs), "--batch_size", str(a.batch_size),
                                               "--lr", str(a.lr), "--max_seq_len", str(a.max_seq_len),
                                               "--threads", str(a.threads), *(["--bf16"] if a.bf16 else []),
                                               *(["--max_steps_per_epoch", str(a.max_steps_per_epoch)]
                                                 if a.max_steps_per_epoch else [])],
                                              env={"OMP_NUM_THREADS": str(a.threads)})
                scores[side].append(result)
                shown = ", ".join(f"{m} {result[m]:.4f}" for m in [PRIMARY[task], *ALSO.get(task, [])])
                print(f"{task} seed {seed} {side}: {shown} ({result['process_wall_s']:.0f} s)", flush=True)
        for metric in [PRIMARY[task], *ALSO.get(task, [])]:
            row = [task, metric]
            means = {}
            for side in a.sides:
                values = [r[metric] for r in scores[side]]
                means[side] = sum(values) / len(values)
                row.append(" / ".join(f"{v:.4f}" for v in values) + f" (mean **{means[side]:.4f}**)")
            if len(a.sides) == 2:
                row.append(f"{100 * (means['ours'] - means['peer']):+.1f} points")
            lines.append(row)
    print()
    print(f"seeds {a.seeds}, {a.epochs} epochs, batch {a.batch_size}, lr {a.lr}, {'bfloat16' if a.bf16 else 'float32'}"
          + (f", ours with {a.ours_options}" if a.ours_options else "")
          + (f", at most {a.max_steps_per_epoch} steps per epoch (QUICK CHECK, not a comparison)"
             if a.max_steps_per_epoch else ""))
    print(common.table(lines, ["task", "metric", *[f"{s} (per seed)" for s in a.sides]]
                       + (["ours - peer"] if len(a.sides) == 2 else [])))


if __name__ == "__main__":
    main()
