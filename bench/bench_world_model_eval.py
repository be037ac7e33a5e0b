"""Does evaluating a policy inside the world model rank policies as the simulator does? Issue 13:
each policy bundle evaluated on each task in MetaWorld (``vidact eval``) and inside the world model
(``vidact eval --env world_model``), then Pearson and Spearman correlation between real and
imagined success over the (policy, task) pairs, seconds per episode for both, and a scatter plot.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_world_model_eval.py \\
        --policies a0=outputs/af/bench2400/seed0/demos/policy d2_0=outputs/af/bench2400/seed0/state_labels/policy ... \\
        --real a0=outputs/af/bench2400/seed0/demos/eval_noise0/TASK d2_0=... --noise-scale 0 \\
        --world-model outputs/wm/bundles/latvw3k_s0 --dataset outputs/plan/starts/TASK \\
        --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 --episodes 20 --max-steps 200 --out outputs/plan/wm_eval

``--dataset`` may contain ``TASK``, replaced per task (the saved rollouts of ``vidact eval
--save-dataset`` are one dataset per task). Each evaluation goes to OUT/POLICY/TASK/{real,imagined}
and is skipped when its results.json exists. OUT/results.md, results.json and scatter.png.

``--real LABEL=DIR`` takes a policy's MetaWorld results from an evaluation already made (DIR/results.json,
``TASK`` replaced per task), e.g. the issue-14 arms, each evaluated on 50 held-out seeds from 1e9; the
start frames are then the first frames of the same scenes (``scripts/world_model.sh`` writes them:
``vidact data metaworld --tasks TASK --episodes 50 --seed 1000000000 --max-steps 1 --keep-failed``),
of which the imagined evaluation takes the first ``--episodes``. ``--noise-scale`` is passed to every
evaluation this script runs; reused results made at another noise scale, or for another task, stop it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VIDACT = [sys.executable, "-m", "vidact.cli"]


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean rank)."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(xs: list[float], ys: list[float]) -> float:
    return pearson(ranks(xs), ranks(ys))


def scatter(points: list[tuple[float, float, str]], out: Path, title: str, size: int = 420) -> Path:
    """Real (x) against imagined (y) success, both 0..1, with the diagonal and labels."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = 50, size - 30
    draw.rectangle([lo, 30, hi, size - lo], outline=(0, 0, 0))
    sx = lambda v: lo + v * (hi - lo)  # noqa: E731
    sy = lambda v: size - lo - v * (size - lo - 30)  # noqa: E731
    draw.line([(sx(0), sy(0)), (sx(1), sy(1))], fill=(180, 180, 180))
    for x, y, label in points:
        draw.ellipse([sx(x) - 4, sy(y) - 4, sx(x) + 4, sy(y) + 4], fill=(31, 119, 180))
        draw.text((sx(x) + 6, sy(y) - 6), label, fill=(60, 60, 60))
    draw.text((lo, 8), title, fill=(0, 0, 0))
    draw.text((lo, size - lo + 8), "success in MetaWorld (0..1)", fill=(0, 0, 0))
    draw.text((4, 34), "in the\nworld\nmodel", fill=(0, 0, 0))
    img.save(out)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", nargs="+", required=True, metavar="LABEL=BUNDLE")
    p.add_argument("--world-model", required=True)
    p.add_argument("--dataset", required=True, help="start frames; TASK is replaced by each task")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--imagine-steps", type=int, default=None)
    p.add_argument("--real", nargs="*", default=[], metavar="LABEL=DIR",
                   help="MetaWorld results already measured for LABEL (DIR/results.json; TASK replaced per task)")
    p.add_argument("--noise-scale", type=float, default=None, help="vidact eval --noise-scale for every run")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policies = dict(x.split("=", 1) for x in args.policies)
    real = dict(x.split("=", 1) for x in args.real)
    if set(real) - set(policies):
        raise SystemExit(f"--real: {sorted(set(real) - set(policies))} not among --policies")

    def folder_of(label: str, task: str, where: str) -> Path:
        if where == "real" and label in real:
            return Path(real[label].replace("TASK", task))
        return out / label / task / where
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.setdefault("MUJOCO_GL", "egl")

    def run(job) -> None:
        label, task, where = job
        folder = folder_of(label, task, where)
        if (folder / "results.json").is_file():
            return
        if where == "real" and label in real:
            raise SystemExit(f"--real {label}: {folder / 'results.json'} not found")
        cmd = [*VIDACT, "eval", policies[label], "--task", task, "--episodes", str(args.episodes), "--max-steps",
               str(args.max_steps), "--threads", "1", "--videos", "2", "--out", str(folder)]
        if args.noise_scale is not None:
            cmd += ["--noise-scale", str(args.noise_scale)]
        if where == "imagined":
            cmd += ["--env", "world_model", "--world-model", args.world_model,
                    "--dataset", args.dataset.replace("TASK", task)]
            if args.imagine_steps:
                cmd += ["--imagine-steps", str(args.imagine_steps)]
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "eval.log", "w") as log:
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed; see {folder / 'eval.log'}")
        print(f"{label} {task} {where}: done", flush=True)

    jobs = [(label, task, where) for label in policies for task in args.tasks for where in ("imagined", "real")]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run, jobs))

    rows = []
    for label in policies:
        for task in args.tasks:
            res = {w: json.loads((folder_of(label, task, w) / "results.json").read_text()) for w in ("real", "imagined")}
            made = (res["real"]["task"], res["real"]["sampler"]["noise_scale"])
            if label in real and (made[0] != task or args.noise_scale not in (None, made[1])):
                raise SystemExit(f"--real {label}: {folder_of(label, task, 'real')} is {made[0]} at noise scale {made[1]}, "
                                 f"not {task} at {args.noise_scale}")
            real_s = sum(r["seconds"] for r in res["real"]["per_episode"]) / res["real"]["episodes"]
            rows.append({"policy": label, "task": task, "real": res["real"]["success_rate"],
                         "real_count": f"{res['real']['successes']}/{res['real']['episodes']}",
                         "imagined_count": f"{res['imagined']['successes']}/{res['imagined']['episodes']}",
                         "imagined": res["imagined"]["success_rate"], "real_wilson95": res["real"]["wilson95"],
                         "imagined_wilson95": res["imagined"]["wilson95"], "real_s_per_episode": real_s,
                         "imagined_s_per_episode": res["imagined"]["seconds_per_episode"]})
    xs, ys = [r["real"] for r in rows], [r["imagined"] for r in rows]
    summary = {"pearson": pearson(xs, ys), "spearman": spearman(xs, ys), "pairs": len(rows),
               "real_s_per_episode": sum(r["real_s_per_episode"] for r in rows) / len(rows),
               "imagined_s_per_episode": sum(r["imagined_s_per_episode"] for r in rows) / len(rows),
               "rows": rows, "args": vars(args)}
    # Two readings a user choosing between checkpoints cares about: within one task (the world
    # model's optimism differs by task), and each policy's mean over the tasks.
    summary["per_task_spearman"] = {t: spearman([r["real"] for r in rows if r["task"] == t],
                                                [r["imagined"] for r in rows if r["task"] == t]) for t in args.tasks}
    means = [(sum(r["real"] for r in rows if r["policy"] == p) / len(args.tasks),
              sum(r["imagined"] for r in rows if r["policy"] == p) / len(args.tasks)) for p in policies]
    summary["policy_means"] = {"pearson": pearson(*zip(*means)), "spearman": spearman(*zip(*means))}
    scatter([(r["real"], r["imagined"], f"{r['policy']}/{r['task'].split('-')[0]}") for r in rows],
            out / "scatter.png", f"Pearson {summary['pearson']:.2f}, Spearman {summary['spearman']:.2f}")
    table = ["| policy | task | MetaWorld | in the world model |", "|---|---|---:|---:|"]
    table += [f"| {r['policy']} | {r['task']} | {r['real_count']} ({r['real']:.2f}) | {r['imagined_count']} "
              f"({r['imagined']:.2f}) |" for r in rows]
    per_task = ", ".join(f"{t.split('-')[0]} {v:.2f}" for t, v in summary["per_task_spearman"].items())
    table += ["", f"Within each task, Spearman {per_task}; policies ranked by their mean over the tasks: Pearson "
              f"{summary['policy_means']['pearson']:.2f}, Spearman {summary['policy_means']['spearman']:.2f}."]
    table += ["", f"Pearson {summary['pearson']:.2f}, Spearman {summary['spearman']:.2f} over {len(rows)} pairs; "
              f"{summary['real_s_per_episode']:.1f} s per MetaWorld episode, {summary['imagined_s_per_episode']:.1f} s "
              "per imagined one."]
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
