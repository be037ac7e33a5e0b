"""``vidact synth MODEL --start-frames DIR --episodes N --out DIR``: whole robot episodes imagined by
the model from first frames of new scenes, kept when the judge says the task was done, written as a
LeRobot v3 dataset to train on (issue 14, "data synthesis": DreamGen, Ctrl-World).

From each start frame (a scene no demonstration was recorded in) the model runs in ``policy`` mode,
autoregressively: it co-generates the next action chunk and the frames those actions lead to, and
its imagined frames become the history of the next call (``vidact.worldmodel.rollout``). The judge
of the model (``vidact judge``) reads every imagined frame: an episode is accepted at the first
frame whose task-done probability passes ``--threshold`` and ends there (as generated MetaWorld
demos end at the first success); one that never gets there within ``--max-steps`` is rejected
(kept, flagged failed, with ``--keep-failed``). Starts are cycled with fresh seeds until
``--episodes`` are accepted or ``--max-attempts`` rollouts were imagined.

The model imagines a frame every ``future_frame_stride`` control steps: the dataset holds each
imagined frame for the steps until the next one (LeRobot datasets have a frame per step), and the
robot state, which the judge's state head reads from the imagined frames, is interpolated between
them. Every frame carries ``synthetic = True`` so a recipe or an analysis can tell these episodes
from real ones; ``meta/vidact_synth.json`` records each rollout (start, seed, accepted, length).

Start frames: a LeRobot dataset (each episode's first frame, state and instruction; new MetaWorld
scenes: ``vidact data metaworld --tasks T --episodes 50 --seed S --max-steps 1 --keep-failed --out
DIR``, seeds away from the training data's), or a folder of images (``--instruction`` and ``--fps``
needed; the state is read from the image by the judge).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vidact.data.codec import keep_scheduling, video_codec
from vidact.errors import run_command

SYNTH_META = "vidact_synth.json"
SYNTHETIC_KEY = "synthetic"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_THRESHOLD = 0.5  # as in-model evaluation decides success (vidact.worldmodel.env)


class SynthError(ValueError):
    """A synthesis run that cannot go on as asked; the message names the problem."""


@dataclass
class Starts:
    """Where imagined episodes begin: N first frames, their state (raw; NaN rows: read by the judge)
    and instructions, and the dataset layout they came with."""

    frames: Tensor  # [N,V,C,H,W] in [0,1], at the model's size
    state: Tensor  # [N,S]
    text: list[str]
    camera_keys: list[str]
    fps: int
    names: list[str]  # where each start came from (episode index or file name)


def load_starts(path: str, model, instruction: str | None, fps: float | None) -> Starts:
    """Start frames from a LeRobot dataset folder or a folder of images."""
    from vidact.data.transforms import fit_frames

    c = model.config
    root = Path(path)
    if not root.is_dir():
        raise SynthError(f"--start-frames {root} is not a folder")
    if (root / "meta" / "info.json").is_file():
        from vidact.data.robot import RobotDataset
        from vidact.worldmodel.env import start_episodes

        dataset = RobotDataset(root, c)
        firsts = start_episodes(dataset, instruction, len(dataset.episode_lengths))
        return Starts(frames=torch.stack([x["frame"] for x in firsts]),
                      state=torch.stack([x["state"] for x in firsts]).float(), text=[x["text"] for x in firsts],
                      camera_keys=list(dataset.camera_keys), fps=int(round(fps or dataset.fps)),
                      names=[f"episode {x['episode']}" for x in firsts])
    files = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SynthError(f"--start-frames {root}: neither a LeRobot dataset (meta/info.json) nor a folder with images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    if not instruction or not fps:
        raise SynthError(f"--start-frames {root} holds images: pass --instruction (the task) and --fps (the robot's "
                         "control rate)")
    if c.views != 1:
        raise SynthError(f"the model reads {c.views} cameras; an image folder gives one")
    from torchvision.io import ImageReadMode, decode_image

    images = []
    for f in files:
        try:
            image = decode_image(str(f), mode=ImageReadMode.RGB if c.channels == 3 else ImageReadMode.GRAY)
        except RuntimeError as e:
            raise SynthError(f"{f}: not a readable image ({str(e).splitlines()[0]})") from None
        images.append(fit_frames(image[None], c.height, c.width, "resize")[0])
    n = len(files)
    return Starts(frames=torch.stack(images)[:, None], state=torch.full((n, c.state_dim), float("nan")),
                  text=[instruction] * n, camera_keys=["observation.image"], fps=int(round(fps)),
                  names=[f.name for f in files])


@torch.no_grad()
def imagine_batch(sampler, judge, frames: Tensor, state: Tensor, texts: list[str], max_steps: int, seed: int,
                  threshold: float) -> list[dict]:
    """Imagine B episodes at once from first frames [B,V,C,H,W] and raw states [B,S] (NaN rows:
    read by the judge). Returns per episode the control-step arrays of the accepted part (or of the
    whole rollout when the judge never accepts it): frames [T,V,C,H,W], state [T,S], action [T,A],
    success [T], with ``accepted`` and the judge's highest done probability."""
    from vidact.worldmodel.rollout import RolloutStart, rollout_calls

    c = sampler.model.config
    s, Th, B = c.future_frame_stride, c.history, len(texts)
    state = state.clone()
    unknown = torch.isnan(state).any(1)
    if unknown.any():
        state[unknown] = judge.predict_state(frames[unknown, 0], [t for t, u in zip(texts, unknown) if u])
    start = RolloutStart(frames=frames[:, None].expand(B, Th, *frames.shape[1:]).clone(),
                         state=state[:, None].expand(B, Th, -1).clone(), text=list(texts),
                         is_pad=torch.tensor([[i < Th - 1 for i in range(Th)]]).expand(B, -1).clone())
    grid, grid_state, actions = [frames], [state], []  # grid frame g: control step g * s
    done_at = torch.full((B,), -1)  # grid index of the first accepted frame
    best = torch.zeros(B)
    for j, new, acts in rollout_calls(sampler, start, max(1, max_steps // s), seed=seed):
        actions.append(acts)
        for k in range(new.shape[1]):
            g = j + k + 1
            _, p_done, read_state = judge.read(new[:, k, 0], list(texts))
            grid.append(new[:, k])
            grid_state.append(read_state)
            best = torch.maximum(best, p_done)
            done_at[(p_done > threshold) & (done_at < 0)] = g
        if bool((done_at >= 0).all()):
            break
    grid_frames, grid_states = torch.stack(grid, 1), torch.stack(grid_state, 1)  # [B,G,...]
    executed = torch.cat(actions, 1)  # [B, (G-1)*s, A]
    episodes = []
    for b in range(B):
        accepted = bool(done_at[b] >= 0)
        length = int(done_at[b]) * s if accepted else executed.shape[1]
        t = torch.arange(length)
        g, frac = t // s, (t % s).float()[:, None] / s
        nxt = (g + 1).clamp(max=grid_states.shape[1] - 1)
        success = torch.zeros(length, dtype=torch.bool)
        if accepted:
            success[-1] = True  # the last action reaches the accepted frame
        episodes.append({"frames": grid_frames[b, g], "state": (1 - frac) * grid_states[b, g] + frac * grid_states[b, nxt],
                         "action": executed[b, :length], "success": success, "accepted": accepted,
                         "max_done": float(best[b])})
    return episodes


def synth_features(camera_keys: list[str], height: int, width: int, state_dim: int, action_dim: int) -> dict:
    features = {key: {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
                for key in camera_keys}
    features["observation.state"] = {"dtype": "float32", "shape": (state_dim,), "names": None}
    features["action"] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    features["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    features[SYNTHETIC_KEY] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact synth", description=__doc__.splitlines()[0])
    p.add_argument("model", help="run directory or bundle (a video model trained with policy mode, and a judge)")
    p.add_argument("--start-frames", required=True, help="LeRobot dataset (first frame of each episode) or a folder "
                   "of images")
    p.add_argument("--episodes", type=int, required=True, help="accepted episodes to write")
    p.add_argument("--out", required=True, help="LeRobot dataset folder to write")
    p.add_argument("--instruction", default=None, help="the task: filters a dataset's starts; needed for images")
    p.add_argument("--fps", type=float, default=None, help="control rate of the dataset written (default: the start "
                   "dataset's; needed for images)")
    p.add_argument("--max-steps", type=int, default=200, help="control steps an imagined episode may take")
    p.add_argument("--max-attempts", type=int, default=None, help="rollouts to imagine at most (default 3x --episodes)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="judge done probability that accepts")
    p.add_argument("--keep-failed", action="store_true", help="also write rejected rollouts (next.success all false)")
    p.add_argument("--judge", default=None, help="judge folder (default: MODEL/judge)")
    p.add_argument("--batch-size", type=int, default=8, help="episodes imagined at once")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--noise-scale", type=float, default=None, help="action noise's standard deviation (default: the "
                   "model's sampler.noise_scale; at 0 the actions of one start differ only through the imagined video)")
    p.add_argument("--videos", type=int, default=2, help="accepted episodes also written as viewable mp4s "
                   "(OUT/previews)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    return run_command("vidact synth", _synth, p.parse_args(argv),
                       (SynthError, ValueError, FileNotFoundError, FileExistsError))


def _synth(args: argparse.Namespace) -> int:
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    from vidact.data.transforms import frame_to_uint8
    from vidact.data.webvideo import write_video
    from vidact.generative.sample import Sampler
    from vidact.worldmodel.env import VIDEO_FPS, episode_video
    from vidact.worldmodel.imagine import load_model
    from vidact.worldmodel.judge import Judge, find_judge

    if args.episodes < 1 or args.max_steps < 1 or args.batch_size < 1:
        raise SynthError(f"--episodes, --max-steps and --batch-size must be >= 1, got {args.episodes}, "
                         f"{args.max_steps}, {args.batch_size}")
    max_attempts = args.max_attempts or 3 * args.episodes
    if not Path(args.model).exists():
        raise SynthError(f"{args.model} does not exist")
    model, sampler_cfg = load_model(args.model)
    c = model.config
    if model.future_tokens == 0:
        raise SynthError(f"{args.model} predicts no future frames (model.future_frames=0): it cannot imagine episodes")
    folder = Path(args.judge) if args.judge else find_judge(args.model)
    if folder is None:
        raise SynthError(f"{args.model} has no judge to accept episodes: train one with `vidact judge {args.model} "
                         "--datasets ...` (or pass --judge)")
    judge = Judge.load(folder)
    if not judge.config.state_dim:
        raise SynthError(f"the judge in {folder} reads no state; re-train it with `vidact judge` (imagined frames "
                         "need a robot state)")
    if args.steps:
        sampler_cfg.steps = args.steps
    if args.noise_scale is not None:
        sampler_cfg = replace(sampler_cfg, noise_scale=args.noise_scale)  # validated there
    starts = load_starts(args.start_frames, model, args.instruction, args.fps)
    if not starts.text:
        raise SynthError(f"--start-frames {args.start_frames} has no start with instruction {args.instruction!r}")
    judge.task_ids(starts.text)  # an instruction the judge does not know fails here, with its name
    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            raise SynthError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    dataset = LeRobotDataset.create(
        repo_id=f"vidact/synthetic_{out.name}", fps=starts.fps, root=out, use_videos=True,
        features=synth_features(starts.camera_keys, c.height, c.width, c.state_dim, c.action_dim),
        rgb_encoder=RGBEncoderConfig(vcodec=video_codec(c.height, c.width)))
    sampler = Sampler(model, sampler_cfg)
    records, accepted, attempt = [], 0, 0
    bar = tqdm(total=args.episodes, desc="synthetic episodes accepted", unit="ep")
    while accepted < args.episodes and attempt < max_attempts:
        n = min(args.batch_size, max_attempts - attempt)
        idx = [(attempt + i) % len(starts.text) for i in range(n)]
        seed = args.seed + 100_000 * (attempt // args.batch_size)
        episodes = imagine_batch(sampler, judge, starts.frames[idx], starts.state[idx], [starts.text[i] for i in idx],
                                 args.max_steps, seed, args.threshold)
        for i, ep in zip(idx, episodes):
            record = {"attempt": attempt, "start": starts.names[i], "instruction": starts.text[i], "seed": seed,
                      "accepted": ep["accepted"], "length": len(ep["action"]), "max_done_probability": ep["max_done"]}
            attempt += 1
            keep = ep["accepted"] and accepted < args.episodes  # a batch may imagine more than still needed
            record["written"] = keep or (args.keep_failed and not ep["accepted"])
            if record["written"]:
                record["episode_index"] = dataset.meta.total_episodes
                for t in range(len(ep["action"])):
                    frame = {key: frame_to_uint8(ep["frames"][t, v]) for v, key in enumerate(starts.camera_keys)}
                    frame.update({"observation.state": ep["state"][t].numpy().astype(np.float32),
                                  "action": ep["action"][t].numpy().astype(np.float32),
                                  "next.success": np.array([bool(ep["success"][t])]),
                                  SYNTHETIC_KEY: np.array([True]), "task": starts.text[i]})
                    dataset.add_frame(frame)
                with keep_scheduling():
                    dataset.save_episode()
                if keep and accepted < args.videos:
                    record["preview"] = str(write_video(out / "previews" / f"episode_{record['episode_index']:03d}.mp4",
                                                        episode_video(ep["frames"][::c.future_frame_stride]),
                                                        fps=VIDEO_FPS))
                accepted += keep
                bar.update(int(keep))
            records.append(record)
    bar.close()
    if dataset.meta.total_episodes == 0:
        shutil.rmtree(out)
        best = max(r["max_done_probability"] for r in records)
        raise SynthError(f"the judge accepted none of {attempt} imagined rollouts (highest done probability "
                         f"{best:.2f}, threshold {args.threshold}); nothing written. Raise --max-steps or "
                         "--max-attempts, or check the judge (`vidact judge` reports its accuracy on imagined frames)")
    with keep_scheduling():
        dataset.finalize()
    summary = {"model": str(args.model), "judge": str(folder), "start_frames": str(args.start_frames),
               "asked": args.episodes, "accepted": accepted, "imagined": attempt,
               "acceptance_rate": sum(r["accepted"] for r in records) / max(attempt, 1),
               "threshold": args.threshold, "max_steps": args.max_steps, "sampler_steps": sampler_cfg.steps,
               "noise_scale": sampler_cfg.noise_scale,
               "frame_hold_steps": c.future_frame_stride, "rollouts": records}
    (out / "meta" / SYNTH_META).write_text(json.dumps(summary, indent=2))
    short = "" if accepted >= args.episodes else f" (asked for {args.episodes}; raise --max-attempts for more)"
    print(f"vidact synth: {accepted} accepted episode(s) of {attempt} imagined{short} -> {out}")
    return 0
