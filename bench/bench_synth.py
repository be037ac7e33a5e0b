"""Are the episodes `vidact synth` imagines physically real? Issue 14 (data synthesis): every
written synthetic episode started from a MetaWorld scene whose seed is known (the start frames came
from `vidact data metaworld --max-steps 1 --keep-failed`, every attempt kept, so episode k of task i
has seed `episode_seed(seed, i, k)`). Its imagined actions are replayed open loop in that scene and
the simulator says whether the task gets done; the hand position the judge read from the last
imagined frame is compared with where the replayed hand really is. Per task: rollouts imagined,
accepted by the judge, accepted episodes that succeed when replayed, final hand error.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_synth.py outputs/synth/latvw3k_s0 \\
        --starts outputs/synth/starts --out outputs/synth/bench_latvw3k_s0

OUT/results.md, results.json and side-by-side videos (imagined | replayed) of the first ``--videos``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def replay(task: str, seed: int, actions: np.ndarray, size: int = 0) -> tuple[bool, np.ndarray, list[np.ndarray]]:
    """Execute ``actions`` from the scene of ``seed``: (any step succeeded, final hand xyz, the
    frames before each action at ``size`` x ``size`` when ``size``)."""
    from vidact.data.metaworld import ExpertRollout

    rollout = ExpertRollout(task, ["corner2"], size or 32, size or 32)
    frames = []
    try:
        obs = rollout.reset(seed)
        success = False
        for action in actions:
            if size:
                frames.append(rollout.render()[0])
            obs, _, _, truncated, info = rollout.env.step(np.clip(action, -1, 1))
            success |= bool(info.get("success", 0.0))
            if truncated:
                break
        return success, np.asarray(obs[:3]), frames
    finally:
        rollout.close()


def main(argv: list[str] | None = None) -> int:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.metaworld import episode_seed
    from vidact.data.transforms import frame_to_uint8
    from vidact.data.webvideo import write_video
    from vidact.deploy.sim import wilson_interval

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("synth", help="a dataset written by vidact synth")
    p.add_argument("--starts", required=True, help="the start-frame dataset it was imagined from (vidact data "
                   "metaworld --max-steps 1 --keep-failed)")
    p.add_argument("--videos", type=int, default=4, help="replayed episodes written as side-by-side mp4s "
                   "(imagined | replayed in the simulator)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    meta = json.loads((Path(args.synth) / "meta" / "vidact_synth.json").read_text())
    gen = json.loads((Path(args.starts) / "meta" / "vidact_generation.json").read_text())["config"]
    if not gen["keep_failed"]:
        print("bench_synth: the start frames were generated without --keep-failed: their seeds are unknown",
              file=sys.stderr)
        return 2
    dataset = LeRobotDataset("vidact/synth", root=args.synth)
    data = dataset.hf_dataset.with_format("numpy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    videos = 0
    episode = np.asarray(data["episode_index"])
    action, state = np.stack(data["action"]), np.stack(data["observation.state"])
    rows: dict[str, dict] = defaultdict(lambda: {"imagined": 0, "accepted": 0, "replayed": 0, "replay_success": 0,
                                                 "hand_error_cm": []})
    for r in meta["rollouts"]:
        k = int(r["start"].split()[-1])
        task = gen["tasks"][k // gen["episodes"]]
        row = rows[task]
        row["imagined"] += 1
        row["accepted"] += r["accepted"]
        if "episode_index" not in r or not r["accepted"]:
            continue
        mask = episode == r["episode_index"]
        size = dataset.meta.shapes["observation.image"][0] if videos < args.videos else 0
        success, hand, frames = replay(task, episode_seed(gen["seed"], k // gen["episodes"], k % gen["episodes"]),
                                       action[mask], size)
        if frames:
            videos += 1
            imagined = [frame_to_uint8(dataset[int(i)]["observation.image"]) for i in np.flatnonzero(mask)]
            both = [np.concatenate([a, b], 1).repeat(3, 0).repeat(3, 1) for a, b in zip(imagined, frames)]
            name = f"{task}_start{k}_{'success' if success else 'failure'}.mp4"
            write_video(out / name, np.stack(both), fps=20)
        row["replayed"] += 1
        row["replay_success"] += success
        row["hand_error_cm"].append(float(np.linalg.norm(hand - state[mask][-1, :3]) * 100))
        print(f"{task} start {k}: {len(action[mask])} steps, replayed: {'success' if success else 'failure'}, "
              f"final hand {row['hand_error_cm'][-1]:.1f} cm from the imagined one", flush=True)
    lines = [f"Synthetic episodes of `{args.synth}` replayed open loop in their MetaWorld scenes "
             f"(judge threshold {meta['threshold']}, {meta['max_steps']}-step cap)", "",
             "| task | imagined | accepted by the judge | accepted that succeed when replayed | Wilson 95% | "
             "final hand error cm (mean) |", "|---|---:|---:|---:|---|---:|"]
    for task, row in rows.items():
        low, high = wilson_interval(row["replay_success"], row["replayed"])
        row["wilson95"] = [low, high]
        row["hand_error_cm_mean"] = float(np.mean(row["hand_error_cm"])) if row["hand_error_cm"] else None
        hand = f"{row['hand_error_cm_mean']:.1f}" if row["hand_error_cm"] else ""
        lines.append(f"| {task} | {row['imagined']} | {row['accepted']} | {row['replay_success']}/{row['replayed']} | "
                     f"{low:.2f}-{high:.2f} | {hand} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"synth": args.synth, "starts": args.starts, "tasks": rows},
                                                 indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
