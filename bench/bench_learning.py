"""Learning, side by side: vidact (joint video + actions), its actions-only ablation, and LeRobot's
ACT and diffusion policy, trained on the same MetaWorld demonstrations with the same wall-clock
budget on the same machine, and evaluated closed loop on the same held-out seeds, with a learning
curve (success against training minutes) for every method.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_learning.py \\
        --dataset outputs/quickstart/metaworld --budget-minutes 15 --eval-episodes 50 \\
        --curve-episodes 20 --out outputs/bench_learning

Methods (each trained from scratch, one after another on ``--train-cpus``, or with ``--side-by-side
0 1`` at the same time, each pinned to its own CPU; each for ``--budget-minutes`` of wall clock,
start-up and checkpoint writing included):

- ``vidact``: ``recipes/quickstart_metaworld.yaml`` (its cosine schedule spanning ``--vidact-steps``,
  about what the budget allows on one core), a checkpoint every ``--vidact-checkpoint-every`` steps
  and one when the budget stops it (vidact checkpoints on SIGINT; a LeRobot run keeps its last
  periodic checkpoint).
- ``vidact_actions_only``: the same with the video loss off (weight 0) and ``policy_fast`` (future
  frames dropped) rehearsed more often (mode weight 1.0 instead of 0.2; future-frame tokens still
  enter some training sequences as inputs, but nothing is learned from predicting them).
- ``act`` / ``diffusion``: LeRobot's own ``lerobot-train`` with its defaults for the policy type
  (batch ``--lerobot-batch-size``, ImageNet backbone weights off: no hub here), a checkpoint every
  ``--act-save-every`` / ``--diffusion-save-every`` steps, stopped when the budget is spent.
  Diffusion samples with ``--diffusion-steps`` denoising steps at evaluation (LeRobot's default is 100).

CPUs: training runs on ``--train-cpus`` (``taskset``; default CPU 0) while a second process
(``--eval-worker``, on ``--eval-cpus``, default the other CPUs) evaluates the checkpoints of the
methods that finished training, so evaluation never takes time from a training budget; when all
training is done a second evaluation worker takes the training CPUs. With ``--side-by-side`` every
method's evaluation waits for all training, then one worker per CPU list evaluates.

Evaluation: ``vidact.deploy.sim``'s MetaWorld set-up (the renderer the data came from), held-out
seeds from ``--eval-seed``, ``--max-steps`` cap. Every method's last checkpoint is evaluated on
``--eval-episodes`` seeds per task (the table), every earlier checkpoint on the first
``--curve-episodes`` of them (the curve, which uses the first ``--curve-episodes`` seeds of every
checkpoint, the last included). vidact runs one episode at a time in ``policy_fast`` mode through
``vidact.deploy.sim.evaluate``; LeRobot policies step ``--lerobot-eval-batch`` environments in lock
step with one batched ``select_action`` per step, as ``lerobot-eval`` does (their per-call cost at
batch 1, seconds for diffusion, would not fit 50 seeds otherwise). Results land in
OUT/METHOD/eval/step-N/TASK/results.json; OUT/results.md holds the tables, OUT/learning_curve.png
the plot. Finished stages are skipped when the script is re-run with the same OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from vidact.deploy.sim import wilson_interval

VIDACT = [sys.executable, "-m", "vidact.cli"]
TASKS = ["button-press-topdown-v3", "drawer-open-v3"]
WEAK_TASK = 0.4  # the table counts tasks below this success rate (issue 15: none below 40%)


METHODS = ["vidact", "vidact_actions_only", "act", "diffusion"]
COLORS = {"vidact": (31, 119, 180), "vidact_actions_only": (44, 160, 44), "act": (214, 39, 40),
          "diffusion": (148, 103, 189)}


RUNNING: set[subprocess.Popen] = set()  # the trainings under way (--side-by-side runs several at once)


def kill_running() -> None:
    """Stop every training under way (its whole process group)."""
    for proc in list(RUNNING):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def run(cmd: list[str], log: Path, env: dict, deadline_s: float | None = None) -> float:
    """Run ``cmd`` with output to ``log``; stop it (SIGINT, then SIGKILL) after ``deadline_s``."""
    start, stopped = time.perf_counter(), False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        RUNNING.add(proc)
        try:
            proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            stopped = True
        except BaseException:  # this script stopped (Ctrl-C, SIGTERM): no training left running behind it
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            RUNNING.discard(proc)
        if stopped:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = deadline_s if stopped else time.perf_counter() - start
    if proc.returncode and not stopped:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed (exit {proc.returncode}); see {log}")
    return seconds


def pinned(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def minutes_since(path: Path, start: float) -> float:
    return round((path.stat().st_mtime - start) / 60, 2)


def train_vidact(name: str, args, out: Path, env: dict, cpus: str) -> dict:
    overrides = [f"run_dir={out / 'run'}", f"train.steps={args.vidact_steps}", f"train.checkpoint_every={args.vidact_checkpoint_every}",
                 "train.keep_last=1000", "log.wandb=disabled", "log.media_every=0", f"seed={args.seed}",
                 f"data.sources=[{{kind: lerobot, path: {args.dataset}}}]", *args.vidact_override]
    if name == "vidact_actions_only":
        overrides += ["generative.video_loss_weight=0.0", "generative.mode_weights.policy_fast=1.0"]
    start = time.time()
    # Stopped like the LeRobot runs, at the budget counted from the process start (start-up
    # included); vidact answers SIGINT with a checkpoint at the next step boundary.
    seconds = run([*pinned(cpus), *VIDACT, "train", args.recipe, *overrides], out / "train.log", env,
                  deadline_s=args.budget_minutes * 60)
    ckpts = sorted((out / "run" / "checkpoints").glob("step-*.ckpt"))
    checkpoints = [{"step": int(c.stem.split("-")[1]), "minutes": minutes_since(c, start), "path": str(c)}
                   for c in ckpts]
    return {"train_seconds": seconds, "steps": checkpoints[-1]["step"], "checkpoints": checkpoints}


def lerobot_inputs(dataset: str) -> list[str]:
    """``--policy.input_features`` for LeRobot when the dataset holds ``observation.environment_state``
    (the simulator's object and goal positions, ``vidact data metaworld --env-state``): left to its
    defaults LeRobot feeds every observation to the policy, so ACT would train on the true positions,
    which the evaluation (camera and state, as every method gets) does not give it. Else none."""
    features = json.loads((Path(dataset) / "meta" / "info.json").read_text())["features"]
    if "observation.environment_state" not in features:
        return []
    cameras = [key for key, ft in features.items() if ft["dtype"] in ("video", "image")]
    inputs = {key: {"type": "VISUAL", "shape": [features[key]["shape"][2], *features[key]["shape"][:2]]}
              for key in cameras}  # stored height, width, channels; read channels first
    inputs["observation.state"] = {"type": "STATE", "shape": features["observation.state"]["shape"]}
    return ["--policy.input_features=" + json.dumps(inputs)]


def train_lerobot(name: str, args, out: Path, env: dict, cpus: str) -> dict:
    save_every = args.act_save_every if name == "act" else args.diffusion_save_every
    exe = Path(sys.executable).with_name("lerobot-train")  # the venv's, even when it is not on PATH
    cmd = [str(exe) if exe.is_file() else "lerobot-train", "--dataset.repo_id=local/" + Path(args.dataset).name, f"--dataset.root={args.dataset}",
           f"--policy.type={name}", "--policy.device=cpu", "--policy.push_to_hub=false",
           "--policy.pretrained_backbone_weights=null", f"--output_dir={out / 'run'}",
           f"--batch_size={args.lerobot_batch_size}", "--steps=1000000", f"--save_freq={save_every}",
           "--log_freq=10", "--num_workers=1", "--wandb.enable=false", f"--seed={args.seed}",
           *lerobot_inputs(args.dataset)]
    start = time.time()
    seconds = run([*pinned(cpus), *cmd], out / "train.log", env, deadline_s=args.budget_minutes * 60)
    ckpts = sorted((out / "run" / "checkpoints").glob("[0-9]*/pretrained_model"))
    # A save cut off by the deadline has no weights file yet: only complete checkpoints count.
    checkpoints = [{"step": int(c.parent.name), "minutes": minutes_since(c / "model.safetensors", start),
                    "path": str(c)} for c in ckpts if (c / "model.safetensors").is_file()]
    if not checkpoints:
        raise RuntimeError(f"{name}: no checkpoint within {args.budget_minutes} minutes (save every "
                           f"{save_every} steps); see {out / 'train.log'}")
    return {"train_seconds": seconds, "steps": checkpoints[-1]["step"], "checkpoints": checkpoints}


class LeRobotPolicy:
    """A LeRobot checkpoint behind the batched interface ``evaluate_batched`` drives."""

    def __init__(self, path: str, diffusion_steps: int | None = None):
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        cfg = PreTrainedConfig.from_pretrained(path)
        cfg.device = "cpu"
        unseen = [k for k in cfg.input_features if not k.startswith("observation.image") and k != "observation.state"]
        if unseen:
            raise ValueError(f"{path}: the policy takes {', '.join(unseen)} as input, which the evaluation does not "
                             "give (camera and state only): train it with --policy.input_features (bench_learning does)")
        if diffusion_steps and hasattr(cfg, "num_inference_steps"):
            cfg.num_inference_steps = diffusion_steps
        self.policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg).eval()
        self.pre, self.post = make_pre_post_processors(cfg, pretrained_path=path)
        self.camera_keys = [k for k in cfg.input_features if k.startswith("observation.image")]
        self.image_size = list(cfg.input_features[self.camera_keys[0]].shape[1:])
        self.description = f"lerobot {cfg.type}" + (f", {diffusion_steps} denoising steps" if diffusion_steps else "")

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()
    def select_actions(self, observations: list[dict]) -> np.ndarray:
        batch = {k: torch.stack([torch.from_numpy(o[k]) for o in observations]).permute(0, 3, 1, 2).float() / 255
                 for k in self.camera_keys}
        batch["observation.state"] = torch.stack([torch.from_numpy(o["observation.state"]) for o in observations])
        batch["task"] = [o["task"] for o in observations]
        return self.post(self.policy.select_action(self.pre(batch))).numpy()


def evaluate_batched(policy: LeRobotPolicy, task: str, seeds: list[int], out: Path, max_steps: int, videos: int,
                     batch: int, dataset: str) -> dict:
    """``vidact.deploy.sim.evaluate``'s episodes (same set-up, seeds, cap, success rule), ``batch``
    environments in lock step: one batched policy call per control step; an environment that
    succeeded or ran out of steps stops stepping while the others finish. The rendering and the
    state (``--state privileged``, ``--position-noise``) repeat ``dataset``'s generation, as
    ``vidact eval`` repeats them for a vidact bundle."""
    from vidact.data.webvideo import write_video
    from vidact.deploy.sim import MetaWorldEval, write_summary
    from vidact.export.package import dataset_generation

    out.mkdir(parents=True, exist_ok=True)
    height, width = policy.image_size
    gen = dataset_generation(dataset) or {"rendering": "vidact", "state": "agent", "position_noise": 0.0}
    envs = [MetaWorldEval(task, policy.camera_keys, height, width, gen["rendering"], gen["state"], gen["position_noise"])
            for _ in range(min(batch, len(seeds)))]
    records = []
    try:
        for first in range(0, len(seeds), batch):
            group, active = seeds[first:first + batch], envs[:len(seeds[first:first + batch])]
            obs = [env.reset(seed) for env, seed in zip(active, group)]
            policy.reset()
            n = len(group)
            done, success, length, frames = [False] * n, [False] * n, [0] * n, [[] for _ in range(n)]
            images = [env.rollout.render() for env in active]
            start = time.perf_counter()
            for step in range(1, max_steps + 1):
                actions = policy.select_actions([env.observation(o, im) for env, o, im in zip(active, obs, images)])
                for i, env in enumerate(active):
                    if done[i]:
                        continue
                    if first + i < videos:
                        frames[i].append(images[i][0])
                    obs[i], _, _, truncated, info = env.rollout.env.step(np.clip(actions[i].astype(np.float32), -1, 1))
                    length[i], success[i] = step, bool(info.get("success", 0.0))
                    done[i] = success[i] or truncated
                    if not done[i]:
                        images[i] = env.rollout.render()
                if all(done):
                    break
            seconds = time.perf_counter() - start
            for i, seed in enumerate(group):
                record = {"seed": seed, "success": success[i], "length": length[i], "seconds": seconds / n}
                if frames[i]:
                    record["video"] = str(write_video(out / f"episode_{first + i:03d}_seed{seed}.mp4",
                                                      np.stack(frames[i]), fps=30))
                records.append(record)
            print(f"{task}: seeds {group[0]}..{group[-1]}: {sum(success)}/{n} in {seconds:.0f} s", flush=True)
    finally:
        for env in envs:
            env.close()
    return write_summary(out, records, task, envs[0].description, max_steps, seeds, mode=policy.description,
                         batch=batch, camera_size=[height, width])


def checkpoint_dir(root: Path, method: str, ckpt: dict) -> Path:
    return root / method / "eval" / f"step-{ckpt['step']:08d}"


def curve_checkpoints(info: dict, args) -> list[dict]:
    """At most ``--curve-points`` checkpoints, evenly spaced, the last one always included."""
    ckpts = info["checkpoints"]
    n = min(len(ckpts), args.curve_points) if args.curve_points else len(ckpts)
    picks = sorted({round(i * (len(ckpts) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [len(ckpts) - 1]
    return [ckpts[i] for i in picks]


def episodes_for(info: dict, ckpt: dict, args) -> int:
    return args.eval_episodes if ckpt is info["checkpoints"][-1] else args.curve_episodes


def pending(root: Path, args) -> list[tuple[str, dict, int]]:
    """(method, checkpoint, episodes) still to evaluate, last checkpoints first, for the methods
    whose training has finished."""
    finals, curve = [], []
    for method in args.methods:
        done = root / method / "trained.json"
        if not done.is_file():
            continue
        info = json.loads(done.read_text())
        for ckpt in reversed(curve_checkpoints(info, args)):
            episodes = episodes_for(info, ckpt, args)
            missing = [t for t in args.tasks if not (checkpoint_dir(root, method, ckpt) / t / "results.json").is_file()]
            if episodes and missing:
                (finals if ckpt is info["checkpoints"][-1] else curve).append((method, ckpt, episodes))
    return finals + curve


def evaluate_checkpoint(method: str, ckpt: dict, episodes: int, root: Path, args, env: dict) -> None:
    from vidact.deploy.policy import Policy
    from vidact.deploy.sim import evaluate as run_episodes

    folder = checkpoint_dir(root, method, ckpt)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"== evaluating {method} step {ckpt['step']} ({ckpt['minutes']} min) on {episodes} seeds/task", flush=True)
    seeds = list(range(args.eval_seed, args.eval_seed + episodes))
    if method.startswith("vidact"):
        bundle = folder / "policy"
        if not (bundle / "config.json").is_file():
            run([*VIDACT, "export", ckpt["path"], str(bundle), "--overwrite"], folder / "export.log", env)
        policy = Policy.from_pretrained(bundle, mode="policy_fast")
    else:
        policy = LeRobotPolicy(ckpt["path"], args.diffusion_steps if method == "diffusion" else None)
    for task in args.tasks:
        if (folder / task / "results.json").is_file():
            continue
        if method.startswith("vidact"):
            run_episodes(policy, task, episodes, folder / task, seed=args.eval_seed, max_steps=args.max_steps,
                         videos=args.videos)
        else:
            evaluate_batched(policy, task, seeds, folder / task, args.max_steps, args.videos, args.lerobot_eval_batch,
                             args.dataset)


def eval_worker(root: Path, args, env: dict) -> None:
    """Evaluate pending checkpoints until training is done and nothing is left. With
    ``--from-end`` it takes work from the other end of the list; a worker claims an item by
    creating its folder's ``.claim`` and skips items another worker claimed or started."""
    torch.set_num_threads(1)
    while True:
        todo = pending(root, args)
        if args.from_end:
            todo = todo[::-1]
        for item in todo:
            folder = checkpoint_dir(root, item[0], item[1])
            if args.from_end and folder.is_dir() and not (folder / ".claim").is_dir():
                continue  # started by a worker that does not claim (an older run of this script)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                (folder / ".claim").mkdir()
            except FileExistsError:
                continue
            try:
                evaluate_checkpoint(*item, root, args, env)
            finally:
                (folder / ".claim").rmdir()
            break
        else:
            if (root / "training_done").is_file() and not pending(root, args):
                return
            time.sleep(10)


def success(results: dict, first: int | None = None) -> tuple[int, int]:
    episodes = results["per_episode"][:first] if first else results["per_episode"]
    return sum(e["success"] for e in episodes), len(episodes)


def load_results(root: Path, method: str, ckpt: dict, tasks: list[str]) -> dict:
    return {t: json.loads((checkpoint_dir(root, method, ckpt) / t / "results.json").read_text()) for t in tasks}


def plot_curve(curves: dict[str, list[tuple[float, float]]], budget: float, episodes: int, out: Path) -> Path:
    """Success (mean over tasks, %) against training minutes, one line per method (PIL only)."""
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 760, 420, 60, 740, 40, 370
    budget = max([budget] + [m for points in curves.values() for m, _ in points])
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    sx = lambda m: left + m / budget * (right - left)  # noqa: E731
    sy = lambda pct: bottom - pct / 100 * (bottom - top)  # noqa: E731
    for pct in range(0, 101, 25):
        draw.line([(left, sy(pct)), (right, sy(pct))], fill=(225, 225, 225))
        draw.text((left - 35, sy(pct) - 6), f"{pct}%", fill=(0, 0, 0))
    for m in range(0, int(budget) + 1, max(1, int(budget) // 5)):
        draw.text((sx(m) - 4, bottom + 6), str(m), fill=(0, 0, 0))
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, 12), f"closed-loop success (mean of tasks, first {episodes} held-out seeds) vs training minutes",
              fill=(0, 0, 0))
    draw.text(((left + right) // 2 - 60, bottom + 26), "training wall clock (min)", fill=(0, 0, 0))
    for i, (method, points) in enumerate(curves.items()):
        color = COLORS.get(method, (0, 0, 0))
        xy = [(sx(m), sy(p) + 2 * i - len(curves)) for m, p in points]  # nudged apart where lines overlap
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((left + 10, top + 8 + 14 * i), method, fill=color)
    img.save(out)
    return out


def report(root: Path, args) -> str:
    lines = [f"{len(args.tasks)} tasks, {args.max_steps}-step cap, held-out seeds from {args.eval_seed}; "
             f"budget {args.budget_minutes:g} min of training wall clock per method; dataset {args.dataset}", "",
             "| method | training (last checkpoint) | "
             + " | ".join(f"{t} (Wilson 95%)" for t in args.tasks) + " | average (Wilson 95%) | tasks below 40% |",
             "|---|---|" + "---|" * len(args.tasks) + "---|---:|"]
    curves, curve_rows = {}, []
    for method in args.methods:
        info = json.loads((root / method / "trained.json").read_text())
        last = info["checkpoints"][-1]
        results = load_results(root, method, last, args.tasks)
        cells = []
        for t in args.tasks:
            lo, hi = results[t]["wilson95"]
            cells.append(f"{results[t]['successes']}/{results[t]['episodes']} ({100 * lo:.0f}-{100 * hi:.0f}%)")
        k, n = sum(results[t]["successes"] for t in args.tasks), sum(results[t]["episodes"] for t in args.tasks)
        lo, hi = wilson_interval(k, n)
        below = sum(results[t]["successes"] < WEAK_TASK * results[t]["episodes"] for t in args.tasks)
        cells += [f"**{100 * k / n:.1f}%** ({100 * lo:.0f}-{100 * hi:.0f}%)", str(below)]
        lines.append(f"| {method} | {last['step']} steps, {last['minutes']:.1f} min | " + " | ".join(cells) + " |")
        points = []
        for ckpt in curve_checkpoints(info, args):
            if not args.curve_episodes:
                break
            res = load_results(root, method, ckpt, args.tasks)
            counts = [success(res[t], args.curve_episodes) for t in args.tasks]
            points.append((ckpt["minutes"], 100 * sum(s for s, _ in counts) / sum(n for _, n in counts)))
            curve_rows.append(f"| {method} | {ckpt['minutes']:.1f} | {ckpt['step']} | "
                              + " | ".join(f"{s}/{n}" for s, n in counts) + " |")
        curves[method] = points
    if curve_rows:
        lines += ["", f"Learning curve (first {args.curve_episodes} seeds per task of every checkpoint):", "",
                  "| method | minutes | step | " + " | ".join(args.tasks) + " |",
                  "|---|---:|---:|" + "---:|" * len(args.tasks), *curve_rows]
        plot_curve(curves, args.budget_minutes, args.curve_episodes, root / "learning_curve.png")
    return "\n".join(lines)


def combine(roots: list[Path], tasks: list[str], out: Path) -> str:
    """One per-task table over several runs of this script (training seeds): every method's last
    checkpoint, seeds pooled per method (Wilson intervals on the pooled counts), each seed's
    average beside it, the joint-vs-ablation gap on average and on the tasks where either is below
    80%, and a per-task bar chart (``out``/per_task.png)."""
    runs: dict[str, list[dict]] = {}
    for root in roots:
        for done in sorted(root.glob("*/trained.json")):
            method = done.parent.name
            last = json.loads(done.read_text())["checkpoints"][-1]
            folder = checkpoint_dir(root, method, last)
            if all((folder / t / "results.json").is_file() for t in tasks):
                runs.setdefault(method, []).append({"root": root, "last": last,
                                                    "results": load_results(root, method, last, tasks)})
            else:
                print(f"not in the table: {method} in {root} (its last checkpoint lacks some tasks' results)")
    methods = [m for m in METHODS if m in runs] + [m for m in runs if m not in METHODS]
    rate = {m: {t: sum(r["results"][t]["successes"] for r in runs[m])
                / sum(r["results"][t]["episodes"] for r in runs[m]) for t in tasks} for m in methods}
    lines = ["| task | " + " | ".join(f"{m} ({len(runs[m])} seed{'s' * (len(runs[m]) > 1)})" for m in methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for t in tasks:
        cells = []
        for m in methods:
            counts = " + ".join(f"{r['results'][t]['successes']}/{r['results'][t]['episodes']}" for r in runs[m])
            cells.append(f"{100 * rate[m][t]:.0f}% ({counts})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    cells, seeds = [], []
    for m in methods:
        k = sum(r["results"][t]["successes"] for r in runs[m] for t in tasks)
        n = sum(r["results"][t]["episodes"] for r in runs[m] for t in tasks)
        lo, hi = wilson_interval(k, n)
        cells.append(f"**{100 * k / n:.1f}%** ({100 * lo:.0f}-{100 * hi:.0f}%)")
        seeds.append(" / ".join(f"{100 * np.mean([r['results'][t]['success_rate'] for t in tasks]):.1f}%"
                                for r in runs[m]))
    lines += ["| **average** (Wilson 95%) | " + " | ".join(cells) + " |",
              "| each seed's average | " + " | ".join(seeds) + " |",
              "| tasks below 40% | " + " | ".join(str(sum(rate[m][t] < WEAK_TASK for t in tasks)) for m in methods) + " |",
              "| last checkpoint | " + " | ".join(" / ".join(f"{r['last']['step']} steps, {r['last']['minutes']:.0f} min"
                                                            for r in runs[m]) for m in methods) + " |"]
    if "vidact" in rate and "vidact_actions_only" in rate:
        joint, ablation = rate["vidact"], rate["vidact_actions_only"]
        hard = [t for t in tasks if min(joint[t], ablation[t]) < 0.8]
        gap = lambda ts: 100 * np.mean([joint[t] - ablation[t] for t in ts]) if ts else float("nan")  # noqa: E731
        lines += ["", f"Joint minus actions-only: {gap(tasks):+.1f} points on average, {gap(hard):+.1f} on the "
                  f"{len(hard)} tasks where either is below 80%."]
    plot_tasks(rate, tasks, out / "per_task.png")
    return "\n".join(lines)


def plot_tasks(rate: dict[str, dict[str, float]], tasks: list[str], out: Path) -> Path:
    """Grouped bars: success per task, one bar per method (PIL only)."""
    from PIL import Image, ImageDraw

    width, height, left, top, bottom = max(120 + 90 * len(tasks), 80 + 150 * len(rate)), 440, 60, 40, 330
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    sy = lambda pct: bottom - pct / 100 * (bottom - top)  # noqa: E731
    for pct in range(0, 101, 25):
        draw.line([(left, sy(pct)), (width - 20, sy(pct))], fill=(225, 225, 225))
        draw.text((left - 35, sy(pct) - 6), f"{pct}%", fill=(0, 0, 0))
    group = 90
    bar = (group - 20) / max(1, len(rate))
    for i, t in enumerate(tasks):
        x0 = left + 10 + i * group
        for j, (method, r) in enumerate(rate.items()):
            x = x0 + j * bar
            draw.rectangle([x, sy(100 * r[t]), x + bar - 2, bottom], fill=COLORS.get(method, (0, 0, 0)))
        name = t.removesuffix("-v3")
        for k, part in enumerate([name[:12], name[12:24]]):
            draw.text((x0, bottom + 8 + 12 * k), part, fill=(0, 0, 0))
    draw.text((left, 12), "closed-loop success per task (last checkpoint, seeds pooled)", fill=(0, 0, 0))
    for j, method in enumerate(rate):
        draw.rectangle([left + 150 * j, height - 40, left + 150 * j + 12, height - 28], fill=COLORS.get(method, (0, 0, 0)))
        draw.text((left + 150 * j + 18, height - 40), method, fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def train_method(name: str, root: Path, args, env: dict, cpus: str) -> None:
    """Train one method for the budget (skipped when OUT/NAME/trained.json exists)."""
    out = root / name
    out.mkdir(exist_ok=True)
    done = out / "trained.json"
    if not done.is_file():
        where = f" on CPU {cpus}" if cpus else ""
        print(f"== {name}: training for {args.budget_minutes:g} min{where}", flush=True)
        info = (train_vidact if name.startswith("vidact") else train_lerobot)(name, args, out, env, cpus)
        done.write_text(json.dumps(info, indent=2))
    info = json.loads(done.read_text())
    print(f"== {name}: {info['steps']} steps in {info['train_seconds'] / 60:.1f} min, "
          f"{len(info['checkpoints'])} checkpoints", flush=True)


def train_all(root: Path, args, env: dict) -> None:
    """Every method, one after another on ``--train-cpus``, or with ``--side-by-side`` at the same
    time, each on its own CPU list (a method beyond the lists waits for the first one freed)."""
    if not args.side_by_side:
        for name in args.methods:
            train_method(name, root, args, env, args.train_cpus)
        return
    import queue
    from concurrent.futures import ThreadPoolExecutor

    free: queue.Queue[str] = queue.Queue()
    for cpus in args.side_by_side:
        free.put(cpus)

    def job(name: str) -> None:
        cpus = free.get()
        try:
            train_method(name, root, args, env, cpus)
        finally:
            free.put(cpus)

    with ThreadPoolExecutor(len(args.side_by_side)) as pool:
        futures = [pool.submit(job, name) for name in args.methods]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C, SIGTERM or one method failing: stop the others' trainings too
            for future in futures:
                future.cancel()
            kill_running()
            raise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="LeRobot dataset of MetaWorld demos (vidact data metaworld)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--benchmark", default=None, metavar="MT10|MT25|MT50",
                   help="instead of --tasks: every task of this MetaWorld benchmark")
    p.add_argument("--methods", nargs="+", default=["diffusion", "act", "vidact_actions_only", "vidact"],
                   choices=METHODS, help="trained in this order (the last one's evaluation runs after all training)")
    p.add_argument("--recipe", default="quickstart_metaworld")
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training wall clock for every method")
    p.add_argument("--vidact-steps", type=int, default=900, help="vidact's schedule length (about the budget)")
    p.add_argument("--vidact-checkpoint-every", type=int, default=200)
    p.add_argument("--vidact-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for both vidact methods' training (repeatable), e.g. "
                        "model.frame_tokenizer.patch_size=8")
    p.add_argument("--lerobot-batch-size", type=int, default=8)
    p.add_argument("--act-save-every", type=int, default=60, help="LeRobot ACT checkpoint period (steps)")
    p.add_argument("--diffusion-save-every", type=int, default=25, help="LeRobot diffusion checkpoint period (steps)")
    p.add_argument("--diffusion-steps", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=50, help="seeds per task for each method's last checkpoint")
    p.add_argument("--curve-episodes", type=int, default=20, help="seeds per task for earlier checkpoints (0: none)")
    p.add_argument("--curve-points", type=int, default=5, help="checkpoints per method on the curve (0: all)")
    p.add_argument("--lerobot-eval-batch", type=int, default=25, help="environments stepped together (LeRobot)")
    p.add_argument("--eval-seed", type=int, default=None, help="first seed (default: vidact eval's held-out base)")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ncpu = os.cpu_count() or 1
    p.add_argument("--train-cpus", default="0" if ncpu > 1 else "", help="taskset CPU list for training ('': any)")
    p.add_argument("--eval-cpus", default=f"1-{ncpu - 1}" if ncpu > 1 else "", help="taskset CPU list for evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--side-by-side", nargs="+", default=None, metavar="CPUS",
                   help="train the methods at the same time, each pinned to one of these taskset CPU lists "
                        "(e.g. 0 1; more methods than lists wait for a free one), then evaluate on all of them")
    p.add_argument("--defer-eval", action="store_true", help="evaluate only when every method is trained (the "
                   "evaluation CPUs stay free meanwhile, e.g. for another seed's training)")
    p.add_argument("--out", default="outputs/bench_learning")
    p.add_argument("--combine", nargs="+", default=None, metavar="ROOT", help="only report: one per-task table "
                   "pooling the methods of these earlier --out folders (training seeds) into --out/combined.md")
    p.add_argument("--eval-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--from-end", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    from vidact.deploy.sim import EVAL_SEED_BASE

    if args.benchmark:
        from vidact.data.metaworld import benchmark_tasks

        if args.tasks != TASKS:
            p.error("pass --tasks or --benchmark, not both")
        try:
            args.tasks = benchmark_tasks(args.benchmark)
        except ValueError as e:
            p.error(str(e))

    if not args.dataset and not args.combine:
        p.error("--dataset is required (except with --combine)")
    args.eval_seed = EVAL_SEED_BASE if args.eval_seed is None else args.eval_seed
    args.dataset = args.dataset and str(Path(args.dataset).resolve())
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if args.combine:
        text = combine([Path(r) for r in args.combine], args.tasks, root)
        (root / "combined.md").write_text(text + "\n")
        print(text)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    if args.eval_worker:
        eval_worker(root, args, dict(env, OMP_NUM_THREADS="1"))
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so `run` stops its child
    (root / "training_done").unlink(missing_ok=True)
    for claim in root.glob("*/eval/*/.claim"):  # left by a killed worker
        claim.rmdir()
    worker_cmd = [sys.executable, __file__, *sys.argv[1:], "--eval-worker"]
    workers = [] if args.defer_eval or args.side_by_side else [
        subprocess.Popen([*pinned(args.eval_cpus), *worker_cmd], env=dict(env, OMP_NUM_THREADS="1"))]
    try:
        train_all(root, args, env)
    finally:
        (root / "training_done").touch()
    if args.side_by_side:  # every training CPU list now evaluates, alternately from either end of the list
        workers += [subprocess.Popen([*pinned(cpus), *worker_cmd, *["--from-end"] * (i % 2)],
                                     env=dict(env, OMP_NUM_THREADS="1")) for i, cpus in enumerate(args.side_by_side)]
    else:
        if args.defer_eval:
            workers.append(subprocess.Popen([*pinned(args.eval_cpus), *worker_cmd], env=dict(env, OMP_NUM_THREADS="1")))
        if args.train_cpus:  # the training CPUs are free now: a second worker takes work from the other end
            workers.append(subprocess.Popen([*pinned(args.train_cpus), *worker_cmd, "--from-end"],
                                            env=dict(env, OMP_NUM_THREADS="1")))
    if any([w.wait() for w in workers]):
        raise SystemExit("an evaluation worker failed; see the output above")
    text = report(root, args)
    (root / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
