"""One bundle, two evaluators, the same seeds: ``lerobot-eval`` (LeRobot's MetaWorld env and rollout
loop, the bundle loaded through the plugin) against ``vidact eval``.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lerobot_eval.py \\
        --bundle outputs/lr/policy --tasks button-press-topdown-v3 drawer-open-v3 --episodes 20

The bundle should be trained on ``vidact data metaworld --camera lerobot`` data: then both
evaluators show the policy the same 480x480 image (``vidact eval`` renders with LeRobot's env for
such bundles), the same seeds give the same layouts (seed ``--seed + i`` for episode i in both), and
both run episodes up to 500 steps (LeRobot 0.6.1's MetaworldEnv fixes 500 whatever
``--env.episode_length`` says; ``vidact eval --max-steps 500``). They differ only in the sampler's
noise draws (lerobot-eval steps ``--lerobot-batch`` environments through one batched call).

The evaluations of every task run concurrently, one torch thread each. Writes ``OUT/results.md``
(success per task and evaluator with Wilson 95% intervals, and per-seed agreement) and keeps both
evaluators' outputs (videos, results.json / eval_info.json) under ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vidact.deploy.sim import EVAL_SEED_BASE, wilson_interval

LEROBOT_MAX_STEPS = 500  # lerobot/envs/metaworld.py: MetaworldEnv._max_episode_steps


def commands(args, task: str, out: Path) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    return {
        "vidact eval": [str(bin_dir / "vidact"), "eval", args.bundle, "--env", "metaworld", "--task", task,
                        "--episodes", str(args.episodes), "--seed", str(args.seed), "--max-steps",
                        str(LEROBOT_MAX_STEPS), "--videos", str(args.videos), "--threads", "1",
                        "--out", str(out / "vidact" / task)],
        "lerobot-eval": [str(bin_dir / "lerobot-eval"), f"--policy.path={args.bundle}", "--policy.device=cpu",
                         "--env.type=metaworld", f"--env.task={task}", f"--eval.n_episodes={args.episodes}",
                         f"--eval.batch_size={args.lerobot_batch}", "--eval.use_async_envs=false",
                         f"--seed={args.seed}", f"--output_dir={out / 'lerobot' / task}"],
    }


def successes(evaluator: str, out: Path, task: str) -> list[bool]:
    if evaluator == "vidact eval":
        records = json.loads((out / "vidact" / task / "results.json").read_text())["per_episode"]
        return [bool(r["success"]) for r in sorted(records, key=lambda r: r["seed"])]
    info = json.loads((out / "lerobot" / task / "eval_info.json").read_text())
    (entry,) = [t for t in info["per_task"] if t["task_group"] == task]
    return [bool(s) for s in entry["metrics"]["successes"]]  # episode i = seed + i


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--tasks", nargs="+", default=["button-press-topdown-v3", "drawer-open-v3"])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="first seed (both evaluators)")
    p.add_argument("--lerobot-batch", type=int, default=5, help="lerobot-eval's environments per batch")
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--out", default="outputs/bench_lerobot_eval")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    jobs, start = [], time.time()
    for task in args.tasks:
        for evaluator, cmd in commands(args, task, out).items():
            log = out / f"{evaluator.replace(' ', '_')}_{task}.log"
            print(f"[bench] {evaluator} {task}: {' '.join(cmd)}", flush=True)
            jobs.append((evaluator, task, log, subprocess.Popen(cmd, env=env, stdout=open(log, "w"),
                                                                stderr=subprocess.STDOUT)))
    for evaluator, task, log, proc in jobs:
        if proc.wait() != 0:
            raise SystemExit(f"{evaluator} on {task} failed (exit {proc.returncode}); see {log}")
        print(f"[bench] {evaluator} {task} done at {(time.time() - start) / 60:.1f} min", flush=True)

    lines = [f"Bundle `{args.bundle}`, seeds {args.seed}..{args.seed + args.episodes - 1} per task, "
             f"episodes up to {LEROBOT_MAX_STEPS} steps.", "",
             "| task | lerobot-eval | vidact eval | same outcome on a seed |", "|---|---:|---:|---:|"]
    totals = {"lerobot-eval": 0, "vidact eval": 0}
    for task in args.tasks:
        row = {}
        for evaluator in totals:
            s = successes(evaluator, out, task)
            totals[evaluator] += sum(s)
            low, high = wilson_interval(sum(s), len(s))
            row[evaluator] = (s, f"{sum(s)}/{len(s)} ({low:.0%}-{high:.0%})")
        agree = sum(a == b for a, b in zip(row["lerobot-eval"][0], row["vidact eval"][0]))
        lines.append(f"| {task} | {row['lerobot-eval'][1]} | {row['vidact eval'][1]} | {agree}/{args.episodes} |")
    n = args.episodes * len(args.tasks)
    cells = [f"{totals[e]}/{n} ({wilson_interval(totals[e], n)[0]:.0%}-{wilson_interval(totals[e], n)[1]:.0%})"
             for e in ("lerobot-eval", "vidact eval")]
    lines.append(f"| all | {cells[0]} | {cells[1]} | |")
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
