"""Does video pretraining pay? Pretrain on action-free video of OTHER MetaWorld tasks (a stand-in for
web video), finetune on a few demonstrations of the evaluation tasks, and compare with training
from scratch on the same few demonstrations (same recipe, steps and seed). Issue 7.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_pretraining.py \\
        --pretrain-episodes 15 --pretrain-steps 600 --demos 5 --finetune-steps 600 \\
        --eval-episodes 20 --heldout outputs/exp/heldout --out outputs/pretraining/main

Stages (each skipped when its output is already in --out, so an interrupted run resumes):

1. data: ``vidact data metaworld`` for ``--pretrain-tasks`` (``--pretrain-episodes`` each,
   ``--pretrain-seed``) with ``--video-out``: the action-free mp4s + manifest.jsonl are the
   pretraining input (its LeRobot dataset is not used); and ``--demos`` demos per eval task
   (``--tasks``, ``--demo-seed``), the finetuning data. 96x96, camera corner2.
2. pretrain: ``recipes/pretrain_metaworld_video.yaml`` (``data.kind: webvideo``, video mode only) for
   ``--pretrain-steps``.
3. finetune / scratch: ``recipes/finetune_metaworld_few.yaml`` on the demos for ``--finetune-steps``,
   with ``train.init_from`` = the pretraining run / without it.
4. each arm: ``vidact export``, ``vidact eval`` (policy_fast, held-out seeds, ``--max-steps`` cap) per
   task, and ``bench/bench_video.py`` on ``--heldout`` (imagined-future pixel MSE).

Every vidact run gets ``model.video_prediction=x0 model.video_residual=true`` (as the quickstart).
The table lands in OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import TASKS, VIDACT, run  # noqa: E402

PRETRAIN_TASKS = ["button-press-v3", "drawer-close-v3", "reach-v3", "door-open-v3"]
MODEL_OVERRIDES = ["model.video_prediction=x0", "model.video_residual=true"]


def stage(out: Path, name: str, fn) -> dict:
    """Run ``fn() -> dict`` once; its result is kept in OUT/NAME.json and reused on re-runs."""
    done = out / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    print(f"== {name}", flush=True)
    info = fn()
    done.write_text(json.dumps(info, indent=2))
    return info


def check_settings(root: Path, args, keys: tuple[str, ...]) -> None:
    """Finished stages are reused on a re-run, but only with the settings they were made with: the
    ``keys`` of ``args`` are kept in ROOT/settings.json and a re-run that changes one stops."""
    settings = {k: getattr(args, k) for k in keys}
    saved = root / "settings.json"
    if saved.is_file():
        before = json.loads(saved.read_text())
        changed = [f"--{k.replace('_', '-')} {before[k]} -> {v}" for k, v in settings.items()
                   if k in before and before[k] != v]
        if changed:
            sys.exit(f"{root} was made with other settings ({'; '.join(changed)}): pass another --out or the same "
                     "settings")
    saved.write_text(json.dumps(settings, indent=2))


def make_data(tasks, episodes, seed, out: Path, log: Path, env, video_out: Path | None = None) -> dict:
    cmd = [*VIDACT, "data", "metaworld", "--tasks", *tasks, "--episodes", str(episodes), "--seed", str(seed),
           "--height", "96", "--width", "96", "--out", str(out), "--overwrite"]
    if video_out is not None:
        cmd += ["--video-out", str(video_out)]
    seconds = run(cmd, log, env)
    return {"tasks": tasks, "episodes": episodes, "seed": seed, "dataset": str(out), "seconds": seconds,
            "manifest": str(video_out / "manifest.jsonl") if video_out else None}


def train(recipe: str, run_dir: Path, steps: int, overrides: list[str], log: Path, env) -> dict:
    cmd = [*VIDACT, "train", recipe, f"run_dir={run_dir}", f"train.steps={steps}", "log.wandb=disabled",
           *MODEL_OVERRIDES, *overrides]
    seconds = run(cmd, log, env)
    return {"run_dir": str(run_dir), "steps": steps, "train_seconds": seconds}


def noise_suffix(noise_scale: float | None, eval_seed: int | None = None) -> str:
    """Folder and file suffix of an evaluation at another action-noise temperature or from another
    first held-out seed ("" at the bundle's temperature and ``vidact eval``'s default seeds)."""
    noise = "" if noise_scale is None else f"_noise{noise_scale:g}"
    return noise + ("" if eval_seed is None else f"_seed{eval_seed}")


def evaluate_arm(arm: Path, args, env) -> dict:
    """Export and evaluate ``arm``; with ``args.noise_scale`` / ``args.eval_seed`` (when set) at
    that action-noise temperature / from that first seed, into ``eval_noiseS_seedN/`` beside the
    default ``eval/``."""
    results = {}
    bundle = arm / "policy"
    if not (bundle / "model.safetensors").is_file():
        run([*VIDACT, "export", str(arm / "run"), str(bundle), "--overwrite"], arm / "export.log", env)
    noise, first = getattr(args, "noise_scale", None), getattr(args, "eval_seed", None)
    flags = ([] if noise is None else ["--noise-scale", str(noise)]) + ([] if first is None else ["--seed", str(first)])
    suffix = noise_suffix(noise, first)
    for task in args.tasks:
        folder = arm / f"eval{suffix}" / task
        done = folder / "results.json"
        if not done.is_file() or json.loads(done.read_text())["episodes"] != args.eval_episodes:
            print(f"== {arm.name}: eval {task}", flush=True)
            run([*VIDACT, "eval", str(bundle), "--env", "metaworld", "--task", task, "--episodes",
                 str(args.eval_episodes), "--mode", "policy_fast", "--max-steps", str(args.max_steps),
                 "--threads", "1", "--videos", str(args.videos), "--out", str(folder), *flags],
                arm / f"eval{suffix}_{task}.log", env)
        results[task] = json.loads((folder / "results.json").read_text())
    video = arm / "bench_video"
    if args.heldout and not (video / "results.json").is_file():
        print(f"== {arm.name}: bench_video", flush=True)
        run([sys.executable, str(Path(__file__).resolve().parent / "bench_video.py"), str(bundle), args.heldout,
             "--windows", str(args.windows), "--threads", "1", "--out", str(video)], arm / "bench_video.log", env)
    if (video / "results.json").is_file():
        results["video"] = json.loads((video / "results.json").read_text())
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=TASKS, help="evaluation (and finetuning) tasks")
    p.add_argument("--pretrain-tasks", nargs="+", default=PRETRAIN_TASKS, help="tasks whose videos pretrain")
    p.add_argument("--pretrain-episodes", type=int, default=15, help="videos per pretraining task")
    p.add_argument("--pretrain-seed", type=int, default=2000)
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--clips-per-video", type=int, default=8, help="manifest entries per pretraining video")
    p.add_argument("--pretrain-recipe", default="pretrain_metaworld_video")
    p.add_argument("--demos", type=int, default=5, help="finetuning demos per evaluation task")
    p.add_argument("--demo-seed", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=600, help="finetune and scratch alike")
    p.add_argument("--finetune-recipe", default="finetune_metaworld_few")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--videos", type=int, default=1, help="rollout mp4s per task and arm")
    p.add_argument("--heldout", default="outputs/exp/heldout",
                   help="held-out LeRobot dataset of the eval tasks for bench_video.py ('' to skip)")
    p.add_argument("--windows", type=int, default=48)
    p.add_argument("--threads", type=int, default=1, help="torch threads for every stage")
    p.add_argument("--out", default="outputs/pretraining/main")
    args = p.parse_args()
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.heldout:
        args.heldout = str(Path(args.heldout).resolve())
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    (root / "data").mkdir(exist_ok=True)

    video = stage(root, "data_pretrain", lambda: make_data(
        args.pretrain_tasks, args.pretrain_episodes, args.pretrain_seed, root / "data" / "pretrain_robot",
        root / "data" / "pretrain.log", env, video_out=root / "data" / "pretrain_video"))
    demos = stage(root, "data_finetune", lambda: make_data(
        args.tasks, args.demos, args.demo_seed, root / "data" / "finetune", root / "data" / "finetune.log", env))

    arms = {"pretrain": root / "pretrain", "finetune": root / "finetune", "scratch": root / "scratch"}
    for folder in arms.values():
        folder.mkdir(exist_ok=True)
    # The web-video loader draws one clip per manifest entry per epoch and drops the last partial
    # batch: list each video --clips-per-video times (each copy draws its own clip start), so an
    # epoch holds several batches (with fewer entries than the batch size it would hold none).
    clips = Path(video["manifest"]).with_name("manifest_clips.jsonl")
    entries = Path(video["manifest"]).read_text().splitlines()
    clips.write_text("".join(line + "\n" for line in entries for _ in range(args.clips_per_video)))
    pre = stage(root, "pretrain", lambda: train(
        args.pretrain_recipe, arms["pretrain"] / "run", args.pretrain_steps,
        [f"data.sources=[{{kind: webvideo, path: {clips}, fps: 80.0, fit: resize}}]"],
        arms["pretrain"] / "train.log", env))
    data_override = f"data.sources=[{{kind: lerobot, path: {demos['dataset']}}}]"
    trained = {
        "finetune": stage(root, "finetune", lambda: train(
            args.finetune_recipe, arms["finetune"] / "run", args.finetune_steps,
            [data_override, f"train.init_from={pre['run_dir']}"], arms["finetune"] / "train.log", env)),
        "scratch": stage(root, "scratch", lambda: train(
            args.finetune_recipe, arms["scratch"] / "run", args.finetune_steps, [data_override],
            arms["scratch"] / "train.log", env)),
    }
    init_report = [line for line in (arms["finetune"] / "train.log").read_text().splitlines()
                   if line.startswith("init_from ")]
    results = {name: evaluate_arm(arms[name], args, env) for name in trained}

    def cell(r: dict) -> str:
        return f"{r['successes']}/{r['episodes']} ({100 * r['wilson95'][0]:.0f}-{100 * r['wilson95'][1]:.0f}%)"

    def mse(r: dict, key: str) -> str:
        return f"{r['video'][key]['mse']:.4f}" if "video" in r else "-"

    lines = [f"pretraining: {video['episodes']} action-free videos x {len(args.pretrain_tasks)} tasks "
             f"({', '.join(args.pretrain_tasks)}); finetuning: {demos['episodes']} demos x {len(args.tasks)} tasks "
             f"(seed {demos['seed']}); eval: {args.eval_episodes} held-out seeds per task, policy_fast, "
             f"{args.max_steps}-step cap; imagined-future MSE: bench_video.py, {args.windows} windows of "
             f"{args.heldout} (policy mode; forward_dynamics in brackets)",
             *(f"{line}" for line in init_report), "",
             "| arm | pretraining | finetune | " + " | ".join(f"{t} success (Wilson 95%)" for t in args.tasks)
             + " | imagined-future MSE |",
             "|---|---|---|" + "---|" * len(args.tasks) + "---:|"]
    for name, info in trained.items():
        r = results[name]
        pre_cell = f"{pre['steps']} steps, {pre['train_seconds'] / 60:.1f} min" if name == "finetune" else "none"
        lines.append(f"| {name} | {pre_cell} | {info['steps']} steps, {info['train_seconds'] / 60:.1f} min | "
                     + " | ".join(cell(r[t]) for t in args.tasks)
                     + f" | {mse(r, 'vidact policy')} ({mse(r, 'vidact forward_dynamics')}) |")
    any_video = next((r for r in results.values() if "video" in r), None)
    if any_video:
        lines += ["", f"Trivial predictors on the same windows: copy last observed frame "
                      f"{any_video['video']['copy last observed frame']['mse']:.4f}, mean future frame "
                      f"{any_video['video']['mean future frame']['mse']:.4f}."]
    text = "\n".join(lines)
    (root / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
