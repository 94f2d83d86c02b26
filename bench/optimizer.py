"""(j) One AdamW update of the embedded MiniLM's parameters, in torch's three implementations, sides interleaved.

    python bench/optimizer.py                      # 20 timed updates each, 3 rounds: default, foreach, fused

On CPU torch's default AdamW loops over the parameter tensors, one small kernel per operation and tensor; foreach
batches the tensors per operation; fused runs one kernel over each tensor for the whole update. Every step of a
fine-tune pays one update over every parameter (the word embeddings included: their gradient is dense), whatever
the batch: with short sentences (CoLA) the update is a large share of the step. The gradients are fixed random
values, the same for every side; weight decay 0.01 on every tensor (train.py spares biases and LayerNorm: the same
work). The model's forward and backward are not part of it: bench/training.py times whole steps.
"""
from __future__ import annotations

import argparse
import time

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed updates per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForSequenceClassification

    print(f"machine: {common.machine()}", flush=True)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=2)
    parameters = list(model.parameters())
    generator = torch.Generator().manual_seed(0)
    for parameter in parameters:
        parameter.grad = torch.randn(parameter.shape, generator=generator) * 1e-3
    print(f"{sum(parameter.numel() for parameter in parameters) / 1e6:.1f}M parameters in {len(parameters)} tensors, "
          f"{torch.get_num_threads()} threads", flush=True)
    sides = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    times: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, options in sides.items():
            optimizer = torch.optim.AdamW(parameters, lr=5e-5, weight_decay=0.01, **options)
            for _ in range(3):  # the state allocated, the kernels warm
                optimizer.step()
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            times[side].append((time.perf_counter() - start) / args.steps * 1000)
    rows = [[side, " / ".join(f"{value:.1f}" for value in values), f"{common.median(values):.1f} ms",
             f"{common.median(times['default']) / common.median(values):.2f}x"] for side, values in times.items()]
    print(common.table(rows, ["AdamW", "ms an update, each round", "median", "default / this (time)"]))


if __name__ == "__main__":
    main()
