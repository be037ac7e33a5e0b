#!/usr/bin/env bash
# Set up (idempotent), then run the test suite. `--slow` runs only the slow tests; other
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A real (local, two-node) Slurm cluster for tests/slurm; idempotent. Without one those tests
# skip and say why.
bash scripts/slurm_local.sh start || echo "[test] no local Slurm cluster: tests/slurm will be skipped"
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline
args=()
marker="not slow"
for a in "$@"; do
    if [ "$a" = "--slow" ]; then marker="slow"; else args+=("$a"); fi
done
exec .venv/bin/python -m pytest -m "$marker" "${args[@]}"
