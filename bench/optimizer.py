"""(j) One AdamW update of the embedded MiniLM's parameters, in torch's three implementations, sides interleaved;
then whole training steps (forward, backward, update) on RTE batches with the default and the fused one.

    python bench/optimizer.py                      # 20 timed updates each, 3 rounds: default, foreach, fused

On CPU torch's default AdamW loops over the parameter tensors, one small kernel per operation and tensor; foreach
batches the tensors per operation; fused runs one kernel over each tensor for the whole update. Every step of a
fine-tune pays one update over every parameter (the word embeddings included: their gradient is dense), whatever
the batch: with short sentences (CoLA) the update is a large share of the step. The gradients are fixed random
values, the same for every side; weight decay 0.01 on every tensor (train.py spares biases and LayerNorm: the same
work). The second table times whole steps: batches of 16 RTE pairs in length order (as grouping by length makes
them), taken in a fixed stride over the first 640 training pairs, the learning rate tiny so that the model stays
the same for every side; forward and backward timed apart from the update.
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
    print()
    whole_steps(model, args)


def rte_batches(count: int) -> list[dict]:
    """``count`` batches of 16 of RTE's first training pairs, in length order, dynamically padded."""
    import torch
    from transformers import AutoTokenizer

    common.setup_path()
    from glue_processors import GlueProcessor

    tokenizer = AutoTokenizer.from_pretrained(common.model_path())
    examples = GlueProcessor("RTE").process(f"{common.GLUE}/RTE", "train")[:16 * count]
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=128)
    order = sorted(range(len(examples)), key=lambda index: len(encoded["input_ids"][index]))
    batches = []
    for start in range(0, len(order), 16):
        rows = order[start:start + 16]
        batch = tokenizer.pad({key: [values[row] for row in rows] for key, values in encoded.items()},
                              return_tensors="pt")
        batches.append({**batch, "labels": torch.zeros(len(rows), dtype=torch.long)})
    return batches


def whole_steps(model, args: argparse.Namespace) -> None:
    import torch

    batches = rte_batches(40)
    model.train()
    times: dict[str, list[tuple[float, float]]] = {"default": [], "fused": []}
    for _ in range(args.rounds):
        for side in times:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9, **({"fused": True} if side == "fused" else {}))
            model_s = update_s = 0.0
            for step in range(args.steps):
                start = time.perf_counter()
                model(**batches[step * 7 % len(batches)]).loss.backward()
                middle = time.perf_counter()
                optimizer.step()
                optimizer.zero_grad()
                model_s += middle - start
                update_s += time.perf_counter() - middle
            times[side].append((model_s / args.steps * 1000, update_s / args.steps * 1000))
    rows = []
    for side, values in times.items():
        total = common.median([model_ms + update_ms for model_ms, update_ms in values])
        rows.append([side, f"{total:.0f} ms", f"{common.median([value[0] for value in values]):.0f} ms",
                     f"{common.median([value[1] for value in values]):.0f} ms"])
    print(common.table(rows, ["AdamW", "a whole step (median of rounds)", "forward + backward", "update"]))


if __name__ == "__main__":
    main()
