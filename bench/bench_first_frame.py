"""Which MetaWorld tasks' first frames were stale before the reset fix (issue 15, commit d8cdf04)?

MetaWorld places an episode's goal marker and some of its objects (the drawer's body, the
window's, peg-insert's box) through the MuJoCo model at reset, but the positions the renderer
reads are only recomputed at the next physics step; vidact's ``ExpertRollout.reset`` now runs a
forward pass. For each task this renders the frame right after MetaWorld's own reset, without and
with that forward pass, over ``--seeds`` consecutive episodes, and reports how far they differ:
the largest pixel difference and the share of pixels that moved by more than 10% of the range.
A task at 0 was never affected; LeRobot's ``MetaworldEnv`` (and ``--camera lerobot``) still
renders the stale frame.

    MUJOCO_GL=egl .venv/bin/python bench/bench_first_frame.py --benchmark MT10
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def stale_difference(task: str, seeds: list[int], size: int) -> dict:
    import mujoco

    from vidact.data.metaworld import ExpertRollout

    rollout = ExpertRollout(task, ["corner2"], size, size)
    largest, moved = [], []
    try:
        for seed in seeds:  # each episode after the first starts where the last one was drawn
            rollout.env.seed(seed)
            rollout.env.reset()  # MetaWorld's own reset, as before the fix (and as LeRobot's env)
            stale = rollout.render()[0].astype(np.float32)
            mujoco.mj_forward(rollout.env.model, rollout.env.data)
            change = np.abs(rollout.render()[0].astype(np.float32) - stale).max(-1)  # [H,W]
            largest.append(float(change.max()) / 255)
            moved.append(float((change > 25.5).mean()))
    finally:
        rollout.close()
    return {"task": task, "max_pixel_change": max(largest), "pixels_moved": float(np.mean(moved))}


def main() -> None:
    from vidact.data.metaworld import resolve_tasks

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--benchmark", help="MT10 / MT25 / MT50")
    p.add_argument("--seeds", type=int, default=5, help="consecutive episodes per task (seeds 1000..)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    tasks = resolve_tasks(args.tasks, args.benchmark)
    rows = []
    print("| task | largest pixel change | pixels moved (> 10%) |\n|---|---:|---:|")
    for task in tasks:
        row = stale_difference(task, list(range(1000, 1000 + args.seeds)), args.size)
        rows.append(row)
        print(f"| {task} | {row['max_pixel_change']:.2f} | {100 * row['pixels_moved']:.1f}% |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
