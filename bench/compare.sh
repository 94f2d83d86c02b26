#!/usr/bin/env bash
# The comparison of docs/results.md, "Is a smaller model worse?": the embedded all-MiniLM-L6-v2 against the same
# model cut to its first 3 layers, on RTE, MRPC, STS-B and CoLA, 3 seeds each, the same settings for both
# (benchmark.yaml's, but 2 epochs on every task, to keep the 24 runs short on 2 CPU cores), the smaller one again
# with --restarts 2, then `benchmark.py --compare` into bench/compare/comparison.{md,json,png}. Resumable: the same
# command picks up where a stopped one left off.
#   bash bench/compare.sh [GLUE_DIR]     (GLUE_DIR defaults to ../shared/glue_data; python download_glue.py fetches it)
set -euo pipefail
cd "$(dirname "$0")/.."
glue=${1:-../shared/glue_data}
python=${PYTHON:-.venv/bin/python}
small=bench/models/all-MiniLM-L3

# The smaller variant: the first 3 of the 6 layers, the embeddings and the tokenizer unchanged (from_pretrained
# with num_hidden_layers=3 loads layers 0-2 and ignores 3-5).
if [ ! -f "$small/model.safetensors" ]; then
  "$python" - "$small" <<'EOF'
import sys
from transformers import AutoModel, AutoTokenizer
from glue_support.embedded_model import resolve
full = resolve("sentence-transformers/all-MiniLM-L6-v2")
AutoModel.from_pretrained(full, num_hidden_layers=3).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(full).save_pretrained(sys.argv[1])
EOF
fi

settings=(--tasks RTE,MRPC,STS-B,CoLA --seeds 3 --data_dir "$glue"
          --rte.epochs 2 --mrpc.epochs 2 --stsb.epochs 2 --cola.epochs 2)
"$python" benchmark.py "${settings[@]}" --model "$small" --output_dir bench/compare/minilm-l3
"$python" benchmark.py "${settings[@]}" --model sentence-transformers/all-MiniLM-L6-v2 --output_dir bench/compare/minilm-l6
# BERT's random restarts on the smaller model: its finished runs reused (a copy), each degenerate one run again with
# the next unused seed, up to 2 restarts per task
[ -d bench/compare/minilm-l3-restarts ] || cp -r bench/compare/minilm-l3 bench/compare/minilm-l3-restarts
"$python" benchmark.py "${settings[@]}" --model "$small" --output_dir bench/compare/minilm-l3-restarts --restarts 2
"$python" benchmark.py --compare bench/compare/minilm-l6,bench/compare/minilm-l3,bench/compare/minilm-l3-restarts \
  --compare_dir bench/compare
