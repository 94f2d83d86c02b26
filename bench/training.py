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
  bare_dyn_grouped_bf16  bare_dyn_grouped with bfloat16 autocast
  peer_same_batches the Trainer (DataCollatorWithPadding) over the exact batches ours_dyn_grouped trained on, in
                    its order (its sampler made sequential): ours and the Trainer on the same batches
  ..._fp16          ours_dyn_grouped, bare_dyn_grouped, peer_dyn, peer_same_batches with float16 autocast and loss
                    scaling (ours: --trainer.backend sp-amp --amp.dtype float16; the Trainer: fp16=True); --device
                    cuda only (float16 has no fast CPU path: train.py ignores it on CPU)
With --device cuda every side trains on the GPU (ours: --trainer.use_gpu true; the Trainer: use_cpu=False; the bare
loop's model and batches, the batches moved there before timing); the clock waits for the GPU
(torch.cuda.synchronize) at the two timestamps that bound the timed steps, and only there. --device cpu (the
default) keeps every side on the CPU even where a GPU is visible. bench/gpu.sh runs the GPU variants.
Same for all: the embedded MiniLM, lr 5e-5, weight decay 0.01, warmup 10% with linear decay, grad clipping 1.0,
the seed, max_seq_len, batch size. The peer keeps its default optimizer (adamw_torch_fused). Where datasets is not
installed, the peer's examples are tokenized into a list instead of datasets.map (the output says so).
"""
from __future__ import annotations

import argparse
import contextlib
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
            "ours_dyn_grouped_bf16", "peer_dyn_bf16", "bare_dyn_grouped_compiled"]  # the default on CPU
# also: the other precisions, and the Trainer on our batches
MORE_VARIANTS = ["bare_dyn_grouped_bf16", "peer_same_batches", "peer_same_batches_bf16", "ours_dyn_grouped_fp16",
                 "bare_dyn_grouped_fp16", "peer_dyn_fp16", "peer_same_batches_fp16"]
GPU_VARIANTS = ["ours_dyn_grouped_fp16", "bare_dyn_grouped_fp16", "peer_same_batches_fp16", "peer_dyn_fp16"]
OURS_FP16 = ["--trainer.backend", "sp-amp", "--amp.dtype", "float16"]
LABELS = {"RTE": ("entailment", "not_entailment"), "MRPC": ("0", "1")}
COLUMNS = {"RTE": ("sentence1", "sentence2", "label"), "MRPC": ("#1 String", "#2 String", "Quality")}


def precision(variant: str) -> str | None:
    """The autocast dtype a variant's name ends with: "fp16", "bf16", or None (float32)."""
    return next((p for p in ("fp16", "bf16") if variant.endswith("_" + p)), None)


def stamper(a: argparse.Namespace, stamps: list[float]):
    """Appends a timestamp; on a GPU it first waits for the queued work at the two stamps the clock uses (the end of
    the last warmup step and of the last timed step), and nowhere else, so no side loses its CPU/GPU overlap."""
    import torch
    cuda = a.device == "cuda"

    def stamp() -> None:
        if cuda and len(stamps) + 1 in (a.warmup_steps, a.warmup_steps + a.steps):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return stamp


def throughput(stamps: list[float], warmup: int, batch: int) -> tuple[float, float]:
    timed = len(stamps) - warmup
    seconds = stamps[-1] - stamps[warmup - 1]
    return timed * batch / seconds, seconds


def child_ours(a: argparse.Namespace, features: str, grouped: bool, dtype: str | None, record: str | None) -> None:
    common.setup_path()
    import numpy as np

    import train
    stamps: list[float] = []
    stamp = stamper(a, stamps)
    batches: list[list[int]] = []
    tokens: list[int] = []
    original_step, original_end = train.Recipe.train_step, train.Recipe.on_end_train_step

    def train_step(self, global_step, batch, device):
        batches.append(batch["index"].tolist())
        tokens.append(int(np.prod(batch["input_ids"].shape)))
        return original_step(self, global_step, batch, device)

    def on_end_train_step(self, global_step, *outputs):
        stamp()
        return original_end(self, global_step, *outputs)

    train.Recipe.train_step, train.Recipe.on_end_train_step = train_step, on_end_train_step
    out = tempfile.mkdtemp(prefix="bench_train_ours_")
    sys.argv = ["train.py", "--tmod.trainpath", features, "--tmod.output_dir", out,
                "--tmod.overwrite_output_dir", "true", "--trainer.epochs", "1",
                "--trainer.max_train_steps_per_epoch", str(a.warmup_steps + a.steps),
                "--trainer.train_batch_size", str(a.batch_size), "--tmod.group_by_length", str(grouped).lower(),
                "--tmod.seed", str(a.seed), "--trainer.writers", "stdout", "--trainer.disable_tqdm", "true",
                "--trainer.use_gpu", str(a.device == "cuda").lower()]
    sys.argv += {"bf16": common.OURS_BF16, "fp16": OURS_FP16}.get(dtype, [])
    train.main()
    shutil.rmtree(out, ignore_errors=True)
    stamps = stamps[:a.warmup_steps + a.steps]
    if record:
        with open(record, "w") as stream:
            json.dump(batches[:a.warmup_steps + a.steps], stream)
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    common.report({"ex_per_s": rate, "seconds": seconds,
                   "tokens_per_batch": sum(tokens[a.warmup_steps:len(stamps)]) / a.steps})


def child_bare(a: argparse.Namespace, features: str, record: str, compiled: bool, dtype: str | None) -> None:
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
    device = torch.device(a.device)
    keys = ("input_ids", "token_type_ids", "attention_mask", "labels")
    batches = [{k: batch[k].to(device) for k in keys} for batch in batches]
    set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=2).to(device)
    model.train()
    forward = torch.compile(model, dynamic=True) if compiled else model
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=5e-5, fused=True)  # as train.py and the Trainer
    total = len(batches)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    # float16: loss scaling as train.py does it (pymarlin_compat's GradScaler, the same initial scale)
    scaler = torch.amp.GradScaler(device.type, init_scale=4096, enabled=dtype == "fp16")
    stamps: list[float] = []
    stamp = stamper(a, stamps)
    for batch in batches:
        with torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext():
            loss = forward(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad()
        stamp()
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    tokens = sum(int(b["input_ids"].numel()) for b in batches[a.warmup_steps:]) / a.steps
    common.report({"ex_per_s": rate, "seconds": seconds, "tokens_per_batch": tokens})


def child_peer(a: argparse.Namespace, padding: str, grouped: bool, dtype: str | None, record: str | None) -> None:
    """The Trainer; with ``record`` over the batches ours trained on (recorded by ours_dyn_grouped), in its order."""
    import csv

    import torch  # noqa: F401
    from torch.utils.data import SequentialSampler
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
    a_col, b_col, label_col = COLUMNS[a.task]
    with open(os.path.join(common.GLUE, a.task, "train.tsv"), encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1:]
    ia, ib, il = header.index(a_col), header.index(b_col), header.index(label_col)
    labels = LABELS[a.task]
    if record:
        # an RTE or MRPC feature's index is its row's position in train.tsv (as in bench/equivalence.py)
        with open(record) as stream:
            recorded = json.load(stream)[:a.warmup_steps + a.steps]
        if any(len(batch) != a.batch_size for batch in recorded):
            raise SystemExit("peer_same_batches: ours recorded a short batch among the first warmup + timed steps; "
                             "take fewer steps")
        rows = [rows[i] for batch in recorded for i in batch]
    columns = {"s1": [r[ia] for r in rows], "s2": [r[ib] for r in rows], "label": [labels.index(r[il]) for r in rows]}
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())

    def tokenize(ex):
        return tokenizer(ex["s1"], ex["s2"], truncation=True, max_length=a.max_seq_len,
                         padding="max_length" if padding == "max_length" else False)
    try:
        import datasets
    except ImportError:  # on a machine without datasets (bench/gpu.sh carries it; this is the fallback)
        datasets = None
    if datasets is not None:
        datasets.disable_progress_bars()
        from datasets.table import InMemoryTable

        # fingerprints given: datasets would otherwise hash the table and ``tokenize`` with dill, which fails on
        # pyarrow 26's types (MonthDayNano, as from_dict does); caching is not what is measured here
        fingerprint = f"{padding}-{a.max_seq_len}-{len(rows)}"
        encoded = datasets.Dataset(InMemoryTable.from_pydict(columns), fingerprint=fingerprint).map(
            tokenize, batched=True, remove_columns=["s1", "s2"], new_fingerprint=fingerprint + "-tokenized")
    else:
        enc = tokenize(columns)
        encoded = [{**{k: v[i] for k, v in enc.items()}, "label": label} for i, label in enumerate(columns["label"])]
    set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=2)
    tokens: list[int] = []
    base = DataCollatorWithPadding(tokenizer) if padding == "dynamic" else default_data_collator

    def collate(features):
        batch = base(features)
        tokens.append(int(batch["input_ids"].numel()))
        return batch

    stamps: list[float] = []
    stamp = stamper(a, stamps)

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamp()

    class InOrder(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    out = tempfile.mkdtemp(prefix="bench_train_peer_")
    extra = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, learning_rate=5e-5,
                             weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
                             max_steps=a.warmup_steps + a.steps, seed=a.seed, logging_strategy="no",
                             save_strategy="no", eval_strategy="no", report_to="none", use_cpu=a.device == "cpu",
                             disable_tqdm=True, dataloader_num_workers=0, bf16=dtype == "bf16", fp16=dtype == "fp16",
                             **extra)
    trainer = (InOrder if record else Trainer)(model=model, args=args, train_dataset=encoded, data_collator=collate,
                                               processing_class=tokenizer, callbacks=[Stamp()])
    trainer.train()
    shutil.rmtree(out, ignore_errors=True)
    rate, seconds = throughput(stamps, a.warmup_steps, a.batch_size)
    common.report({"ex_per_s": rate, "seconds": seconds,
                   "tokens_per_batch": sum(tokens[a.warmup_steps:a.warmup_steps + a.steps]) / a.steps,
                   **({} if datasets is not None else {"note": "datasets not installed: a list of dicts"})})


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
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS + MORE_VARIANTS,
                        help="default: the first ten on CPU; with --device cuda: " + " ".join(GPU_VARIANTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where every side trains (cuda: the first GPU; bench/gpu.sh)")
    parser.add_argument("--workdir", default=None, help="where features go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--features", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--record", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        import torch
        torch.set_num_threads(a.threads)
        dtype = precision(a.child)
        if a.child.startswith("ours"):
            child_ours(a, a.features, "_grouped" in a.child, dtype, a.record)
        elif a.child.startswith("bare"):
            child_bare(a, a.features, a.record, a.child.endswith("_compiled"), dtype)
        else:
            child_peer(a, "max_length" if a.child == "peer_max" else "dynamic", "_grouped" in a.child, dtype,
                       a.record if a.child.startswith("peer_same_batches") else None)
        return

    variants = list(a.variants or (GPU_VARIANTS if a.device == "cuda" else VARIANTS))
    if a.device == "cpu" and any(precision(v) == "fp16" for v in variants):
        raise SystemExit("the *_fp16 variants need --device cuda (train.py ignores float16 on CPU)")
    print(f"machine: {common.machine()}", flush=True)
    if a.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        print(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}", flush=True)
    work = a.workdir or tempfile.mkdtemp(prefix="bench_training_")
    feats = {p: featurize(a.task, p, os.path.join(work, p), a.max_seq_len) for p in ("dynamic", "max_length")}
    record = os.path.join(work, "ours_dyn_grouped_batches.json")
    # the batches of the first ours_dyn_grouped* variant (their order does not depend on the precision) are replayed
    # by bare_* and peer_same_batches*: it runs first in each repeat
    recorder = next((v for v in variants if v.startswith("ours_dyn_grouped")), None)
    if any(v.startswith(("bare", "peer_same_batches")) for v in variants) and recorder is None:
        raise SystemExit("the bare_* and peer_same_batches* variants replay the batches of ours_dyn_grouped "
                         "(or its _bf16/_fp16 variant): run it too")
    if recorder:
        variants = [recorder] + [v for v in variants if v != recorder]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    common_args = ["--task", a.task, "--batch_size", str(a.batch_size), "--steps", str(a.steps),
                   "--warmup_steps", str(a.warmup_steps), "--max_seq_len", str(a.max_seq_len), "--seed", str(a.seed),
                   "--threads", str(a.threads), "--device", a.device]
    threads_env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    for repeat in range(a.repeats):
        for variant in variants:
            extra = ["--features", feats["max_length" if variant == "ours_max" else "dynamic"]]
            if variant == recorder or variant.startswith(("bare", "peer_same_batches")):
                extra += ["--record", record]
            result = common.run_child([os.path.abspath(__file__), "--child", variant, *common_args, *extra],
                                      env=threads_env)
            results[variant].append(result)
            print(f"repeat {repeat + 1}/{a.repeats} {variant:17s} {result['ex_per_s']:6.2f} ex/s "
                  f"({result['seconds']:.1f} s for {a.steps} steps, {result['tokens_per_batch']:.0f} tokens/batch, "
                  f"process {result['process_wall_s']:.0f} s){'; ' + result['note'] if 'note' in result else ''}",
                  flush=True)
    med = {v: common.median([r["ex_per_s"] for r in rs]) for v, rs in results.items()}
    tok = {v: common.median([r["tokens_per_batch"] for r in rs]) for v, rs in results.items()}
    tps = {v: common.median([r["ex_per_s"] * r["tokens_per_batch"] / a.batch_size for r in rs])
           for v, rs in results.items()}
    rows = [[v, f"{med[v]:.2f}", " / ".join(f"{r['ex_per_s']:.2f}" for r in results[v]), f"{tok[v]:.0f}",
             f"{tps[v]:.0f}"] for v in variants]
    print()
    print(f"{a.task}, batch {a.batch_size}, max_seq_len {a.max_seq_len}, {a.threads} thread(s), {a.steps} timed steps "
          f"after {a.warmup_steps}; medians of {a.repeats} interleaved repeats" + (", on the GPU" if a.device == "cuda"
                                                                                   else ""))
    print(common.table(rows, ["variant", "examples/s (median)", "each repeat", "padded tokens/batch (median)",
                              "padded tokens/s (median)"]))
    pairs = [("ours_dyn_grouped", "peer_dyn", "target >= 1.5"), ("ours_dyn_grouped", "peer_dyn_grouped", ""),
             ("ours_dyn", "peer_dyn", ""), ("ours_max", "peer_max", ""),
             ("ours_dyn_grouped", "bare_dyn_grouped", "target >= 0.95 (overhead <= 5%)"),
             ("ours_dyn_grouped_bf16", "ours_dyn_grouped", "bfloat16 autocast speed-up"),
             ("ours_dyn_grouped_bf16", "peer_dyn_bf16", "both bfloat16"), ("peer_dyn_bf16", "peer_dyn", ""),
             ("bare_dyn_grouped_compiled", "bare_dyn_grouped", "torch.compile speed-up"),
             ("ours_dyn_grouped", "peer_same_batches", "the same batches"),
             ("ours_dyn_grouped_fp16", "peer_dyn_fp16", "both float16"),
             ("ours_dyn_grouped_fp16", "peer_same_batches_fp16", "both float16, the same batches"),
             ("ours_dyn_grouped_fp16", "bare_dyn_grouped_fp16", "float16 overhead (bare loop's batches on the device)"),
             ("peer_same_batches_fp16", "peer_dyn_fp16", "Trainer: our batches / its random ones"),
             ("ours_dyn_grouped_fp16", "ours_dyn_grouped", "float16 autocast speed-up"),
             ("ours_dyn_grouped_bf16", "bare_dyn_grouped_bf16", "bfloat16 overhead")]
    ratio_rows = [[f"{x} / {y}", f"**{med[x] / med[y]:.3f}**", note] for x, y, note in pairs if x in med and y in med]
    print()
    print(common.table(ratio_rows, ["ratio (throughput)", "value", "note"]))


if __name__ == "__main__":
    main()
