"""``vidact scene-encoder RECIPE --dataset DIR --out DIR [key=value ...]``: pretrain a recipe's
observation encoder and its scene-state head, alone, to read the scene (the objects' and the goals'
positions, ``observation.environment_state``) from single frames.

The policy then starts from them (``train.init_from=OUT``, usually with
``train.freeze=[obs_encoder,env_state_head]``). The recipe (with the same overrides as the policy
run) must give the encoder its own head: ``model.obs_encoder.kind`` set, ``model.env_state_dim``
> 0 and ``model.env_state_source=encoder``. Only the encoder and the head are trained, so a step
costs the encoder's forward and backward and nothing of the policy's transformer: on one CPU core
0.21 s a step of batch 64 for the MT10 recipe's ViT, against 2.4 s for the whole model on the same
frames (BENCHMARKS.md "The encoder pretrained alone"). The
natural data is many reset scenes (``vidact data metaworld --max-steps 1 --keep-failed
--env-state``: one frame per scene, a reset and a render each, no demonstration).

Writes ``OUT/model.safetensors`` (only ``obs_encoder.*`` and ``env_state_head.*``; the head's
normalization statistics are the training targets') and ``OUT/scene_encoder.json`` (the settings
and, with ``--heldout``, the error in cm at the held-out episodes' first frames, beside each task's
mean: what a reader blind to the picture scores).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vidact.errors import ConfigError, run_command


def load_frames(root: str, model_cfg, every: int) -> dict:
    """Every ``every``-th step of every episode (each episode's first included; ``every=0``: the
    first frames only): frames [N,V,C,H,W] uint8, the scene state [N,E], the instruction and
    whether it is a first frame, and its episode."""
    from vidact.data.robot import RobotDataset

    dataset = RobotDataset(root, model_cfg)
    frames, target, task, first, episode = [], [], [], [], []
    for ep in sorted(dataset.episode_spans):
        data = dataset.episode(ep)
        if "env_state" not in data:
            raise ValueError(f"{root} has no observation.environment_state (generate it with "
                             f"`vidact data metaworld --env-state`)")
        steps = np.arange(0, len(data["env_state"]), every) if every else np.zeros(1, int)
        frames.append((data["frames"][steps] * 255).round().to(torch.uint8))
        target.append(data["env_state"][steps].float())
        task += [data["text"]] * len(steps)
        first += [s == 0 for s in steps]
        episode += [ep] * len(steps)
    return {"frames": torch.cat(frames), "target": torch.cat(target), "task": np.array(task), "first": np.array(first),
            "episode": np.array(episode)}


class SceneReader(nn.Module):
    """The policy's own ``obs_encoder`` and ``env_state_head`` (the same names, so the weights load
    into a VidAct with ``train.init_from``), read the way the policy reads them: the frame's views'
    encoder tokens, view by view, into the head."""

    def __init__(self, model_cfg):
        super().__init__()
        from vidact.models.vidact import EnvStateHead, build_obs_encoder

        self.obs_encoder = build_obs_encoder(model_cfg)
        self.env_state_head = EnvStateHead(self.obs_encoder.token_dim, model_cfg.env_state_dim, views=model_cfg.views)

    def forward(self, frames: Tensor) -> Tensor:
        """[B,V,C,H,W] in [0,1] -> [B,E] in the head's normalized units."""
        return self.env_state_head(self.obs_encoder.encode(frames).flatten(1, 2))


def check_config(model_cfg) -> None:
    if model_cfg.obs_encoder.kind in (None, "none", "tokenizer"):
        raise ConfigError("vidact scene-encoder needs an observation encoder of its own: set model.obs_encoder.kind "
                          "(e.g. vit)")
    if not model_cfg.env_state_dim or model_cfg.env_state_source != "encoder":
        raise ConfigError("vidact scene-encoder trains the encoder's scene-state head: set model.env_state_dim "
                          "(6 for MetaWorld's object and goal xyz) and model.env_state_source=encoder")


def train_reader(reader: SceneReader, data: dict, steps: int, batch_size: int, lr: float, seed: int,
                 held: dict | None = None, eval_every: int = 0, out: Path | None = None) -> list[dict]:
    """AdamW with a 100-step warm-up and a cosine decay; normalized MSE against the scene state.
    With ``held`` and ``eval_every``, the held-out first frames' errors every ``eval_every`` steps
    (the curve is returned and printed: where more steps stop paying); with ``out`` too, the reader
    at each of those steps is kept as ``out/step_N/model.safetensors`` (a killed run keeps them)."""
    from vidact.bundle import write_weights

    head = reader.env_state_head
    with torch.no_grad():  # the head's statistics: the training targets', fixed
        head.mean.copy_(data["target"].mean(0))
        head.std.copy_(data["target"].std(0).clamp(min=1e-3))
        head.seen.fill_(True)
    params = [p for p in reader.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    target = (data["target"] - head.mean) / head.std
    curve: list[dict] = []
    reader.train()
    start = time.time()
    for step in range(steps):
        idx = torch.randint(len(data["frames"]), (batch_size,), generator=gen)
        loss = (reader(data["frames"][idx].float() / 255) - target[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 20) == 0 or step + 1 == steps:
            print(f"vidact scene-encoder: step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
        if held is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            errors = first_frame_errors(reader.eval(), held)
            if out is not None:
                write_weights(out / f"step_{step + 1}", reader.state_dict())
            reader.train()
            curve.append({"step": step + 1, "seconds": round(time.time() - start, 1), "heldout_first_frames": errors})
            print(f"  held-out first frames at step {step + 1}, object x, y / goal x, y cm: " + "; ".join(
                f"{task[:24]}: " + ", ".join(f"{row['error_cm'][i]:.1f}" for i in (0, 1, 3, 4))
                for task, row in errors.items()), flush=True)
    reader.eval()
    return curve


def first_frame_errors(reader: SceneReader, data: dict, pred: np.ndarray | None = None) -> dict:
    """Per task: the frames scored (``data["first"]``), their mean absolute error in cm, and the same for each
    task's mean position (the blind reader). ``pred``: those frames' readings, when already read."""
    rows = data["first"]
    pred = read(reader, data["frames"][rows]) if pred is None else pred
    target, tasks = data["target"][rows].numpy(), data["task"][rows]
    out = {}
    for task in sorted(set(tasks)):
        pick = tasks == task
        out[task] = {"frames": int(pick.sum()),
                     "error_cm": _mean_cm(pred[pick] - target[pick]),
                     "task_mean_cm": _mean_cm(target[pick] - target[pick].mean(0))}
    return out


@torch.no_grad()
def read(reader: SceneReader, frames: Tensor) -> np.ndarray:
    """uint8 frames [N,V,C,H,W] -> the reader's scene state [N,E] in metres."""
    pred = torch.cat([reader(frames[i:i + 128].float() / 255) for i in range(0, len(frames), 128)])
    head = reader.env_state_head
    return (pred * head.std + head.mean).numpy()


def running_goal_errors(pred: np.ndarray, data: dict) -> dict:
    """The goal (MetaWorld's scene state: object xyz, then goal xyz, fixed within an episode) read as the
    mean of the readings ``pred`` [N,6] so far in the episode, at each of ``data``'s frames: per task, its
    mean absolute error in cm beside the single frame's (what averaging the readings at test time would
    give the policy)."""
    target, tasks, episodes = data["target"].numpy(), data["task"], data["episode"]
    running = np.empty_like(pred[:, 3:6])
    for ep in np.unique(episodes):
        rows = np.flatnonzero(episodes == ep)  # in episode order (load_frames keeps it)
        running[rows] = np.cumsum(pred[rows, 3:6], 0) / np.arange(1, len(rows) + 1)[:, None]
    return {task: {"frames": int((tasks == task).sum()),
                   "goal_error_cm": _mean_cm(pred[tasks == task, 3:6] - target[tasks == task, 3:6]),
                   "goal_running_mean_error_cm": _mean_cm(running[tasks == task] - target[tasks == task, 3:6])}
            for task in sorted(set(tasks))}


def _mean_cm(offsets: np.ndarray) -> list[float]:
    """[N,E] offsets in metres -> each value's mean absolute offset in cm, to 0.01."""
    return (100 * np.abs(offsets).mean(0)).astype(np.float64).round(2).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact scene-encoder", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="the policy's recipe (name or path)")
    p.add_argument("overrides", nargs="*", help="key=value, the policy run's model overrides")
    p.add_argument("--dataset", nargs="+", default=[], help="LeRobot dataset(s) with observation.environment_state "
                   "(reset scenes; demonstrations too, so the encoder also sees the arm away from its rest pose)")
    p.add_argument("--heldout", default=None, help="held-out episodes of the same tasks: first-frame errors in cm")
    p.add_argument("--heldout-every", type=int, default=0, help="with --heldout: also the errors over every N-th "
                   "frame of its episodes (the arm away from its rest pose)")
    p.add_argument("--score-only", action="store_true", help="no training: score the reader already in --out on "
                   "--heldout (written to OUT/scene_encoder_score.json)")
    p.add_argument("--out", required=True, help="folder for model.safetensors (what train.init_from reads)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=1,
                   help="frames: every n-th step of each episode (each one's first too)")
    p.add_argument("--eval-every", type=int, default=0, help="with --heldout: its first frames' errors every N "
                   "steps, and the reader then kept as OUT/step_N (train.init_from=OUT/step_N)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    return run_command("vidact scene-encoder", _scene_encoder, p.parse_intermixed_args(argv),
                       (ValueError, KeyError, FileNotFoundError))


def _scene_encoder(args: argparse.Namespace) -> int:
    from vidact import config as vconfig
    from vidact.bundle import write_weights

    if args.steps < 1 or args.batch_size < 1 or args.every < 1 or args.heldout_every < 0:
        raise ValueError("--steps, --batch-size and --every must be >= 1, --heldout-every >= 0")
    if args.score_only:
        return _score(args)
    if not args.dataset:
        raise ValueError("--dataset: give the frames to train on (or --score-only with --heldout)")
    for root in args.dataset:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"--dataset {root} is not a folder")
    sources = ", ".join(f"{{kind: lerobot, path: '{root}'}}" for root in args.dataset)
    model_cfg = vconfig.load(args.recipe, [*args.overrides, "data.kind=mixture", f"data.sources=[{sources}]"]).model
    check_config(model_cfg)
    if args.heldout and not Path(args.heldout).is_dir():
        raise FileNotFoundError(f"--heldout {args.heldout} is not a folder")
    torch.manual_seed(args.seed)
    parts = [load_frames(root, model_cfg, args.every) for root in args.dataset]
    data = {key: (torch.cat if key in ("frames", "target") else np.concatenate)([part[key] for part in parts])
            for key in parts[0]}
    held = load_frames(args.heldout, model_cfg, 0) if args.heldout else None
    print(f"vidact scene-encoder: {len(data['frames'])} frames ({int(data['first'].sum())} episodes, "
          f"{model_cfg.views} view(s)), encoder {model_cfg.obs_encoder.kind}, {args.steps} steps of "
          f"batch {args.batch_size}", flush=True)
    reader = SceneReader(model_cfg)
    out = Path(args.out)
    start = time.time()
    curve = train_reader(reader, data, args.steps, args.batch_size, args.lr, args.seed, held, args.eval_every, out)
    report = {"recipe": args.recipe, "overrides": args.overrides, "dataset": args.dataset, "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "train_seconds": round(time.time() - start, 1),
              "parameters": sum(q.numel() for q in reader.parameters())}
    if held is not None:
        report["curve"] = curve
        report.update(heldout_errors(reader, args.heldout, model_cfg, held, args.heldout_every))
    write_weights(out, reader.state_dict())
    (out / "scene_encoder.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'model.safetensors'} (start a policy from it: train.init_from={out})")
    return 0


def heldout_errors(reader: SceneReader, root: str, model_cfg, first: dict, every: int) -> dict:
    """The held-out first frames' errors and, with ``every``, those over every ``every``-th frame, printed."""
    out = {"heldout_first_frames": first_frame_errors(reader, first)}
    if every:
        frames = load_frames(root, model_cfg, every)
        frames["first"] = np.ones(len(frames["first"]), bool)  # every loaded frame counts
        pred = read(reader, frames["frames"])
        out[f"heldout_every_{every}th_frame"] = first_frame_errors(reader, frames, pred)
        running = running_goal_errors(pred, frames) if pred.shape[1] == 6 else {}
    for key, table in out.items():
        for task, row in table.items():
            print(f"  {key.replace('_', ' ')}, {task}: {_cm(row['error_cm'])} cm (the task's mean: "
                  f"{_cm(row['task_mean_cm'])})")
    if every and running:
        out[f"heldout_every_{every}th_frame_goal_running_mean"] = running
        for task, row in running.items():
            print(f"  goal read as the episode's running mean, {task}: {_cm(row['goal_running_mean_error_cm'])} cm "
                  f"(one frame: {_cm(row['goal_error_cm'])})")
    return out


def _cm(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _score(args: argparse.Namespace) -> int:
    """``--score-only``: the reader in ``--out`` on ``--heldout``."""
    from vidact import config as vconfig
    from vidact.bundle import read_weights

    if not args.heldout or not Path(args.heldout).is_dir():
        raise FileNotFoundError(f"--score-only needs --heldout, a folder (got {args.heldout})")
    weights = Path(args.out) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"--score-only: {weights} does not exist (train the reader first)")
    model_cfg = vconfig.load(args.recipe, [*args.overrides, "data.kind=lerobot",
                                           f"data.sources=[{{kind: lerobot, path: '{args.heldout}'}}]"]).model
    check_config(model_cfg)
    reader = SceneReader(model_cfg)
    reader.load_state_dict(read_weights(weights))
    reader.eval()
    report = {"heldout": args.heldout, **heldout_errors(reader, args.heldout, model_cfg,
                                                          load_frames(args.heldout, model_cfg, 0), args.heldout_every)}
    (Path(args.out) / "scene_encoder_score.json").write_text(json.dumps(report, indent=2))
    return 0
