"""(b) Training throughput: train.py vs transformers.Trainer vs a bare PyTorch loop, same model/data/hyperparameters.

    python bench/training.py --task RTE --batch_size 16 --steps 30 --warmup_steps 3 --repeats 3

Each variant runs in a fresh process, repeats interleaved. Model loading, featurization and the first
``--warmup_steps`` optimizer steps are excluded: the clock runs from the end of warmup step W to the end of step
W+N (timestamps taken after each optimizer step: forward, backward, clipping, AdamW, schedule, and for ours and
the Trainer their whole loop around it: data loading, collation, callbacks, logging). Throughput = N * batch / time.

Variants (names used in the table):
  ours_dyn_grouped  train.py, features with --dproc.padding dynamic, --tmod.group_by_length true (our default)
  ours_dyn          train.py, dynamic padding, group_by_length false (random batches)
  ours_max          train.py, features with --dproc.padding max_length (every batch padded to max_seq_len)
  peer_dyn          Trainer + DataCollatorWithPadding (run_glue's --pad_to_max_length false)
  peer_max          Trainer, datasets.map(padding="max_length") (run_glue's default)
  peer_dyn_grouped  Trainer, dynamic padding + train_sampling_strategy="group_by_length" (the peer's own grouping)
  bare_dyn_grouped  plain PyTorch loop replaying the exact batches ours_dyn_grouped trained on in the same repeat
                    (collated before timing): the limit; ours_dyn_grouped / bare = our overhead
  bare_dyn_grouped_compiled  bare_dyn_grouped with torch.compile(model, dynamic=True) (compiling falls in the
                    untimed warmup steps)
  ours_dyn_grouped_bf16  ours_dyn_grouped with bfloat16 autocast (--trainer.backend sp-amp --amp.dtype bfloat16)
  peer_dyn_bf16     peer_dyn with bfloat16 autocast (TrainingArguments(bf16=True))
Same for all: the embedded MiniLM, lr 5e-5, weight decay 0.01, warmup 10% with linear decay, grad clipping 1.0,
the seed, max_seq_len, batch size. The peer keeps its default optimizer (adamw_torch_fused).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

VARIANTS = ["ours_dyn_grouped", "bare_dyn_grouped", "ours_dyn", "ours_max", "peer_dyn", "peer_max", "peer_dyn_grouped",
            "ours_dyn_grouped_bf16", "peer_dyn_bf16", "bare_dyn_grouped_compiled"]
LABELS = {"RTE": ("entailment", "not_entailment"), "MRPC": ("0", "1")}
COLUMNS = {"RTE": ("sentence1", "sentence2", "label"), "MRPC": ("#1 String", "#2 String", "Quality")}


def throughput(stamps: list[float], warmup: int, batch: int) -> tuple[float, float]:
    timed = len(stamps) - warmup
    seconds = stamps[-1] - stamps[warmup - 1]
    return timed * batch / seconds, seconds


def child_ours(a: argparse.Namespace, features: str, grouped: bool, bf16: bool, record: str | None) -> None:
    common.setup_path()
    import numpy as np

    import train
    stamps: list[float] = []
    batches: list[list[int]] = []
    tokens: list[int] = []
    original_step, original_end = train.Recipe.train_step, train.Recipe.on_end_train_step

    def train_step(self, global_step, batch, device):
        batches.append(batch["index"].tolist())
        tokens.append(int(np.prod(batch["input_ids"].shape)))
        return original_step(self, global_step, batch, device)

    def on_end_train_step(self, global_step, *outputs):
        stamps.append(time.perf_counter())
        return original_end(self, global_step, *outputs)

    train.Recipe.train_step, train.Recipe.on_end_train_step = train_step, on_end_train_step
    out = tempfile.mkdtemp(prefix="bench_train_ours_")
    sys.argv = ["train.py", "--tmod.trainpath", features, "--tmod.output_dir", out,
                "--tmod.overwrite_output_dir", "true", "--trainer.epochs", "1",
                "--trainer.max_train_steps_per_epoch", str(a.warmup_steps + a.steps),
                "--trainer.train_batch_size", str(a.batch_size), "--tmod.group_by_length", str(grouped).lower(),
                "--tmod.seed", str(a.seed), "--trainer.writers", "stdout", "--trainer.disable_tqdm", "true"]
    if bf16:
        sys.argv += common.OURS_BF16
    train.main()
    shutil.rmtree(out, ignore_errors=True)
    stamps = stamps[:a.warmup_steps + a.steps]
    if record:
        with open(record, "w") as stream:
            json.dump(batches[:a.warmup_steps + a.steps], stream)
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    common.report({"ex_per_s": rate, "seconds": seconds,
                   "tokens_per_batch": sum(tokens[a.warmup_steps:len(stamps)]) / a.steps})


def child_bare(a: argparse.Namespace, features: str, record: str, compiled: bool) -> None:
    common.setup_path()
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed
    from transformers.optimization import get_linear_schedule_with_warmup

    import data
    dataset = data.TaskDataset(os.path.join(features, "train.tsv") if os.path.isdir(features) else features)
    by_index = {feature.index: feature for feature in dataset}
    with open(record) as stream:
        recorded = json.load(stream)
    batches = [dataset.collate_batch([by_index[i] for i in indexes]) for indexes in recorded]
    set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=2)
    model.train()
    forward = torch.compile(model, dynamic=True) if compiled else model
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=5e-5)
    total = len(batches)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)
    keys = ("input_ids", "token_type_ids", "attention_mask", "labels")
    stamps = []
    for batch in batches:
        loss = forward(**{k: batch[k] for k in keys}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        stamps.append(time.perf_counter())
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    tokens = sum(int(b["input_ids"].numel()) for b in batches[a.warmup_steps:]) / a.steps
    common.report({"ex_per_s": rate, "seconds": seconds, "tokens_per_batch": tokens})


def child_peer(a: argparse.Namespace, padding: str, grouped: bool, bf16: bool) -> None:
    import csv

    import datasets
    import torch  # noqa: F401
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )
    datasets.disable_progress_bars()
    a_col, b_col, label_col = COLUMNS[a.task]
    with open(os.path.join(common.GLUE, a.task, "train.tsv"), encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    ia, ib, il = header.index(a_col), header.index(b_col), header.index(label_col)
    labels = LABELS[a.task]
    raw = datasets.Dataset.from_dict({"s1": [r[ia] for r in rows], "s2": [r[ib] for r in rows],
                                      "label": [labels.index(r[il]) for r in rows]})
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())
    encoded = raw.map(lambda ex: tokenizer(ex["s1"], ex["s2"], truncation=True, max_length=a.max_seq_len,
                                           padding="max_length" if padding == "max_length" else False),
                      batched=True, remove_columns=["s1", "s2"])
    set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=2)
    tokens: list[int] = []
    base = DataCollatorWithPadding(tokenizer) if padding == "dynamic" else default_data_collator

    def collate(features):
        batch = base(features)
        tokens.append(int(batch["input_ids"].numel()))
        return batch

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    out = tempfile.mkdtemp(prefix="bench_train_peer_")
    extra = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, learning_rate=5e-5,
                             weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
                             max_steps=a.warmup_steps + a.steps, seed=a.seed, logging_strategy="no",
                             save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, bf16=bf16, **extra)
    trainer = Trainer(model=model, args=args, train_dataset=encoded, data_collator=collate,
                      processing_class=tokenizer, callbacks=[Stamp()])
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    common.report({"ex_per_s": rate, "seconds": seconds,
                   "tokens_per_batch": sum(tokens[a.warmup_steps:a.warmup_steps + a.steps]) / a.steps})


def featurize(task: str, padding: str, out: str, max_len: int, set_type: str = "train") -> str:
    subprocess.run([common.PYTHON, "data.py", "--dmod.input_dir", os.path.join(common.GLUE, task),
                    "--dmod.output_dir", out, "--dproc.task", task, "--dproc.set_type", set_type,
                    "--dproc.padding", padding, "--dproc.max_seq_len", str(max_len)],
                   cwd=common.ROOT, check=True, capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="RTE", choices=sorted(LABELS))
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup_steps", type=int, default=3, help="untimed steps first")
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per run (default 1: on a shared 2-core machine, 2 threads per "
                             "process collapse under load from other processes; every variant gets the same)")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--workdir", default=None, help="where features go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--features", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--record", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        import torch
        torch.set_num_threads(a.threads)
        bf16 = a.child.endswith("_bf16")
        if a.child.startswith("ours"):
            child_ours(a, a.features, "_grouped" in a.child, bf16, a.record)
        elif a.child.startswith("bare"):
            child_bare(a, a.features, a.record, a.child.endswith("_compiled"))
        else:
            child_peer(a, "max_length" if a.child == "peer_max" else "dynamic", "_grouped" in a.child, bf16)
        return

    print(f"machine: {common.machine()}", flush=True)
    work = a.workdir or tempfile.mkdtemp(prefix="bench_training_")
    feats = {p: featurize(a.task, p, os.path.join(work, p), a.max_seq_len) for p in ("dynamic", "max_length")}
    record = os.path.join(work, "ours_dyn_grouped_batches.json")
    variants = list(a.variants)
    if any(v.startswith("bare") for v in variants) and "ours_dyn_grouped" not in variants:
        raise SystemExit("the bare_* variants replay the batches of ours_dyn_grouped: run it too")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    common_args = ["--task", a.task, "--batch_size", str(a.batch_size), "--steps", str(a.steps),
                   "--warmup_steps", str(a.warmup_steps), "--max_seq_len", str(a.max_seq_len), "--seed", str(a.seed),
                   "--threads", str(a.threads)]
    threads_env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    for repeat in range(a.repeats):
        for variant in variants:
            extra = ["--features", feats["max_length" if variant == "ours_max" else "dynamic"]]
            if variant == "ours_dyn_grouped" or variant.startswith("bare"):
                extra += ["--record", record]
            result = common.run_child([os.path.abspath(__file__), "--child", variant, *common_args, *extra],
                                      env=threads_env)
            results[variant].append(result)
            print(f"repeat {repeat + 1}/{a.repeats} {variant:17s} {result['ex_per_s']:6.2f} ex/s "
                  f"({result['seconds']:.1f} s for {a.steps} steps, {result['tokens_per_batch']:.0f} tokens/batch, "
                  f"process {result['process_wall_s']:.0f} s)", flush=True)
    med = {v: common.median([r["ex_per_s"] for r in rs]) for v, rs in results.items()}
    tok = {v: common.median([r["tokens_per_batch"] for r in rs]) for v, rs in results.items()}
    tps = {v: common.median([r["ex_per_s"] * r["tokens_per_batch"] / a.batch_size for r in rs])
           for v, rs in results.items()}
    rows = [[v, f"{med[v]:.2f}", " / ".join(f"{r['ex_per_s']:.2f}" for r in results[v]), f"{tok[v]:.0f}",
             f"{tps[v]:.0f}"] for v in variants]
    print()
    print(f"{a.task}, batch {a.batch_size}, max_seq_len {a.max_seq_len}, {a.threads} thread(s), {a.steps} timed steps "
          f"after {a.warmup_steps}; medians of {a.repeats} interleaved repeats")
    print(common.table(rows, ["variant", "examples/s (median)", "each repeat", "padded tokens/batch (median)",
                              "padded tokens/s (median)"]))
    pairs = [("ours_dyn_grouped", "peer_dyn", "target >= 1.5"), ("ours_dyn_grouped", "peer_dyn_grouped", ""),
             ("ours_dyn", "peer_dyn", ""), ("ours_max", "peer_max", ""),
             ("ours_dyn_grouped", "bare_dyn_grouped", "target >= 0.95 (overhead <= 5%)"),
             ("ours_dyn_grouped_bf16", "ours_dyn_grouped", "bfloat16 autocast speed-up"),
             ("ours_dyn_grouped_bf16", "peer_dyn_bf16", "both bfloat16"), ("peer_dyn_bf16", "peer_dyn", ""),
             ("bare_dyn_grouped_compiled", "bare_dyn_grouped", "torch.compile speed-up")]
    ratio_rows = [[f"{x} / {y}", f"**{med[x] / med[y]:.3f}**", note] for x, y, note in pairs if x in med and y in med]
    print()
    print(common.table(ratio_rows, ["ratio (throughput)", "value", "note"]))


if __name__ == "__main__":
    main()
