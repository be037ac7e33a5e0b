#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine:
#   set up -> generate MetaWorld expert demos (LeRobot's writer) -> train vidact -> export a policy
#   bundle -> drive the simulated arm closed-loop -> report (success rates, curves, rollout videos).
# Sizes come from the environment; the defaults target ~20-25 minutes on a 2-core CPU:
#   TASKS, EPISODES (demos per task), STEPS (training steps), EVAL_EPISODES, OUT
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline
OUT="${OUT:-outputs/quickstart}"
TASKS="${TASKS:-button-press-topdown-v3 drawer-open-v3}"
EPISODES="${EPISODES:-25}"
STEPS="${STEPS:-1200}"
EVAL_EPISODES="${EVAL_EPISODES:-10}"
VIDACT=.venv/bin/vidact
mkdir -p "$OUT"

echo "== 1/5 generating MetaWorld demonstrations ($TASKS; $EPISODES successful episodes each)"
$VIDACT data metaworld --tasks $TASKS --episodes "$EPISODES" --height 96 --width 96 \
    --out "$OUT/metaworld" --overwrite
$VIDACT data inspect "$OUT/metaworld"

echo "== 2/5 training ($STEPS steps; resumes if interrupted)"
$VIDACT train quickstart_metaworld "run_dir=$OUT/run" "train.steps=$STEPS" \
    "data.sources=[{kind: lerobot, path: $OUT/metaworld}]"

echo "== 3/5 exporting the policy bundle"
$VIDACT export "$OUT/run" "$OUT/policy"

echo "== 4/5 closed-loop evaluation on held-out seeds"
evals=()
for task in $TASKS; do
    $VIDACT eval "$OUT/policy" --env metaworld --task "$task" --episodes "$EVAL_EPISODES" --mode policy \
        --max-steps 200 --videos 3 --threads 1 --out "$OUT/eval/$task"
    evals+=("$OUT/eval/$task")
done

echo "== 5/5 report"
$VIDACT report "$OUT/run" "${evals[@]}" --out "$OUT"
cat "$OUT/report.md"
