#!/usr/bin/env bash
# Issue 18's GPU checks (one H200, ~6 minutes): the bf16 training step of flavors B and L at batch
# 256 under each kernel choice (bench_model.py --variants), the step's kernels by GPU time, and chunk
# latency eager against one CUDA graph. Run from the repository root on a CUDA machine:
#
#   OUT=runs/gpu18 bash scripts/gpu_check_18.sh
set -u
OUT=${OUT:-runs/gpu18}
mkdir -p "$OUT"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH=. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
B="$PY bench/bench_model.py --device cuda --precision bf16 --peak-tflops 989"
run() {  # run NAME LIMIT CMD...
  local name=$1 limit=$2; shift 2; local t0=$SECONDS
  echo "=== $name: $*"
  timeout "$limit" "$@" 2>&1 | grep -v -i "warn" | tee "$OUT/$name.txt" | grep -v "^\s*$" | tail -n 40
  echo "CHECK $name ${PIPESTATUS[0]} $((SECONDS - t0))s"
}
nvidia-smi -L
run train_eager 200 $B --flavors B L --batch-size 256 --steps 8 --latency-reps 0 --variants base norms norms+gather norms+gather+flex
run latency 90 $B --flavors tiny S B L --batch-size 8 --steps 2 --latency-reps 20 --variants norms+gather
run train_compiled 240 $B --flavors B L --batch-size 256 --steps 8 --latency-reps 0 --variants norms+gather+flex+compile
run profile 60 $B --flavors B --batch-size 256 --steps 3 --profile --variants norms+gather
