#!/usr/bin/env bash
# Issue 12/13's world model and its judge, from nothing (the planning and in-model evaluation
# benchmarks need both): MetaWorld data for four tasks, the frame autoencoder, the 3000-step latent
# world model (recipes/world_model_metaworld_latent.yaml), its bundle, plain-policy rollouts that
# succeed and fail, the judge trained on real and imagined frames, and the first frames of the
# held-out scenes; then the in-model evaluation's simulator (below). ~80 minutes on one idle core,
# ~140 with the simulator. A stage counts as done only when the file it writes last exists, so a
# cut run redoes the cut stage and resumes from there.
#
#   taskset -c 0 bash scripts/world_model.sh            # SEED=1 for the second training seed
#
# Then, e.g. (BENCHMARKS.md "The world model as a simulator"):
#   .venv/bin/python bench/bench_planning.py outputs/wm/bundles/latvw3k_s0 --tasks push-v3 \
#       --settings plain:n0 best_of_n:8:n0:p1 --episodes 50 --imagine-steps 2 --out outputs/plan/bench
#
# The last stages make the in-model evaluation's simulator (BENCHMARKS.md "The judge retrained on
# the fine-tuned model's imagination"): rollouts of the policy at steps 250, 500 and 1000 (both
# outcomes on every task), the world model fine-tuned 1000 steps on them (forward dynamics only),
# and a judge trained on that model's imagination. ~60 more minutes. Then:
#   B=outputs/wm/bundles/latvw3k_s0
#   .venv/bin/python bench/bench_world_model_eval.py --policies s250=${B}_step250 s500=${B}_step500 \
#       s1000=${B}_step1000 s1500=${B}_step1500 s2000=${B}_step2000 s3000=$B --world-model ${B}_rollouts \
#       --dataset outputs/plan/starts/TASK --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 \
#       --episodes 20 --max-steps 200 --imagine-steps 2 --noise-scale 0.0 --out outputs/plan/wm_eval
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 MUJOCO_GL=egl WANDB_MODE=offline OMP_NUM_THREADS=1
SEED="${SEED:-0}"
STEPS="${STEPS:-3000}"
W=outputs/wm  # the latent recipe reads its autoencoder and latent cache from here
P=outputs/plan
NAME="latvw$((STEPS / 1000))k_s$SEED"
RUN="$W/runs/$NAME"
BUNDLE="$W/bundles/$NAME"
V=.venv/bin/vidact
T="button-press-topdown-v3 drawer-open-v3 door-open-v3 push-v3"

todo() {  # todo MARKER WHAT: true (and says so) unless MARKER, the stage's last-written file, exists
    if [ -e "$1" ]; then echo "== done already: $2"; return 1; fi
    echo "== $2 ($(date +%H:%M))"
}

if todo $W/data/meta/vidact_generation.json "training data: 25 demos per task"; then
    $V data metaworld --tasks $T --episodes 25 --out $W/data --overwrite
fi
if todo $W/heldout/meta/vidact_generation.json "held-out episodes, 64 steps past success"; then
    $V data metaworld --tasks $T --episodes 6 --seed 5000 --steps-after-success 64 --out $W/heldout --overwrite
fi
if todo $W/probe_data/meta/vidact_generation.json "the judge's extra episodes, 64 steps past success"; then
    $V data metaworld --tasks $T --episodes 12 --seed 7000 --steps-after-success 64 --out $W/probe_data --overwrite
fi
if todo $W/ae/reconstructions.png "frame autoencoder, 1500 steps"; then
    $V autoencoder --dataset $W/data --out $W/ae --steps 1500 --batch-size 16 --threads 1
fi
if todo "$RUN/done" "latent world model, $STEPS steps, seed $SEED (resumes from its last checkpoint)"; then
    # every checkpoint kept (12 of 250 steps): the early ones are the in-model evaluation's weaker policies
    $V train world_model_metaworld_latent "run_dir=$RUN" "train.steps=$STEPS" "seed=$SEED" train.keep_last=100
    touch "$RUN/done"
fi
if todo "$BUNDLE/vidact_policy.json" "bundle"; then
    $V export "$RUN" "$BUNDLE" --overwrite
fi
# Rollouts of the plain policy (successes and failures) for the judge, on seeds away from the
# evaluation's (1e9..).
for part in train:15:2000000000 heldout:6:2000000500; do
    IFS=: read -r name episodes seed <<< "$part"
    if todo "$P/rollouts_${name}_s${SEED}_eval/benchmark.json" "plain-policy rollouts ($name)"; then
        $V eval "$BUNDLE" --tasks $T --workers 1 --episodes "$episodes" --seed "$seed" --max-steps 200 --threads 1 \
            --videos 0 --save-dataset "$P/rollouts_${name}_s$SEED" --overwrite --out "$P/rollouts_${name}_s${SEED}_eval"
    fi
done
if todo "$BUNDLE/judge/judge_eval.json" "judge on real and imagined frames (two chunks, every imagined frame)"; then
    $V judge "$BUNDLE" --datasets $W/data $W/probe_data "$P/rollouts_train_s$SEED"/* \
        --heldout $W/heldout "$P/rollouts_heldout_s$SEED"/* --steps 3000 --every 2 --sampler-steps 2 \
        --train-on-imagined 8 --imagine-horizon 32 --imagined-frames all --threads 1
fi
# First frames of the evaluation's held-out scenes (seeds 1e9.., one dataset per task), for policy
# evaluation inside the model (bench/bench_world_model_eval.py --dataset $P/starts/TASK).
for task in $T; do
    if todo "$P/starts/$task/meta/vidact_generation.json" "first frames of 50 held-out scenes, $task"; then
        $V data metaworld --tasks "$task" --episodes 50 --seed 1000000000 --max-steps 1 --keep-failed \
            --out "$P/starts/$task" --overwrite
    fi
done
# Six policies of clearly different quality for the in-model evaluation: the same run at six
# training steps (bench/bench_world_model_eval.py --policies s500=$W/bundles/${NAME}_step500 ...).
for step in 250 500 1000 1500 2000; do
    ckpt="$RUN/checkpoints/step-$(printf %08d "$step").ckpt"
    if [ -e "$ckpt" ] && todo "$W/bundles/${NAME}_step$step/vidact_policy.json" "policy bundle at step $step"; then
        $V export "$ckpt" "$W/bundles/${NAME}_step$step" --overwrite
    fi
done
# The simulator for in-model evaluation: the same rollouts from weaker checkpoints of this run
# (seeds 2e9.., away from the evaluation's), so the model sees both outcomes on every task.
for step in 250 500 1000; do
    if todo "$P/rollouts_train_step${step}_s${SEED}_eval/benchmark.json" "rollouts of the step-$step policy"; then
        $V eval "$W/bundles/${NAME}_step$step" --tasks $T --workers 1 --episodes 15 --seed 2000000000 --max-steps 200 \
            --threads 1 --videos 0 --save-dataset "$P/rollouts_train_step${step}_s$SEED" --overwrite \
            --out "$P/rollouts_train_step${step}_s${SEED}_eval"
    fi
done
RUN_R="$W/runs/${NAME}_rollouts"
if todo "$RUN_R/done" "world model fine-tuned 1000 steps on the rollouts (forward dynamics only)"; then
    SRC="{kind: lerobot, path: $W/data, name: demos, weight: 8}"
    for t in $T; do
        SRC="$SRC, {kind: lerobot, path: $P/rollouts_train_s$SEED/$t, name: final_$t, modes: [forward_dynamics]}"
        for step in 250 500 1000; do
            SRC="$SRC, {kind: lerobot, path: $P/rollouts_train_step${step}_s$SEED/$t, name: step${step}_$t, modes: [forward_dynamics]}"
        done
    done
    $V train world_model_metaworld_latent "run_dir=$RUN_R" seed="$SEED" train.steps=1000 "train.init_from=$RUN" \
        data.kind=mixture "data.sources=[$SRC]"
    touch "$RUN_R/done"
fi
if todo "${BUNDLE}_rollouts/vidact_policy.json" "bundle of the fine-tuned world model"; then
    $V export "$RUN_R" "${BUNDLE}_rollouts" --overwrite
fi
if todo "${BUNDLE}_rollouts/judge/judge_eval.json" "judge on the fine-tuned model's imagination"; then
    ROLLOUTS=("$P/rollouts_train_s$SEED"/*)
    for step in 250 500 1000; do ROLLOUTS+=("$P/rollouts_train_step${step}_s$SEED"/*); done
    $V judge "${BUNDLE}_rollouts" --datasets $W/data $W/probe_data "${ROLLOUTS[@]}" \
        --heldout $W/heldout "$P/rollouts_heldout_s$SEED"/* --steps 3000 --every 2 --sampler-steps 2 \
        --train-on-imagined 8 --imagine-horizon 32 --imagined-frames all --threads 1 --seed "$SEED"
fi
echo "== world model and judge ready: $BUNDLE (policy, planning); ${BUNDLE}_rollouts (in-model evaluation)"
