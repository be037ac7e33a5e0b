#!/usr/bin/env bash
# GPU checks: bf16 training through Lightning with every strategy (single device, DeepSpeed ZeRO-2
# and ZeRO-3, FSDP), a ZeRO-3 resume and export, the exported policy on the GPU against the CPU, and
# the throughput / scaling benchmarks. Run on a CUDA machine from the repository root:
#
#   bash scripts/gpu_check.sh            # uses .venv/bin/python when present, else python3
#
# Everything is written to $OUT (default runs/gpu_check); the summary lines start with "CHECK".
set -u
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RUNS=${RUNS:-/tmp/vidact_gpu_runs}
rm -rf "$RUNS"; mkdir -p "$RUNS"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PEAK=${PEAK:-989}  # dense bf16 TFLOP/s of H100/H200 SXM (datasheet)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

step() {  # step NAME TIMEOUT CMD...: run, report rc and seconds, keep going on failure
  # Full output goes to $OUT/steps.log; the console gets its last lines (progress bars folded).
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$OUT/steps.log"
  timeout "$limit" "$@" > "$RUNS/$name.log" 2>&1
  local rc=$?
  tr '\r' '\n' < "$RUNS/$name.log" | grep -v "^Epoch .*it/s" | tee -a "$OUT/steps.log" | grep -v "^\s*$" | tail -n "${TAIL:-8}"
  echo "CHECK $name rc=$rc $((SECONDS - t0))s"
}

nvidia-smi -L
$PY -c "import torch, lightning, deepspeed; print('torch', torch.__version__, 'lightning', lightning.__version__,
'deepspeed', deepspeed.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"

train() {  # train NAME STRATEGY [overrides...]
  local name=$1 strategy=$2; shift 2
  step "train_$name" 240 $PY -m vidact.cli train debug_sliding_square run_dir="$RUNS/$name" \
    train.accelerator="${ACCEL:-gpu}" train.devices=1 train.strategy="$strategy" train.precision=auto \
    train.log_every=10 train.checkpoint_every=20 train.keep_last=2 "$@"
  local csv
  csv=$(ls "$RUNS/$name"/*.csv "$RUNS/$name"/*/metrics.csv 2>/dev/null | head -1)
  [ -n "$csv" ] && $PY - "$csv" "$name" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("train/loss")]
if rows:
    print(f"CHECK {sys.argv[2]} loss first {rows[0]['train/loss']} last {rows[-1]['train/loss']} "
          f"(step {rows[-1].get('step')}), rows {len(rows)}")
EOF
}

want() { [[ " ${SECTIONS:-train export bench scaling compiled} " == *" $1 "* ]]; }

if want train; then
# 1. bf16 on one GPU, the full sliding-square recipe (300 steps): does it learn in bf16?
train bf16_single auto
# 2. DeepSpeed through Lightning's own DeepSpeedStrategy, ZeRO-2 and ZeRO-3; FSDP.
train zero2 deepspeed_zero2 train.steps=40
train zero3 deepspeed_zero3 train.steps=40
train fsdp fsdp train.steps=40
# 3. ZeRO-3 resume: the 40-step run continues to 60 from its newest checkpoint.
train zero3 deepspeed_zero3 train.steps=60
ls -la "$RUNS/zero3/checkpoints" 2>&1 | head -20
grep -h "resuming from\|starting from scratch\|unreadable" "$RUNS"/train_zero3.log "$OUT/steps.log" 2>/dev/null | tail -3
step consolidate_zero3 120 $PY -c "
from vidact.export.consolidate import consolidate
m = consolidate('$RUNS/zero3')
print('CHECK zero3 consolidated: step', m.global_step, 'tensors', len(m.state_dict), 'ema', m.used_ema)"
fi
if want export; then
# 4. Export the ZeRO-3 run and act with the bundle on the GPU and on the CPU, same observation and seed.
step export_zero3 120 $PY -m vidact.cli export "$RUNS/zero3" "$RUNS/bundle_zero3"
step policy_gpu_vs_cpu 120 $PY - "$RUNS/bundle_zero3" <<'EOF'
import sys, time
import numpy as np
import torch
from vidact.deploy.policy import Policy
out = {}
for device in ("cuda", "cpu"):
    policy = Policy.from_pretrained(sys.argv[1], device=device, seed=0)
    c = policy.config
    rng = np.random.default_rng(0)
    obs = {key: rng.integers(0, 255, (c.height, c.width, c.channels), dtype=np.uint8) for key in policy.camera_keys}
    obs[policy.state_key] = rng.standard_normal(c.state_dim).astype(np.float32)
    obs["task"] = "move the square"
    chunk = policy.predict_chunk(obs, seed=0)
    actions = np.asarray(chunk.actions if hasattr(chunk, "actions") else chunk)
    t0 = time.perf_counter()
    for _ in range(10):
        policy.predict_chunk(obs, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"CHECK policy {device}: chunk {actions.shape}, {1000 * (time.perf_counter() - t0) / 10:.1f} ms/chunk")
    out[device] = actions
print(f"CHECK policy cuda vs cpu max |diff| {np.abs(out['cuda'] - out['cpu']).max():.2e}")
EOF
fi
# 5. Throughput per flavor in bf16, utilization against the measured bf16 matmul and the card's peak,
#    then how step time and memory grow with resolution, frames and chunk length.
want bench && step bench_bf16 150 $PY bench/bench_model.py --device cuda --precision bf16 --peak-tflops "$PEAK" \
  --flavors tiny S B L --batch-size 64 --steps 20 --latency-reps 10
want scaling && step bench_scaling 120 $PY bench/bench_model.py --device cuda --precision bf16 --flavors B --batch-size 32 \
  --steps 10 --latency-reps 0 --sweep size=96,144,192,240 history=1,2,4,8 chunk=8,16,32,64 future_frames=1,2,4
want compiled && step bench_compiled 100 $PY bench/bench_model.py --device cuda --precision bf16 --peak-tflops "$PEAK" --compile \
  --flavors B L --batch-size 64 --steps 20 --latency-reps 0
want bigbatch && step bench_bigbatch 100 $PY bench/bench_model.py --device cuda --precision bf16 --peak-tflops "$PEAK" \
  --flavors B L --batch-size 256 --steps 10 --latency-reps 0
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
echo "CHECK done"
