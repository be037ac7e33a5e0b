"""Policy evaluation inside the world model (issue 13): ``vidact eval BUNDLE --env world_model
--world-model RUN --dataset DIR [--task T]`` runs a policy closed-loop in imagination instead of
in the simulator, and writes the same ``results.json`` and videos.

Each episode starts from the real first frame and state of a held-out episode of ``DIR`` (cycled
when more episodes are asked for than it holds; each episode samples with its own seed). Time runs
on the world model's frame grid (``s = future_frame_stride`` control steps): at every grid step
the policy sees the current frame (real at the start, imagined after), held for the ``s`` control
steps until the next one, and acts ``s`` times; the world model imagines the next frame from its
history and those actions (``forward_dynamics``; the chunk's remaining steps repeat the last
action, as LeRobot pads). The policy's proprioception on imagined frames is read from them by the
world model's judge (its state head), and the judge decides success: the task is done at the
first frame whose done probability passes ``SUCCESS_THRESHOLD``. Episodes run in batches.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from vidact.generative.schedule import Mode
from vidact.worldmodel.rollout import RolloutStart, history_batch, mismatch

SUCCESS_THRESHOLD = 0.5
VIDEO_FPS = 10


class WorldModelEnvError(ValueError):
    """An in-model evaluation that cannot run (mismatched policy and world model, no judge, no episodes)."""


def check_compatible(policy, model) -> None:
    """The policy reads what the world model imagines and the model takes the policy's actions."""
    p, m = policy.config, model.config
    pairs = [("cameras", len(policy.camera_keys), m.views), ("channels", p.channels, m.channels),
             ("image size", f"{p.height}x{p.width}", f"{m.height}x{m.width}"),
             ("action dim", p.action_dim, m.action_dim), ("state dim", p.state_dim, m.state_dim)]
    message = mismatch(pairs, "the world model")
    if message:
        raise WorldModelEnvError(message)


def load_world(path: str, imagine_steps: int | None):
    """(model, sampler config, judge) of a world-model run directory, checkpoint or bundle."""
    from vidact.worldmodel.imagine import load_model
    from vidact.worldmodel.judge import Judge, find_judge

    if not Path(path).exists():
        raise WorldModelEnvError(f"--world-model {path} does not exist")
    model, sampler_cfg = load_model(path)
    if model.future_tokens == 0:
        raise WorldModelEnvError(f"--world-model {path} predicts no future frames (model.future_frames=0): it "
                                 "cannot imagine an episode")
    folder = find_judge(path)
    if folder is None:
        raise WorldModelEnvError(f"--world-model {path} has no judge to decide success: train one with "
                                 f"`vidact judge {path} --datasets ...`")
    judge = Judge.load(folder)
    if not judge.config.state_dim:
        raise WorldModelEnvError(f"the judge in {folder} reads no state; re-train it with `vidact judge` (the policy "
                                 "needs proprioception on imagined frames)")
    if imagine_steps:
        sampler_cfg.steps = imagine_steps
    return model, sampler_cfg, judge


def start_episodes(dataset, instruction: str | None, count: int) -> list[dict]:
    """The first frame, state and instruction of ``count`` episodes (cycling the dataset's)."""
    firsts = []
    for ep in sorted(dataset.episode_lengths):
        data = dataset.episode(ep)
        if instruction is None or data["text"] == instruction:
            firsts.append({"episode": ep, "frame": data["frames"][0], "state": data["state"][0],
                           "text": data["text"]})
    if not firsts:
        raise WorldModelEnvError(f"dataset {dataset.meta.root} has no episode with instruction {instruction!r}")
    return [firsts[i % len(firsts)] for i in range(count)]


@torch.no_grad()
def chunk_tail(policy, executed: torch.Tensor, K: int, tail: str) -> torch.Tensor:
    """The actions after the ``s`` executed ones that complete the K-step chunk the world model
    takes: ``"policy"``, the rest of the chunk the policy planned, when the executed actions are its
    first ``s`` (open loop: the chunk was predicted at this frame), else ``"repeat"``, the last
    executed action repeated (as LeRobot pads)."""
    B, s, _ = executed.shape
    planned = getattr(policy, "last_chunk", None)
    planned = None if planned is None else torch.as_tensor(planned.actions).float().reshape(B, -1, executed.shape[2])
    if tail == "policy" and planned is not None and planned.shape[1] >= K and torch.allclose(planned[:, :s], executed):
        return planned[:, s:K]
    return executed[:, -1:].expand(B, max(K - s, 0), -1)


def imagine_episodes(policy, sampler, judge, starts: list[dict], max_steps: int, seed: int,
                     keep_frames: int = 0, stop_on_success: bool = True, tail: str = "repeat") -> list[dict]:
    """Run the policy on ``len(starts)`` episodes at once inside the world model. Each record
    carries the judge's done probability at every imagined frame (``done_curve``); with
    ``stop_on_success=False`` every episode runs to ``max_steps`` (its imagined frames can then be
    judged again by another judge: ``bench/bench_outcome_judge.py``)."""
    model = sampler.model
    c = model.config
    s, K, Th, B = c.future_frame_stride, c.chunk_length, c.history, len(starts)
    first = torch.stack([x["frame"] for x in starts])  # [B,V,C,H,W]
    state0 = torch.stack([x["state"] for x in starts]).float()
    texts = [x["text"] for x in starts]
    start = RolloutStart(frames=first[:, None].expand(B, Th, *first.shape[1:]).clone(),
                         state=state0[:, None].expand(B, Th, -1).clone(), text=texts,
                         is_pad=torch.tensor([[i < Th - 1 for i in range(Th)]]).expand(B, -1).clone())
    grid = list(start.frames.unbind(1))
    done, length = torch.zeros(B, dtype=torch.bool), torch.full((B,), max_steps)
    policy.reset()
    t0 = time.perf_counter()
    state = state0
    curve = []
    for j in range(max(1, max_steps // s)):
        frame = grid[-1]  # [B,V,C,H,W]
        obs = {key: frame[:, v] for v, key in enumerate(policy.camera_keys)}
        obs[policy.state_key], obs["task"] = state.numpy(), texts
        acts = np.stack([policy.select_action(obs) for _ in range(s)], 1)  # [B,s,A]
        acts = torch.from_numpy(acts).float()
        acts = torch.cat([acts, chunk_tail(policy, acts, K, tail)], 1)[:, :K]
        batch = history_batch(start, grid, j, Th)
        batch.actions = acts
        new = sampler.sample(batch, Mode.FORWARD_DYNAMICS, seed=seed + j).future_frames[:, 0].float().clamp(0, 1)
        grid.append(new)
        _, p_done, state = judge.read(new[:, 0], texts)
        curve.append(p_done)
        now = (p_done > SUCCESS_THRESHOLD) & ~done
        length[now] = (j + 1) * s
        done |= now
        if stop_on_success and bool(done.all()):
            break
    seconds = (time.perf_counter() - t0) / B
    frames = torch.stack(grid[Th - 1:], 1)  # [B, 1 + steps, V,C,H,W]
    curve = torch.stack(curve, 1)  # [B, steps]
    return [{"start_episode": x["episode"], "success": bool(done[b]), "length": int(length[b]),
             "seconds": seconds, "frames": frames[b] if b < keep_frames else None,
             "done_curve": [float(p) for p in curve[b]]} for b, x in enumerate(starts)]


def evaluate_in_model(policy, world: str, dataset_path: str, task: str | None, episodes: int, out: str | Path,
                      max_steps: int, seed: int = 0, videos: int | None = None, batch_size: int = 10,
                      imagine_steps: int | None = None) -> dict:
    from vidact.data.robot import RobotDataset
    from vidact.data.webvideo import write_video
    from vidact.deploy.sim import write_summary
    from vidact.generative.sample import Sampler

    model, sampler_cfg, judge = load_world(world, imagine_steps)
    check_compatible(policy, model)
    if episodes < 1 or max_steps < 1 or batch_size < 1:
        raise WorldModelEnvError(f"--episodes, --max-steps and --batch-size must be >= 1, got {episodes}, "
                                 f"{max_steps}, {batch_size}")
    instruction = None
    if task is not None:
        from lerobot.envs.metaworld import TASK_DESCRIPTIONS

        instruction = TASK_DESCRIPTIONS.get(task, task)
    if not Path(dataset_path).is_dir():
        raise WorldModelEnvError(f"--dataset {dataset_path} does not exist")
    starts = start_episodes(RobotDataset(dataset_path, model.config), instruction, episodes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = Sampler(model, sampler_cfg)
    records = []
    n_videos = episodes if videos is None else videos
    for lo in range(0, episodes, batch_size):
        chunk = starts[lo: lo + batch_size]
        results = imagine_episodes(policy, sampler, judge, chunk, max_steps, seed + 100_000 * (lo // batch_size),
                                   keep_frames=max(0, n_videos - lo))
        for i, r in enumerate(results):
            frames = r.pop("frames")
            if frames is not None:
                video = episode_video(frames[: 1 + r["length"] // model.config.future_frame_stride])
                r["video"] = str(write_video(out / f"episode_{lo + i:03d}_start{r['start_episode']}.mp4", video,
                                             fps=VIDEO_FPS))
            records.append(r)
            print(f"{task or 'world model'}: imagined episode {lo + i + 1}/{episodes} (start: episode "
                  f"{r['start_episode']}): {'success' if r['success'] else 'failure'} in {r['length']} steps",
                  flush=True)
    return write_summary(out, records, task or "", instruction or "", max_steps, [seed, seed], env="world_model",
                         mode=policy.mode.value, world_model=str(world), dataset=str(dataset_path),
                         sampler=vars(sampler_cfg), judge_threshold=SUCCESS_THRESHOLD,
                         seconds_per_episode=float(np.mean([r["seconds"] for r in records])))


def episode_video(frames: torch.Tensor) -> np.ndarray:
    """[T,V,C,H,W] in [0,1] -> [T,h,w,3] uint8, views stacked vertically, scaled up to be seen."""
    from vidact.worldmodel.imagine import _tile

    return np.stack([np.concatenate([_tile(f[v]) for v in range(f.shape[0])], 0) for f in frames])


def main(args) -> int:
    """``vidact eval BUNDLE --env world_model``: the policy with the command line's settings."""
    from vidact.deploy.sim import load_policy, set_threads

    if not args.world_model or not args.dataset:
        raise WorldModelEnvError("--env world_model needs --world-model RUN (with its judge) and --dataset DIR "
                                 "(real first frames)")
    set_threads(args.threads)
    policy = load_policy(args)
    summary = evaluate_in_model(policy, args.world_model, args.dataset, args.task, args.episodes, args.out,
                                args.max_steps, seed=args.seed or 0, videos=args.videos,
                                batch_size=args.batch_size, imagine_steps=args.imagine_steps)
    low, high = summary["wilson95"]
    print(f"vidact eval: {args.task or 'all tasks'} in the world model: success {summary['successes']}/"
          f"{summary['episodes']} = {summary['success_rate']:.2f} (Wilson 95% CI [{low:.2f}, {high:.2f}]), "
          f"{summary['seconds_per_episode']:.2f} s per episode | {Path(args.out) / 'results.json'}")
    return 0
