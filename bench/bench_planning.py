"""Does planning in imagination pay? Issue 13: the same bundle evaluated in MetaWorld on the same
held-out seeds, plain and with ``--planner best_of_n`` / ``cem`` at several N, per task: success
with its Wilson interval and the milliseconds per chunk.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_planning.py \\
        outputs/wm/bundles/latvw_s0 --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 push-v3 \\
        --settings plain best_of_n:8 --episodes 50 --max-steps 200 --imagine-steps 2 --out outputs/plan/bench

A setting is ``plain``, ``best_of_n:N`` or ``cem:N``, optionally with ``:h2`` (each candidate
imagined two chunks deep: ``--plan-horizon 2``), ``:mean`` (``--plan-score mean``), ``:nS`` (the
policy's action noise, ``--noise-scale S``) and ``:pS`` (the other candidates' noise,
``--plan-noise-scale S``) and ``:mM`` (``--plan-margin M``: another candidate only if it beats the
policy's own chunk by more than M). Candidates differ only through their noise, so the fair comparison is
the plain policy at its best temperature, e.g. ``plain:n0``, against planning that keeps that
chunk as candidate 0 and adds noisy ones, ``best_of_n:8:n0:p1``.

The bundle needs a judge (``vidact judge BUNDLE --datasets ...``), or ``--plan-model RUN`` a world
model with one that imagines the candidates the bundle's policy proposes. Each (task, setting) is one
``vidact eval`` into OUT/TASK/SETTING (skipped when its results.json exists, so a cut run
resumes); ``--workers`` runs that many at once, one torch thread each. The table lands in
OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vidact.deploy.sim import wilson_interval

VIDACT = [sys.executable, "-m", "vidact.cli"]


def setting_args(setting: str) -> list[str]:
    """'plain' | 'best_of_n:N' | 'cem:N', optionally followed by ':hH' (``--plan-horizon H``), ':mean'
    (``--plan-score mean``), ':nS' (``--noise-scale S``), ':pS' (``--plan-noise-scale S``: the
    noise of candidates 1..N-1) and/or ':mM' (``--plan-margin M``) -> vidact eval arguments."""
    kind, *rest = setting.split(":")
    usage = f"--settings: {setting!r} is not plain[:nS] or best_of_n|cem:N[:hH][:mean][:nS][:pS][:mM]"
    cmd = []
    if kind in ("best_of_n", "cem") and rest and rest[0].isdigit():
        cmd, rest = ["--planner", kind, "--candidates", rest[0]], rest[1:]
    elif kind != "plain":
        raise SystemExit(usage)
    for part in rest:
        if part == "mean" and cmd:
            cmd += ["--plan-score", "mean"]
        elif part[:1] == "h" and part[1:].isdigit() and cmd:
            cmd += ["--plan-horizon", part[1:]]
        elif part[:1] in "npm" and part[1:].replace(".", "", 1).isdigit() and (cmd or part[0] == "n"):
            cmd += [{"n": "--noise-scale", "p": "--plan-noise-scale", "m": "--plan-margin"}[part[0]], part[1:]]
        else:
            raise SystemExit(usage)
    return cmd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--settings", nargs="+", default=["plain", "best_of_n:4", "best_of_n:8"])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=None, help="first seed (default: vidact eval's held-out range)")
    p.add_argument("--imagine-steps", type=int, default=None)
    p.add_argument("--mode", default=None, choices=["policy_fast", "policy"])
    p.add_argument("--plan-model", default=None, help="planning settings imagine with this world model (and its "
                   "judge) instead of the bundle's own: `vidact eval --plan-model`")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.setdefault("MUJOCO_GL", "egl")
    jobs = [(t, s) for t in args.tasks for s in args.settings]  # task by task: a cut run has whole comparisons

    def run(job) -> None:
        task, setting = job
        folder = out / task / setting.replace(":", "_")
        if (folder / "results.json").is_file():
            return
        cmd = [*VIDACT, "eval", args.bundle, "--task", task, "--episodes", str(args.episodes), "--max-steps",
               str(args.max_steps), "--threads", "1", "--videos", str(args.videos), "--out", str(folder),
               *setting_args(setting)]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        if args.mode:
            cmd += ["--mode", args.mode]
        if args.imagine_steps and "--planner" in cmd:
            cmd += ["--imagine-steps", str(args.imagine_steps)]
        if args.plan_model and "--planner" in cmd:
            cmd += ["--plan-model", args.plan_model]
        folder.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(folder / "eval.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {folder / 'eval.log'}")
        print(f"{task} {setting}: done in {time.time() - start:.0f} s", flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run, jobs))

    rows, table = [], ["| task | setting | success | Wilson 95% | ms/chunk (1 thread) |", "|---|---|---:|---|---:|"]
    for setting in args.settings:
        for task in args.tasks:
            r = json.loads((out / task / setting.replace(":", "_") / "results.json").read_text())
            low, high = r["wilson95"]
            rows.append({"task": task, "setting": setting, "successes": r["successes"], "episodes": r["episodes"],
                         "wilson95": r["wilson95"], "chunk_ms": r.get("mean_chunk_ms"), "seeds": r["seeds"]})
            ms = f"{r['mean_chunk_ms']:.0f}" if r.get("mean_chunk_ms") else ""
            table.append(f"| {task} | {setting} | {r['successes']}/{r['episodes']} | {low:.2f}-{high:.2f} | {ms} |")
    for setting in args.settings:
        mine = [r for r in rows if r["setting"] == setting]
        rate = sum(r["successes"] for r in mine) / max(1, sum(r["episodes"] for r in mine))
        low, high = wilson_interval(sum(r["successes"] for r in mine), sum(r["episodes"] for r in mine))
        table.append(f"| **average** | {setting} | {100 * rate:.1f}% | {low:.2f}-{high:.2f} | |")
    (out / "results.json").write_text(json.dumps({"bundle": args.bundle, "rows": rows, "args": vars(args)}, indent=2))
    (out / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
