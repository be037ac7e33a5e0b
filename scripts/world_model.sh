#!/usr/bin/env bash
# Issue 12/13's world model and its judge, from nothing (the planning and in-model evaluation
# benchmarks need both): MetaWorld data for four tasks, the frame autoencoder, the 3000-step latent
# world model (recipes/world_model_metaworld_latent.yaml), its bundle, plain-policy rollouts that
# succeed and fail, and the judge trained on real and imagined frames. ~80 minutes on one idle core.
# Every stage is skipped when its output exists, so a cut run resumes where it stopped.
#
#   taskset -c 0 bash scripts/world_model.sh            # SEED=1 for the second training seed
#
# Then, e.g. (BENCHMARKS.md "The world model as a simulator"):
#   .venv/bin/python bench/bench_planning.py outputs/wm/bundles/latvw3k_s0 --tasks push-v3 \
#       --settings plain:n0 best_of_n:8:n0:p1 --episodes 50 --imagine-steps 2 --out outputs/plan/bench
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline OMP_NUM_THREADS=1
SEED="${SEED:-0}"
STEPS="${STEPS:-3000}"
W=outputs/wm  # the latent recipe reads its autoencoder and latent cache from here
P=outputs/plan
RUN="$W/runs/latvw3k_s$SEED"
BUNDLE="$W/bundles/latvw3k_s$SEED"
V=.venv/bin/vidact
T="button-press-topdown-v3 drawer-open-v3 door-open-v3 push-v3"

todo() {  # todo PATH WHAT: say what runs next, or that PATH already exists
    if [ -e "$1" ]; then echo "== done already: $2 ($1)"; return 1; fi
    echo "== $2 -> $1 ($(date +%H:%M))"
}

todo $W/data "training data: 25 demos per task" &&
    $V data metaworld --tasks $T --episodes 25 --out $W/data
todo $W/heldout "held-out episodes, 64 steps past success" &&
    $V data metaworld --tasks $T --episodes 6 --seed 5000 --steps-after-success 64 --out $W/heldout
todo $W/probe_data "the judge's extra episodes, 64 steps past success" &&
    $V data metaworld --tasks $T --episodes 12 --seed 7000 --steps-after-success 64 --out $W/probe_data
todo $W/ae "frame autoencoder, 1500 steps" &&
    $V autoencoder --dataset $W/data --out $W/ae --steps 1500 --batch-size 16 --threads 1
todo "$RUN/done" "latent world model, $STEPS steps, seed $SEED" &&
    $V train world_model_metaworld_latent "run_dir=$RUN" "train.steps=$STEPS" "seed=$SEED" &&
    touch "$RUN/done"
todo "$BUNDLE" "bundle" && $V export "$RUN" "$BUNDLE"
# Rollouts of the plain policy (successes and failures) for the judge, on seeds away from the
# evaluation's (1e9..).
todo "$P/rollouts_train_s$SEED" "plain-policy rollouts for the judge" &&
    $V eval "$BUNDLE" --tasks $T --workers 1 --episodes 15 --seed 2000000000 --max-steps 200 --threads 1 \
        --videos 0 --save-dataset "$P/rollouts_train_s$SEED" --out "$P/rollouts_train_s${SEED}_eval"
todo "$P/rollouts_heldout_s$SEED" "held-out plain-policy rollouts" &&
    $V eval "$BUNDLE" --tasks $T --workers 1 --episodes 6 --seed 2000000500 --max-steps 200 --threads 1 \
        --videos 0 --save-dataset "$P/rollouts_heldout_s$SEED" --out "$P/rollouts_heldout_s${SEED}_eval"
todo "$BUNDLE/judge" "judge on real and imagined frames (two chunks, every imagined frame)" &&
    $V judge "$BUNDLE" --datasets $W/data $W/probe_data "$P/rollouts_train_s$SEED"/* \
        --heldout $W/heldout "$P/rollouts_heldout_s$SEED"/* --steps 3000 --every 2 --sampler-steps 2 \
        --train-on-imagined 8 --imagine-horizon 32 --imagined-frames all --threads 1
# First frames of the evaluation's held-out scenes (seeds 1e9.., one dataset per task), for policy
# evaluation inside the model (bench/bench_world_model_eval.py --dataset $P/starts/TASK).
for task in $T; do
    todo "$P/starts/$task" "start frames of held-out seeds, $task" &&
        $V data metaworld --tasks "$task" --episodes 50 --seed 1000000000 --max-steps 1 --keep-failed \
            --out "$P/starts/$task"
done
echo "== world model and judge ready: $BUNDLE"
