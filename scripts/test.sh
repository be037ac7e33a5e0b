#!/usr/bin/env bash
# Set up (idempotent), then run the test suite. `--slow` runs only the slow tests; other
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A real (local, two-node) Slurm cluster for tests/slurm. Without one those tests skip and say
# why. One this run started is stopped when the tests end; a cluster that already answered is left.
started_slurm=0
if bash scripts/slurm_local.sh status >/dev/null 2>&1; then
    :
elif bash scripts/slurm_local.sh start; then
    started_slurm=1
else
    echo "[test] no local Slurm cluster: tests/slurm will be skipped"
fi
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline
args=()
marker="not slow"
for a in "$@"; do
    if [ "$a" = "--slow" ]; then marker="slow"; else args+=("$a"); fi
done
rc=0
.venv/bin/python -m pytest -m "$marker" "${args[@]}" || rc=$?
if [ "$started_slurm" = 1 ]; then
    bash scripts/slurm_local.sh stop >/dev/null 2>&1 || echo "[test] could not stop the local Slurm cluster"
fi
exit "$rc"
