"""Learning, side by side: vidact (joint video + actions), its actions-only ablation, and LeRobot's
ACT and diffusion policy, trained on the same MetaWorld demonstrations on the same machine and
evaluated closed loop on the same held-out seeds.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_learning.py \\
        --dataset outputs/quickstart/metaworld --methods vidact vidact_actions_only act \\
        --budget-minutes 13 --eval-episodes 50 --out outputs/bench_learning

Methods (each trained from scratch, one after another so they do not share the CPU):

- ``vidact``: ``recipes/quickstart_metaworld.yaml`` for ``--vidact-steps`` steps (the quickstart).
- ``vidact_actions_only``: the same recipe and steps with the video loss off (weight 0) and
  ``policy_fast`` (future frames dropped) rehearsed more often (mode weight 1.0 instead of 0.2;
  the other modes keep theirs, so future-frame tokens still enter some training sequences as
  inputs, but nothing is learned from predicting them). The table shows each one's wall clock.
- ``act`` / ``diffusion``: LeRobot's own ``lerobot-train`` with its defaults for the policy type
  (batch ``--lerobot-batch-size``, ImageNet backbone weights off: no hub here), stopped after
  ``--budget-minutes`` of wall clock; the newest checkpoint is evaluated. Diffusion samples with
  ``--diffusion-steps`` denoising steps at evaluation (LeRobot's default is 100).

Evaluation: ``vidact.deploy.sim`` (the renderer the data came from), ``--eval-episodes`` seeds per
task from ``--eval-seed`` (held out from the generator's seeds), ``--max-steps`` cap; vidact in
``policy_fast`` mode. Each method's results land in OUT/METHOD/eval/TASK/results.json, the table
in OUT/results.md. Finished stages are skipped when the script is re-run with the same OUT.
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

VIDACT = [sys.executable, "-m", "vidact.cli"]
TASKS = ["button-press-topdown-v3", "drawer-open-v3"]


def run(cmd: list[str], log: Path, env: dict, deadline_s: float | None = None) -> float:
    """Run ``cmd`` with output to ``log``; stop it (SIGINT, then SIGKILL) after ``deadline_s``."""
    start, stopped = time.perf_counter(), False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = deadline_s if stopped else time.perf_counter() - start
    if proc.returncode and not stopped:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed (exit {proc.returncode}); see {log}")
    return seconds


def train_vidact(name: str, args, out: Path, env: dict) -> dict:
    overrides = [f"run_dir={out / 'run'}", f"train.steps={args.vidact_steps}", "log.wandb=disabled",
                 f"data.sources=[{{kind: lerobot, path: {args.dataset}}}]"]
    if name == "vidact_actions_only":
        overrides += ["generative.video_loss_weight=0.0", "generative.mode_weights.policy_fast=1.0"]
    seconds = run([*VIDACT, "train", args.recipe, *overrides], out / "train.log", env)
    run([*VIDACT, "export", str(out / "run"), str(out / "policy"), "--overwrite"], out / "export.log", env)
    return {"train_seconds": seconds, "steps": args.vidact_steps, "policy": str(out / "policy")}


def train_lerobot(name: str, args, out: Path, env: dict) -> dict:
    cmd = ["lerobot-train", "--dataset.repo_id=local/" + Path(args.dataset).name, f"--dataset.root={args.dataset}",
           f"--policy.type={name}", "--policy.device=cpu", "--policy.push_to_hub=false",
           "--policy.pretrained_backbone_weights=null", f"--output_dir={out / 'run'}",
           f"--batch_size={args.lerobot_batch_size}", "--steps=1000000", f"--save_freq={args.save_every}",
           "--log_freq=10", "--num_workers=1", "--wandb.enable=false", f"--seed={args.seed}"]
    seconds = run(cmd, out / "train.log", env, deadline_s=args.budget_minutes * 60)
    ckpts = sorted((out / "run" / "checkpoints").glob("[0-9]*/pretrained_model"))
    if not ckpts:
        raise RuntimeError(f"{name}: no checkpoint within {args.budget_minutes} minutes (save every "
                           f"{args.save_every} steps); see {out / 'train.log'}")
    return {"train_seconds": seconds, "steps": int(ckpts[-1].parent.name), "policy": str(ckpts[-1])}


class LeRobotPolicy:
    """A LeRobot checkpoint behind the interface ``vidact.deploy.sim`` drives (reset, select_action)."""

    def __init__(self, path: str, diffusion_steps: int | None = None):
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        cfg = PreTrainedConfig.from_pretrained(path)
        cfg.device = "cpu"
        if diffusion_steps and hasattr(cfg, "num_inference_steps"):
            cfg.num_inference_steps = diffusion_steps
        self.policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg).eval()
        self.pre, self.post = make_pre_post_processors(cfg, pretrained_path=path)
        self.camera_keys = [k for k in cfg.input_features if k.startswith("observation.image")]
        shape = cfg.input_features[self.camera_keys[0]].shape
        self.info = {"cameras": {"recorded_size": [list(shape[1:])]}}
        self.mode = SimpleNamespace(value=f"lerobot {cfg.type}")
        self.executor = SimpleNamespace()
        self.sampler = SimpleNamespace(config=SimpleNamespace(steps=diffusion_steps))
        self.last_chunk = None

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()
    def select_action(self, obs: dict) -> np.ndarray:
        batch = {k: torch.from_numpy(obs[k]).permute(2, 0, 1).float()[None] / 255 for k in self.camera_keys}
        batch["observation.state"] = torch.from_numpy(obs["observation.state"])[None]
        batch["task"] = [obs["task"]]
        action = self.policy.select_action(self.pre(batch))
        return self.post(action)[0].numpy()


def evaluate(name: str, info: dict, args, out: Path) -> dict:
    from vidact.deploy.policy import Policy
    from vidact.deploy.sim import evaluate as run_episodes

    results = {}
    for task in args.tasks:
        folder = out / "eval" / task
        if (folder / "results.json").is_file():
            results[task] = json.loads((folder / "results.json").read_text())
            continue
        if name.startswith("vidact"):
            policy = Policy.from_pretrained(info["policy"], mode="policy_fast")
        else:
            policy = LeRobotPolicy(info["policy"], args.diffusion_steps if name == "diffusion" else None)
        results[task] = run_episodes(policy, task, args.eval_episodes, folder, seed=args.eval_seed,
                                     max_steps=args.max_steps, videos=args.videos)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="LeRobot dataset of MetaWorld demos (vidact data metaworld)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--methods", nargs="+", default=["vidact", "vidact_actions_only", "act", "diffusion"],
                   choices=["vidact", "vidact_actions_only", "act", "diffusion"])
    p.add_argument("--recipe", default="quickstart_metaworld")
    p.add_argument("--vidact-steps", type=int, default=1200)
    p.add_argument("--budget-minutes", type=float, default=13.0, help="wall clock for each LeRobot policy")
    p.add_argument("--lerobot-batch-size", type=int, default=8)
    p.add_argument("--save-every", type=int, default=25, help="LeRobot checkpoint period (steps)")
    p.add_argument("--diffusion-steps", type=int, default=10)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--eval-seed", type=int, default=None, help="first seed (default: vidact eval's held-out base)")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training (evaluation uses 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench_learning")
    args = p.parse_args()
    args.dataset = str(Path(args.dataset).resolve())
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    torch.set_num_threads(1)

    table = {}
    for name in args.methods:
        out = root / name
        out.mkdir(exist_ok=True)
        done = out / "trained.json"
        if done.is_file():
            info = json.loads(done.read_text())
        else:
            print(f"== {name}: training", flush=True)
            info = (train_vidact if name.startswith("vidact") else train_lerobot)(name, args, out, env)
            done.write_text(json.dumps(info, indent=2))
        print(f"== {name}: {info['steps']} steps in {info['train_seconds'] / 60:.1f} min; evaluating", flush=True)
        table[name] = (info, evaluate(name, info, args, out))

    lines = [f"{len(args.tasks)} tasks, {args.eval_episodes} held-out seeds each, {args.max_steps}-step cap; "
             f"dataset {args.dataset}", "",
             "| method | training | " + " | ".join(f"{t} success (Wilson 95%)" for t in args.tasks) + " |",
             "|---|---|" + "---|" * len(args.tasks)]
    for name, (info, results) in table.items():
        cells = [f"{r['successes']}/{r['episodes']} ({100 * r['wilson95'][0]:.0f}-{100 * r['wilson95'][1]:.0f}%)"
                 for r in (results[t] for t in args.tasks)]
        lines.append(f"| {name} | {info['steps']} steps, {info['train_seconds'] / 60:.1f} min | " + " | ".join(cells)
                     + " |")
    text = "\n".join(lines)
    (root / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
