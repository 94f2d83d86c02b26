"""(d) Peak memory of data.py and train.py on a synthetic MNLI-sized task (400k pairs), generated here.

    python bench/memory.py --pairs 400000 --train_steps 20

1. Writes <workdir>/MNLI/train.tsv: an MNLI-layout file (12 columns) of --pairs premise/hypothesis pairs whose
   words come from the real GLUE RTE and SST-2 text, with lengths drawn like MNLI's (premise ~22 words,
   hypothesis ~11, long tails), 3 labels.
2. Runs `python data.py` on it and polls the memory of the process and all its children every --interval s
   (psutil): peak of the summed RSS, of the summed PSS (shared pages split between processes: the honest total
   for forked workers) and of the main process alone.
3. Same for the peer: datasets.load_dataset("csv") + map(batched) of the same file (run_glue's way, one process).
4. Runs `python train.py` for --train_steps optimizer steps (batch 16, dynamic padding, length grouping) on the
   features, and a baseline process: the same imports, the same model, AdamW and --train_steps bare training
   steps on max-length batches held in memory (the model's own training footprint). train.py's peak minus the
   baseline's is what our pipeline adds.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

GIB = 2 ** 30


def generate(path: str, pairs: int, seed: int) -> None:
    import numpy as np
    words: list[str] = []
    for task, cols in (("RTE", (1, 2)), ("SST-2", (0,))):
        with open(os.path.join(common.GLUE, task, "train.tsv"), encoding="utf-8") as stream:
            next(stream)
            for line in stream:
                fields = line.rstrip("\n").split("\t")
                for c in cols:
                    words += fields[c].split()
    vocab = np.array(words, dtype=object)  # word frequencies as in real text
    rng = np.random.default_rng(seed)
    prem_len = np.clip(rng.lognormal(np.log(19), 0.55, pairs).astype(int), 2, 200)
    hyp_len = np.clip(rng.lognormal(np.log(10), 0.45, pairs).astype(int), 1, 60)
    premise_words = vocab[rng.integers(0, len(vocab), prem_len.sum())]
    hyp_words = vocab[rng.integers(0, len(vocab), hyp_len.sum())]
    labels = np.array(["contradiction", "entailment", "neutral"])[rng.integers(0, 3, pairs)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    p_end, h_end = np.cumsum(prem_len), np.cumsum(hyp_len)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")
        for i in range(pairs):
            premise = " ".join(premise_words[p_end[i] - prem_len[i]:p_end[i]])
            hypothesis = " ".join(hyp_words[h_end[i] - hyp_len[i]:h_end[i]])
            stream.write(f"{i}\t{i}\t{i}n\tsynthetic\t-\t-\t-\t-\t{premise}\t{hypothesis}\t{labels[i]}\t{labels[i]}\n")


def measure(cmd: list[str], interval: float, label: str) -> dict:
    """Run cmd, poll the memory of its process tree; return the peaks (bytes) and the wall time."""
    import psutil
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    peak = {"rss_sum": 0, "pss_sum": 0, "rss_main": 0, "processes": 1}
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        rss = pss = 0
        for p in tree:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += info.pss
            if p.pid == root.pid:
                peak["rss_main"] = max(peak["rss_main"], info.rss)
        peak["rss_sum"], peak["pss_sum"] = max(peak["rss_sum"], rss), max(peak["pss_sum"], pss)
        peak["processes"] = max(peak["processes"], len(tree))
        time.sleep(interval)
    proc.wait()
    reader.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write("".join(output)[-4000:])
        raise RuntimeError(f"{label} failed (exit {proc.returncode})")
    results = [line for line in output if line.startswith(common.MARK)]
    print(f"{label}: peak PSS (tree) {peak['pss_sum'] / GIB:.2f} GiB, RSS (tree) {peak['rss_sum'] / GIB:.2f} GiB, "
          f"RSS main {peak['rss_main'] / GIB:.2f} GiB, {peak['processes']} processes, {wall:.0f} s", flush=True)
    return {**peak, "wall_s": wall, "output": "".join(output), "reported": results}


def child_map(tsv: str, max_len: int) -> None:
    import datasets
    from transformers import AutoTokenizer
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(common.model_path())
    cache = tempfile.mkdtemp(prefix="bench_mem_cache_")
    raw = datasets.load_dataset("csv", data_files={"train": tsv}, delimiter="\t", quoting=3, cache_dir=cache)["train"]
    raw.map(lambda ex: tokenizer(ex["sentence1"], ex["sentence2"], truncation=True, max_length=max_len),
            batched=True)
    import shutil
    shutil.rmtree(cache, ignore_errors=True)


def child_baseline(steps: int, batch: int, max_len: int) -> None:
    common.setup_path()
    import torch
    from transformers import AutoModelForSequenceClassification

    import train  # noqa: F401  (the same imports as train.py)
    model = AutoModelForSequenceClassification.from_pretrained(common.model_path(), num_labels=3)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(1000, 20000, (batch, max_len), generator=generator)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
                    labels=torch.randint(0, 3, (batch,), generator=generator))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400_000)
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between memory polls")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--skip", nargs="*", default=[], choices=["map", "train"], help="measurements to leave out")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tsv", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child == "map":
        child_map(a.tsv, a.max_seq_len)
        return
    if a.child == "baseline":
        child_baseline(a.train_steps, a.batch_size, a.max_seq_len)
        return

    print(f"machine: {common.machine()}", flush=True)
    work = a.workdir or tempfile.mkdtemp(prefix="bench_memory_")
    tsv = os.path.join(work, "MNLI", "train.tsv")
    if not os.path.exists(tsv):
        start = time.perf_counter()
        generate(tsv, a.pairs, seed=0)
        print(f"generated {a.pairs} pairs in {tsv} ({os.path.getsize(tsv) / 2 ** 20:.0f} MiB, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    features = os.path.join(work, "features")
    rows = []
    ours = measure([common.PYTHON, "data.py", "--dmod.input_dir", os.path.dirname(tsv), "--dmod.output_dir", features,
                    "--dproc.task", "MNLI", "--dproc.set_type", "train", "--dproc.max_seq_len", str(a.max_seq_len)],
                   a.interval, "ours: data.py")
    summary = [line for line in ours["output"].splitlines() if "Wrote" in line]
    if summary:
        print("  " + summary[-1].split(": ", 1)[-1][:300])
    rows.append(["featurize: ours, python data.py (all workers)", ours])
    if "map" not in a.skip:
        rows.append(["featurize: peer, load_dataset + map (1 process)",
                     measure([common.PYTHON, os.path.abspath(__file__), "--child", "map", "--tsv", tsv,
                              "--max_seq_len", str(a.max_seq_len)], a.interval, "peer: datasets.map")])
    if "train" not in a.skip:
        out = tempfile.mkdtemp(prefix="bench_mem_train_")
        ours_train = measure([common.PYTHON, "train.py", "--tmod.trainpath", features, "--tmod.output_dir", out,
                              "--tmod.overwrite_output_dir", "true", "--trainer.epochs", "1",
                              "--trainer.max_train_steps_per_epoch", str(a.train_steps),
                              "--trainer.train_batch_size", str(a.batch_size), "--trainer.writers", "stdout",
                              "--trainer.disable_tqdm", "true"], a.interval, "ours: train.py")
        rows.append([f"train: ours, train.py, {a.train_steps} steps", ours_train])
        base = measure([common.PYTHON, os.path.abspath(__file__), "--child", "baseline",
                        "--train_steps", str(a.train_steps), "--batch_size", str(a.batch_size),
                        "--max_seq_len", str(a.max_seq_len)], a.interval, "baseline: model + AdamW, bare steps")
        rows.append([f"train: baseline (model, AdamW, {a.train_steps} bare max-length steps)", base])
    print()
    print(f"{a.pairs} synthetic MNLI pairs; peaks in GiB (psutil polling every {a.interval} s)")
    print(common.table([[name, f"{r['pss_sum'] / GIB:.2f}", f"{r['rss_sum'] / GIB:.2f}", f"{r['rss_main'] / GIB:.2f}",
                         str(r["processes"]), f"{r['wall_s']:.0f}"] for name, r in rows],
                       ["run", "peak PSS, all processes", "peak RSS, all processes", "peak RSS, main process",
                        "processes", "wall s"]))
    if "train" not in a.skip:
        extra = ours_train["pss_sum"] - base["pss_sum"]
        print(f"\ntrain.py above the model's own training footprint (PSS): {extra / GIB:.2f} GiB "
              f"(target <= 1.5 GB = {1.5e9 / GIB:.2f} GiB)")
    print(f"data.py peak (PSS, all processes): {ours['pss_sum'] / GIB:.2f} GiB "
          f"(target <= 1.5 GB = {1.5e9 / GIB:.2f} GiB)")


if __name__ == "__main__":
    main()
