#!/usr/bin/env bash
# The main job on the embedded default: set up, generate a small MetaWorld dataset with the
# scripted experts (LeRobot's own writer), inspect it, and dry-run the model on its shapes.
# Training, export and closed-loop evaluation join this script as they land (issues 4, 6, 7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline
OUT="${OUT:-outputs/quickstart}"
TASKS="${TASKS:-button-press-topdown-v3 drawer-open-v3}"
EPISODES="${EPISODES:-5}"
mkdir -p "$OUT"

echo "== 1/3 generating MetaWorld demonstrations ($TASKS, $EPISODES episodes each) -> $OUT/metaworld"
.venv/bin/vidact data metaworld --tasks $TASKS --episodes "$EPISODES" --height 96 --width 96 \
    --out "$OUT/metaworld" --overwrite
echo "== 2/3 inspecting the dataset"
.venv/bin/vidact data inspect "$OUT/metaworld"
echo "== 3/3 dry-run of the model at the dataset's shapes"
.venv/bin/vidact dry-run dry_run_metaworld_S model.flavor=tiny model.frame_tokenizer.kind=patch \
    model.frame_tokenizer.patch_size=12
echo "quickstart: ran data generation, inspection and model dry-run; training/export/eval are not wired yet"
