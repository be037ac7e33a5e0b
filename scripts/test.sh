#!/usr/bin/env bash
# Set up (idempotent), then run the test suite. `--slow` runs only the slow tests; other
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A real (local, two-node) Slurm cluster for tests/slurm. Without one those tests skip and say
# why. When no cluster answered before this run, whatever this run starts (here, or a test's
# fixture) is stopped when it ends, however it ends; a cluster that already answered is left.
if ! bash scripts/slurm_local.sh status >/dev/null 2>&1; then
    trap 'bash scripts/slurm_local.sh stop >/dev/null 2>&1 || echo "[test] could not stop the local Slurm cluster"' EXIT
    bash scripts/slurm_local.sh start || echo "[test] no local Slurm cluster: tests/slurm will be skipped"
fi
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline
args=()
marker="not slow"
for a in "$@"; do
    if [ "$a" = "--slow" ]; then marker="slow"; else args+=("$a"); fi
done
.venv/bin/python -m pytest -m "$marker" "${args[@]}"
