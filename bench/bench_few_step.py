"""Fewer sampler steps at the same success (issue 18, item 2): a bundle's own sampler, the same
network cut to 1-2 Euler steps, and a student distilled to 1-2 steps (``vidact distill``), side
by side: latency per chunk on one core and closed-loop success on the same held-out seeds, with
LeRobot ACT's latency (default size, random weights) timed in the same run.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_few_step.py \\
        --run outputs/bench_learning_061/vidact/run --dataset outputs/quickstart/metaworld --out outputs/fewstep

Stages (each skipped when its output exists, so a re-run resumes):

1. ``vidact export`` of ``--run`` (or ``--teacher``, a bundle), the teacher.
2. ``vidact distill`` for each of ``--student-steps`` (``--modes``, ``--distill-steps`` optimizer steps on
   ``--dataset``'s windows).
3. latency: ``Policy.predict_chunk`` on a MetaWorld observation as lerobot-eval hands it over
   (``bench_latency.py``'s), one torch thread, median and 90th percentile of ``--calls`` calls, for
   every (sampler, mode); then LeRobot ACT's ``select_action`` with an empty queue.
4. success: ``vidact eval`` (``--eval-episodes`` held-out seeds per task, ``--max-steps`` cap) for every
   (sampler, mode), ``--workers`` evaluations at once, each pinned to its own core.

The table lands in OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import lerobot_policy, observation, time_calls  # noqa: E402
from bench_learning import VIDACT, run  # noqa: E402
from bench_pretraining import check_settings  # noqa: E402

from vidact.deploy.sim import wilson_interval  # noqa: E402

TASKS = ["button-press-topdown-v3", "drawer-open-v3"]


def samplers(root: Path, teacher_steps: int, student_steps: list[int]) -> list[tuple[str, Path, int]]:
    """(label, bundle, steps): the teacher as it ships, cut short, and each distilled student."""
    rows = [(f"teacher, {teacher_steps} steps", root / "teacher", teacher_steps)]
    for k in student_steps:
        rows += [(f"teacher cut to {k}", root / "teacher", k), (f"distilled, {k}", root / f"student_{k}", k)]
    return rows


def eval_dir(root: Path, label: str, mode: str) -> Path:
    return root / "eval" / f"{label.replace(' ', '_').replace(',', '')}_{mode}"


def latency(rows, modes: list[str], calls: int, image_size: int) -> dict:
    import torch

    from vidact.deploy.policy import Policy

    torch.set_num_threads(1)
    out = {}
    for label, bundle, steps in rows:
        for mode in modes:
            policy = Policy.from_pretrained(bundle, mode=mode, steps=steps)
            obs = observation(image_size)
            median, p90 = time_calls(lambda: policy.predict_chunk(obs), calls)
            out[f"{label}|{mode}"] = {"median_ms": median, "p90_ms": p90}
            print(f"latency {label:24s} {mode:12s} {median:6.1f} ms (p90 {p90:.1f})", flush=True)
    policy, pre = lerobot_policy("act", image_size, None)
    obs = observation(image_size)
    batch = {"observation.image": obs["observation.image"][None],
             "observation.state": torch.from_numpy(obs["observation.state"])[None], "task": [obs["task"]]}

    def act_chunk():
        policy.reset()
        with torch.no_grad():
            return policy.select_action(pre(batch))

    median, p90 = time_calls(act_chunk, calls)
    out["lerobot act"] = {"median_ms": median, "p90_ms": p90,
                          "params_m": sum(p.numel() for p in policy.parameters()) / 1e6}
    print(f"latency lerobot act {median:.1f} ms (p90 {p90:.1f})", flush=True)
    return out


def evaluate(jobs: list[tuple[str, Path, int, str, str, Path]], args, env) -> None:
    """Run the ``vidact eval`` jobs not yet done, ``--workers`` at a time, each pinned to one core."""
    todo = [j for j in jobs if not (j[5] / "results.json").is_file()]
    cores = list(range(max(1, args.workers)))

    def work(i: int) -> None:
        core = cores[i % len(cores)]
        for label, bundle, steps, mode, task, folder in todo[i::len(cores)]:
            print(f"== eval {label} {mode} {task}", flush=True)
            run(["taskset", "-c", str(core), *VIDACT, "eval", str(bundle), "--env", "metaworld", "--task", task,
                 "--episodes", str(args.eval_episodes), "--mode", mode, "--steps", str(steps), "--max-steps",
                 str(args.max_steps), "--threads", "1", "--videos", "1", "--out", str(folder)],
                folder.parent / f"{folder.name}.log", env)

    with ThreadPoolExecutor(len(cores)) as pool:
        list(pool.map(work, range(len(cores))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="training run to export as the teacher")
    p.add_argument("--teacher", default=None, help="or: the teacher bundle")
    p.add_argument("--dataset", required=True, help="the teacher's training data (distillation windows)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--student-steps", nargs="+", type=int, default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["policy_fast", "policy"])
    p.add_argument("--distill-steps", type=int, default=400)
    p.add_argument("--distill-lr", type=float, default=1e-4)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="evaluations at once (one core each)")
    p.add_argument("--out", default="outputs/fewstep")
    args = p.parse_args()
    if bool(args.run) == bool(args.teacher):
        p.error("pass one of --run (a training run to export) and --teacher (a bundle)")
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    check_settings(root, args, ("run", "teacher", "dataset", "tasks", "student_steps", "modes", "distill_steps",
                                "distill_lr", "calls", "image_size", "eval_episodes", "max_steps"))
    teacher = root / "teacher"
    if not (teacher / "model.safetensors").is_file():
        if args.teacher:
            shutil.copytree(args.teacher, teacher, dirs_exist_ok=True)
        else:
            run([*VIDACT, "export", args.run, str(teacher), "--overwrite"], root / "export.log", env)
    teacher_steps = json.loads((teacher / "config.json").read_text())["sampler"]["steps"]
    distilled = {}
    for k in args.student_steps:
        student = root / f"student_{k}"
        if not (student / "model.safetensors").is_file():
            print(f"== distill to {k} step(s)", flush=True)
            run([*VIDACT, "distill", str(teacher), "--dataset", args.dataset, "--out", str(student), "--student-steps",
                 str(k), "--modes", *args.modes, "--train-steps", str(args.distill_steps), "--lr", str(args.distill_lr),
                 "--threads", "1", "--overwrite"], root / f"distill_{k}.log", env)
        distilled[k] = json.loads((student / "vidact_policy.json").read_text())["distilled"]
    rows = samplers(root, teacher_steps, args.student_steps)
    lat_file = root / "latency.json"
    if not lat_file.is_file():
        lat_file.write_text(json.dumps(latency(rows, args.modes, args.calls, args.image_size), indent=2))
    lat = json.loads(lat_file.read_text())
    jobs = [(label, bundle, steps, mode, task, eval_dir(root, label, mode) / task)
            for label, bundle, steps in rows for mode in args.modes for task in args.tasks]
    for job in jobs:
        job[5].parent.mkdir(parents=True, exist_ok=True)
    evaluate(jobs, args, env)

    lines = [f"teacher {teacher} ({teacher_steps} sampler steps); {args.eval_episodes} held-out seeds per task, "
             f"{args.max_steps}-step cap; latency: one torch thread, {args.image_size}x{args.image_size} camera, "
             f"median (p90) of {args.calls} calls", "",
             "| sampler | mode | ms per chunk | " + " | ".join(args.tasks) + " | mean (Wilson 95%) |",
             "|---|---|---:|" + "---:|" * len(args.tasks) + "---|"]
    summary = {"latency": lat, "distilled": {str(k): v for k, v in distilled.items()}, "success": {}}
    for label, bundle, steps in rows:
        for mode in args.modes:
            res = [json.loads((eval_dir(root, label, mode) / t / "results.json").read_text()) for t in args.tasks]
            k, n = sum(r["successes"] for r in res), sum(r["episodes"] for r in res)
            lo, hi = wilson_interval(k, n)
            t = lat[f"{label}|{mode}"]
            summary["success"][f"{label}|{mode}"] = {"successes": k, "episodes": n, "wilson95": [lo, hi]}
            lines.append(f"| {label} | {mode} | {t['median_ms']:.1f} ({t['p90_ms']:.1f}) | "
                         + " | ".join(f"{r['successes']}/{r['episodes']}" for r in res)
                         + f" | {100 * k / n:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%) |")
    act = lat["lerobot act"]
    lines.append(f"| LeRobot ACT (default size, {act['params_m']:.1f}M, random weights) | - | "
                 f"{act['median_ms']:.1f} ({act['p90_ms']:.1f}) | " + " | ".join("-" for _ in args.tasks) + " | - |")
    text = "\n".join(lines)
    (root / "results.md").write_text(text + "\n")
    (root / "results.json").write_text(json.dumps(summary, indent=2))
    print(text)


if __name__ == "__main__":
    main()
