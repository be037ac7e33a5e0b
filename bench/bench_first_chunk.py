"""Does a policy read where the object is? Its first action chunk against the scripted expert's.

From the same held-out MetaWorld start (seeds from ``vidact eval``'s base), the policy's first
``--steps`` actions (one chunk, from the first frame; with ``--after N`` the chunk at step N, the
expert driving until then while the policy watches) and the expert's ``--steps`` actions (closed
loop, the expert sees the true object position) are summed into a hand displacement command. A
policy that reads the scene points where the expert points (cosine near 1) whatever the layout; a
policy that plays back an average motion points the same way from every start, so its agreement
with the expert falls as the object's position matters more. The spread of the policy's
displacements across starts (the sum over x, y, z of their standard deviations, in summed action
units: 16 steps at full speed along one axis is 16) beside the expert's says the same from the
other side.

    .venv/bin/python bench/bench_first_chunk.py --bundles p12=outputs/small4/p12/vidact/eval/step-00001000/policy \\
        --tasks reach-v3 push-v3 pick-place-v3 peg-insert-side-v3 button-press-topdown-v3 --seeds 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def first_chunks(bundle: str, task: str, seeds: list[int], steps: int, mode: str, after: int = 0) -> dict:
    from vidact.cli import build_parser
    from vidact.deploy.sim import MetaWorldEval, load_policy

    policy = load_policy(build_parser().parse_args(["eval", bundle, "--task", task, "--mode", mode,
                                                    "--threads", "1", "--out", "unused"]))
    env = MetaWorldEval(task, policy.camera_keys, policy.config.height, policy.config.width)
    mine, expert = [], []
    try:
        for seed in seeds:
            obs = env.reset(seed)
            policy.reset()
            for _ in range(after):  # the expert drives, the policy watches (its history fills)
                policy.predict_chunk(env.observation(obs, env.rollout.render()))
                obs = env.rollout.env.step(np.clip(env.rollout.policy.get_action(obs), -1.0, 1.0))[0]
            chunk = policy.predict_chunk(env.observation(obs, env.rollout.render())).actions
            mine.append(chunk[:steps, :3].sum(0))
            moves = []
            for _ in range(steps):
                action = np.clip(env.rollout.policy.get_action(obs), -1.0, 1.0)
                moves.append(action[:3])
                obs = env.rollout.env.step(action)[0]
            expert.append(np.sum(moves, 0))
    finally:
        env.rollout.close()
    mine, expert = np.stack(mine), np.stack(expert)
    cos = (mine * expert).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(expert, axis=1) + 1e-9)
    return {"cosine": float(cos.mean()), "gap": float(np.linalg.norm(mine - expert, axis=1).mean()),
            "policy_spread": float(mine.std(0).sum()),
            "expert_spread": float(expert.std(0).sum())}


def main() -> int:
    from vidact.deploy.sim import EVAL_SEED_BASE, set_threads

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", nargs="+", required=True, metavar="LABEL=BUNDLE")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--seeds", type=int, default=10, help="held-out starts per task")
    p.add_argument("--steps", type=int, default=16, help="actions summed (at most one chunk)")
    p.add_argument("--after", type=int, default=0, help="compare the chunk at this step, the expert driving "
                   "until then while the policy watches (0: the episode's first chunk)")
    p.add_argument("--mode", default="policy_fast", choices=["policy_fast", "policy"])
    p.add_argument("--out", default=None, help="a JSON file for the table")
    args = p.parse_args()
    set_threads(1)
    seeds = list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + args.seeds))
    rows = []
    for label, bundle in (x.split("=", 1) for x in args.bundles):
        for task in args.tasks:
            rows.append({"policy": label, "task": task, **first_chunks(bundle, task, seeds, args.steps, args.mode, args.after)})
            print(f"{label} {task}: cosine {rows[-1]['cosine']:.2f}", flush=True)
    lines = [f"| policy | task | cosine with the expert's {args.steps} steps from step {args.after} | policy's spread over starts "
             "| expert's spread | distance to the expert's |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['policy']} | {r['task']} | {r['cosine']:.2f} | {r['policy_spread']:.2f} | {r['expert_spread']:.2f} | "
              f"{r['gap']:.2f} |"
              for r in rows]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
