"""(e) Does train.py train exactly as transformers.Trainer does? Same weights, same batches, dropout off.

    python bench/equivalence.py --task MRPC --steps 60

A 3-seed accuracy comparison mixes real differences with the luck of initialisation, data order and dropout.
This check removes the luck and compares the arithmetic:
  1. tokenization: the ids of data.py's features against the peer's `tokenizer(a, b, truncation=True,
     max_length=L)` (what run_glue's map calls), for every train and dev example;
  2. training: ours runs `train.py` (random batches, no length grouping) for --steps optimizer steps with every
     dropout set to 0, recording its initial weights, each batch's examples and each step's loss. The Trainer
     then starts from those weights, with dropout 0, and trains on the same examples in the same order (its
     sampler made sequential over them, tokenized by its own map), with its own optimizer (adamw_torch_fused),
     schedule and clipping, for the same steps, lr, warmup ratio and weight decay. Printed: the largest loss
     difference over the steps, the largest parameter difference at the end, and both sides' dev metrics.
Equal arithmetic gives differences at float32 rounding (1e-5 or below) and the same dev predictions.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from accuracy import read  # noqa: E402
from training import LABELS, featurize  # noqa: E402

import common  # noqa: E402

WEIGHT_DECAY = 0.01
WARMUP = 0.1  # a ratio of the steps on both sides (transformers 5 reads warmup_steps < 1 as one)


def without_dropout(model) -> None:
    import torch
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def record_losses(model, losses: list[float]) -> None:
    """Every training forward's loss, in order."""
    def hook(module, inputs, output):
        if module.training:
            losses.append(output.loss.item())
    model.register_forward_hook(hook)


def run_ours(a: argparse.Namespace, feats: str, out: str) -> dict:
    """train.py for a.steps steps with dropout off; its initial weights, batches, losses and dev metrics."""
    import copy
    import json

    import train
    run: dict = {"batches": [], "losses": []}
    original_setup, original_step = train.Recipe.setup_models, train.Recipe.train_step

    def setup_models(self):
        model, tokenizer = original_setup(self)
        without_dropout(model)
        run["initial"] = copy.deepcopy(model.state_dict())
        run["model"] = model
        record_losses(model, run["losses"])
        return model, tokenizer

    def train_step(self, global_step, batch, device):
        run["batches"].append(batch["index"].tolist())
        return original_step(self, global_step, batch, device)

    train.Recipe.setup_models, train.Recipe.train_step = setup_models, train_step
    sys.argv = ["train.py", "--tmod.trainpath", os.path.join(feats, "train"), "--tmod.valpath",
                os.path.join(feats, "dev"), "--tmod.output_dir", out, "--tmod.overwrite_output_dir", "true",
                "--trainer.epochs", "1", "--trainer.max_train_steps_per_epoch", str(a.steps),
                "--trainer.train_batch_size", str(a.batch_size), "--tmod.max_lr", str(a.lr),
                "--tmod.weight_decay", str(WEIGHT_DECAY), "--tmod.warmup_prop", str(WARMUP),
                "--tmod.group_by_length", "false", "--tmod.seed", str(a.seed),
                "--dproc.max_seq_len", str(a.max_seq_len), "--trainer.writers", "stdout",
                "--trainer.disable_tqdm", "true"]
    train.main()
    with open(os.path.join(out, "results.json")) as stream:
        run["metrics"] = json.load(stream)["dev.tsv"]
    return run


def run_peer(a: argparse.Namespace, ours: dict) -> dict:
    """The Trainer from ours' initial weights over ours' examples in ours' order."""
    import datasets
    import numpy as np
    from torch.utils.data import SequentialSampler
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    import glue_metrics
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())

    def encode(columns):
        return datasets.Dataset.from_dict(columns).map(
            lambda ex: tokenizer(ex["s1"], ex["s2"], truncation=True, max_length=a.max_seq_len),
            batched=True, remove_columns=["s1", "s2"])

    train_rows = read(a.task, "train")
    # an RTE or MRPC feature's index is its row's position in train.tsv (RTE numbers its rows 0..N-1, MRPC has no
    # index column): the examples ours trained on, in its order
    order = [index for batch in ours["batches"] for index in batch]
    train = encode({column: [values[i] for i in order] for column, values in train_rows.items()})
    dev = encode(read(a.task, "dev"))
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=len(LABELS[a.task]))
    model.load_state_dict(ours["initial"])
    without_dropout(model)
    losses: list[float] = []
    record_losses(model, losses)

    class InOrder(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    out = tempfile.mkdtemp(prefix="bench_equiv_peer_")
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
                             learning_rate=a.lr, weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP,
                             lr_scheduler_type="linear",
                             max_grad_norm=1.0, max_steps=a.steps, seed=a.seed, logging_strategy="no",
                             save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True)
    trainer = InOrder(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                      processing_class=tokenizer)
    trainer.train()
    preds = np.argmax(trainer.predict(dev).predictions, axis=-1)
    shutil.rmtree(out, ignore_errors=True)
    return {"losses": losses, "model": model,
            "metrics": glue_metrics.compute(a.task, np.array(dev["label"]), preds)}


def compare_tokenization(a: argparse.Namespace, feats: str) -> list[str]:
    from transformers import AutoTokenizer

    import data
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())
    lines = []
    for split in ("train", "dev"):
        dataset = data.TaskDataset(os.path.join(feats, split, f"{split}.tsv"))
        rows = read(a.task, split)
        peer = tokenizer(rows["s1"], rows["s2"], truncation=True, max_length=a.max_seq_len)
        same = sum(feature.input_ids.tolist() == ids and feature.token_type_ids.tolist() == types
                   and feature.label == label
                   for feature, ids, types, label in zip(dataset, peer["input_ids"], peer["token_type_ids"],
                                                          rows["label"]))
        lines.append(f"tokenization, {a.task} {split}: {same} of {len(dataset)} examples identical "
                     f"(ids, token type ids, label); the peer tokenized {len(peer['input_ids'])}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="MRPC", choices=sorted(LABELS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5.0e-5)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    a = parser.parse_args()
    common.setup_path()
    print(f"machine: {common.machine()}", flush=True)
    work = tempfile.mkdtemp(prefix="bench_equivalence_")
    feats = os.path.join(work, "features")
    for split in ("train", "dev"):
        featurize(a.task, "dynamic", os.path.join(feats, split), a.max_seq_len, split)
    report = compare_tokenization(a, feats)
    ours = run_ours(a, feats, os.path.join(work, "ours"))
    peer = run_peer(a, ours)
    steps = min(len(ours["losses"]), len(peer["losses"]))
    gaps = [abs(x - y) for x, y in zip(ours["losses"], peer["losses"])]
    worst = max(range(steps), key=gaps.__getitem__)
    params = dict(peer["model"].named_parameters())
    weight_gap = max(float((p.detach() - params[n].detach()).abs().max()) for n, p in ours["model"].named_parameters())
    weight_scale = max(float(p.detach().abs().max()) for p in params.values())
    report += [
        f"training: {len(ours['losses'])} steps ours, {len(peer['losses'])} steps the Trainer, batch {a.batch_size}, "
        f"lr {a.lr}, dropout 0, same initial weights and examples",
        f"loss, step 1: ours {ours['losses'][0]:.6f}, Trainer {peer['losses'][0]:.6f}; last step: "
        f"ours {ours['losses'][steps - 1]:.6f}, Trainer {peer['losses'][steps - 1]:.6f}",
        f"largest loss difference: {gaps[worst]:.2e} (step {worst + 1}); mean {sum(gaps[:steps]) / steps:.2e}",
        f"largest parameter difference at the end: {weight_gap:.2e} (largest parameter magnitude {weight_scale:.2f})",
    ]
    for metric in ours["metrics"]:
        if metric in peer["metrics"]:
            report.append(f"dev {metric}: ours {ours['metrics'][metric]:.4f}, Trainer {peer['metrics'][metric]:.4f}")
    shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n".join(report))


if __name__ == "__main__":
    main()
