"""``vidact eval BUNDLE --env metaworld --task T --episodes N --out DIR``: closed-loop rollouts.

Observations are rendered exactly as ``vidact data metaworld`` recorded the training data (same
``ExpertRollout`` scene set-up: moved ``corner2`` camera, flip on both axes, state = first 4 obs
dims, LeRobot's task description). Data rendered with ``--camera vidact`` (shadows/reflections/
skybox off) is rendered so again at the resolution it was recorded at; ``--camera lerobot`` data is
rendered as ``lerobot-eval`` does (LeRobot's env, 480x480). The policy resizes to its own size.
Episodes end at first success or ``max_steps`` (LeRobot's MetaWorld: 400).

Seeds are held out: evaluation episode i uses seed ``EVAL_SEED_BASE + i``, far above the
generator's ``seed + 100_000 * task_index + attempt``; when the bundle's training dataset says how
it was generated, the two ranges are checked to be disjoint.

An observation the policy refuses (``vidact.deploy.policy.ObservationChecks``: non-finite, far
from the training statistics, ...) ends the evaluation with a one-line error naming seed and step.

Writes ``results.json`` (success rate with a Wilson 95% interval, mean episode length, per-episode
records) and one mp4 per recorded episode (in ``policy`` mode, the imagined future frame is shown
beside the camera). ``--benchmark MT10`` / ``--tasks A B`` run this for every task of a list, in
parallel (:mod:`vidact.deploy.benchmark`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

EVAL_SEED_BASE = 1_000_000_000
GENERATOR_TASK_STRIDE = 100_000  # vidact.data.metaworld.generate: seed + 100_000 * task_number + attempt


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def camera_name(key: str) -> str:
    """LeRobot observation key -> MetaWorld camera (``observation.image`` is corner2)."""
    return "corner2" if key == "observation.image" else key.rsplit(".", 1)[-1]


def training_seed_ranges(dataset_paths: list[str]) -> list[tuple[int, int]]:
    """[low, high) seed ranges the training datasets' generator may have used."""
    ranges = []
    for path in dataset_paths:
        meta = Path(path) / "meta" / "vidact_generation.json"
        if meta.is_file():
            cfg = json.loads(meta.read_text())["config"]
            seed = int(cfg.get("seed", 0))
            ranges.append((seed, seed + GENERATOR_TASK_STRIDE * len(cfg.get("tasks", [])) + 1))
    return ranges


def to_uint8_hwc(frame: np.ndarray, height: int) -> np.ndarray:
    """[C,H,W] float in [0,1] -> [height, W*height/H, 3] uint8 (nearest-neighbour upscale)."""
    img = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, 2)
    factor = max(1, round(height / img.shape[0]))
    img = img.repeat(factor, 0).repeat(factor, 1)
    if img.shape[0] != height:  # not an integer ratio: pad / crop to the camera's height
        img = np.pad(img, ((0, max(0, height - img.shape[0])), (0, 0), (0, 0)))[:height]
    return img


class MetaWorldEval:
    def __init__(self, task: str, camera_keys: list[str], height: int, width: int, camera: str = "vidact"):
        from vidact.data.metaworld import ExpertRollout  # the renderer the training data came from

        self.camera_keys = camera_keys
        self.rollout = ExpertRollout(task, env_cameras(camera_keys), height, width, camera)
        self.description = self.rollout.description

    def observation(self, obs: np.ndarray, images: list[np.ndarray]) -> dict:
        out = {key: image for key, image in zip(self.camera_keys, images)}
        out["observation.state"] = obs[:4].astype(np.float32)
        out["task"] = self.description
        return out

    def reset(self, seed: int) -> np.ndarray:
        """Start the episode of ``seed``; returns MetaWorld's observation vector."""
        return self.rollout.reset(seed)

    def episode(self, policy, seed: int, max_steps: int, record: bool, keep_steps: bool = False) -> dict:
        """One rollout; ``keep_steps``: also return every step (all cameras, state, executed action,
        reward, success) as ``steps``, in the form ``vidact.data.metaworld.write_episode`` writes."""
        from vidact.deploy.policy import ObservationError

        env = self.rollout.env
        obs = self.reset(seed)
        object_start = [round(float(v), 4) for v in obs[4:7]]  # MetaWorld: the first object's position
        policy.reset(seed=seed)  # the episode's own sampler noise, replayed by the same seed
        frames, success, steps, start = [], False, 0, time.perf_counter()
        latencies, last = [], None  # seconds per chunk the policy computed
        kept: dict[str, list] = {"frames": [], "state": [], "action": [], "reward": [], "success": []}
        for steps in range(1, max_steps + 1):
            images = self.rollout.render()
            try:
                action = policy.select_action(self.observation(obs, images))
            except ObservationError as e:
                raise ObservationError(f"seed {seed}, step {steps}: {e}") from None
            if policy.last_chunk is not None and policy.last_chunk is not last:
                last = policy.last_chunk
                latencies.append(last.latency_s)
            if record:
                frames.append(self._frame(policy, images[0]))
            action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
            if keep_steps:
                kept["frames"].append(images)
                kept["state"].append(obs[:4].astype(np.float32))
                kept["action"].append(action)
            obs, reward, _, truncated, info = env.step(action)
            success = bool(info.get("success", 0.0))
            if keep_steps:
                kept["reward"].append(float(reward))
                kept["success"].append(success)
            if success or truncated:
                break
        out = {"seed": seed, "success": success, "length": steps, "seconds": time.perf_counter() - start,
               "chunks": len(latencies), "chunk_ms": 1000 * float(np.mean(latencies)) if latencies else None,
               "object_start": object_start, "hand_end": [round(float(v), 4) for v in obs[:3]], "frames": frames}
        if keep_steps:
            out["steps"] = kept
        return out

    @staticmethod
    def _frame(policy, camera: np.ndarray) -> np.ndarray:
        chunk = policy.last_chunk
        if chunk is None or chunk.future_frames is None:
            return camera
        imagined = to_uint8_hwc(chunk.future_frames[-1, 0], camera.shape[0])  # last predicted frame, view 0
        return np.concatenate([camera, imagined], axis=1)

    def close(self) -> None:
        self.rollout.close()


def evaluate(policy, task: str, episodes: int, out: str | Path, seed: int | None = None, max_steps: int = 400,
             videos: int | None = None, dataset_paths: list[str] | None = None,
             videos_per_outcome: int | None = None, save_dataset: str | Path | None = None,
             overwrite: bool = False) -> dict:
    """Roll ``policy`` out on ``task`` for ``episodes`` held-out seeds; writes ``out/results.json``
    and the videos of the first ``videos`` episodes (all if None), of which at most
    ``videos_per_outcome`` successes and as many failures (no cap if None). ``save_dataset``: every
    rollout also goes into a LeRobot dataset there (the generated data's features; ``next.success``
    labels the outcome, ``meta/vidact_rollouts.json`` lists seed and success per episode): failed
    rollouts beside the demonstrations are what a judge of imagined futures learns from."""
    from vidact.data.webvideo import write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = EVAL_SEED_BASE if seed is None else seed
    seeds = list(range(first, first + episodes))
    for low, high in training_seed_ranges(dataset_paths or []):
        overlap = [s for s in seeds if low <= s < high]
        if overlap:
            raise ValueError(f"evaluation seeds {overlap[:3]}... overlap the training data's generator seeds "
                             f"[{low}, {high}); pick --seed outside that range")
    cams = policy.info.get("cameras", {})
    size = (cams.get("recorded_size") or [cams.get("model_size") or [policy.config.height, policy.config.width]])[0]
    rendering = cams.get("rendering") or "vidact"
    if rendering == "lerobot":  # what lerobot-eval hands the policy; it resizes as for training
        from vidact.data.metaworld import LEROBOT_IMAGE_SIZE

        size = [LEROBOT_IMAGE_SIZE, LEROBOT_IMAGE_SIZE]
    dataset = None
    if save_dataset is not None:
        from vidact.data.metaworld import create_dataset

        dataset = create_dataset(Path(save_dataset), f"vidact/rollouts_{task}", env_cameras(policy.camera_keys),
                                 int(size[0]), int(size[1]), overwrite=overwrite, flag="--save-dataset")
    env = MetaWorldEval(task, policy.camera_keys, int(size[0]), int(size[1]), rendering)
    records, written = [], {True: 0, False: 0}  # videos written per outcome
    try:
        for i, s in enumerate(seeds):
            record = (videos is None or i < videos) and (videos_per_outcome is None
                                                         or min(written.values()) < videos_per_outcome)
            result = env.episode(policy, s, max_steps, record, keep_steps=dataset is not None)
            frames = result.pop("frames")
            if dataset is not None:
                from vidact.data.metaworld import write_episode

                write_episode(dataset, env.rollout.cameras, env.description, result.pop("steps"))
            if frames and (videos_per_outcome is None or written[result["success"]] < videos_per_outcome):
                result["video"] = str(write_video(out / f"episode_{i:03d}_seed{s}.mp4", np.stack(frames), fps=30))
                written[result["success"]] += 1
            records.append(result)
            print(f"{task}: episode {i + 1}/{episodes} seed {s}: {'success' if result['success'] else 'failure'} "
                  f"in {result['length']} steps ({result['seconds']:.1f} s)", flush=True)
    finally:
        env.close()
        if dataset is not None:
            from vidact.data.codec import keep_scheduling

            with keep_scheduling():
                dataset.finalize()
            (Path(save_dataset) / "meta" / "vidact_rollouts.json").write_text(json.dumps(
                {"task": task, "mode": policy.mode.value, "episodes": [
                    {"episode_index": i, "seed": r["seed"], "success": r["success"], "length": r["length"]}
                    for i, r in enumerate(records)]}, indent=2))
    planner = getattr(policy, "planner", None)
    chunk_ms = [r["chunk_ms"] for r in records if r.get("chunk_ms") is not None]
    return write_summary(out, records, task, env.description, max_steps, seeds, mode=policy.mode.value,
                         executor=type(policy.executor).__name__, sampler=vars(policy.sampler.config),
                         camera_size=list(size), rendering=rendering,
                         planner=vars(planner.config) if planner is not None else None,
                         mean_chunk_ms=float(np.mean(chunk_ms)) if chunk_ms else None)


def env_cameras(camera_keys: list[str]) -> list[str]:
    """MetaWorld camera names of a policy's image keys."""
    return [camera_name(k) for k in camera_keys]


def write_summary(out: Path, records: list[dict], task: str, instruction: str, max_steps: int, seeds: list[int],
                  **details) -> dict:
    """``out/results.json``: success rate with a Wilson 95% interval, mean episode length, the
    run's ``details`` (mode, sampler, ...) and the per-episode records; returns it."""
    n_success = sum(r["success"] for r in records)
    low, high = wilson_interval(n_success, len(records))
    summary = {
        "env": "metaworld", "task": task, "instruction": instruction, "episodes": len(records),
        "successes": n_success, "success_rate": n_success / max(len(records), 1), "wilson95": [low, high],
        "mean_episode_length": float(np.mean([r["length"] for r in records])) if records else 0.0,
        "max_steps": max_steps, "seeds": [seeds[0], seeds[-1]] if seeds else [], **details, "per_episode": records,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def set_threads(threads: int | None) -> None:
    """torch intra-op threads; 1 avoids a 10-30x slowdown on a shared CPU (BENCHMARKS.md, Latency)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_policy(args):
    """The bundle ``args.bundle`` with the command line's inference settings (mode, executor, checks, ...)."""
    from vidact.deploy.planner import planner_kwargs
    from vidact.deploy.policy import ObservationChecks, Policy

    kwargs = planner_kwargs(args)
    if args.n_action_steps:
        kwargs["n_action_steps"] = args.n_action_steps
    executor_kwargs = {"rtc": {"execution_horizon": args.execution_horizon, "delay": args.delay,
                               "overlap": args.overlap},
                       "temporal_ensemble": {"coeff": args.ensemble_coeff}}.get(args.executor, {})
    return Policy.from_pretrained(args.bundle, mode=args.mode, steps=args.steps, executor=args.executor,
                                  noise_scale=getattr(args, "noise_scale", None),
                                  executor_kwargs=executor_kwargs, checks=ObservationChecks.from_args(args), **kwargs)


def main(args) -> int:
    """``vidact eval``: one task (``--task``), or a task list (``--benchmark`` / ``--tasks``:
    :mod:`vidact.deploy.benchmark`)."""
    if args.env == "world_model":
        from vidact.worldmodel.env import main as world_main

        return world_main(args)
    if args.task is None or args.tasks or args.benchmark:
        from vidact.deploy.benchmark import main as benchmark_main

        return benchmark_main(args)
    set_threads(args.threads)
    policy = load_policy(args)
    summary = evaluate(policy, args.task, args.episodes, args.out, seed=args.seed, max_steps=args.max_steps,
                       videos=args.videos, dataset_paths=policy.info.get("source", {}).get("datasets"),
                       save_dataset=args.save_dataset, overwrite=args.overwrite)
    low, high = summary["wilson95"]
    print(f"vidact eval: {args.task}: success {summary['successes']}/{summary['episodes']} "
          f"= {summary['success_rate']:.2f} (Wilson 95% CI [{low:.2f}, {high:.2f}]), mean episode length "
          f"{summary['mean_episode_length']:.1f} | {Path(args.out) / 'results.json'}")
    return 0
