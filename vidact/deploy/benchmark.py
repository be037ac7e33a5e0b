"""``vidact eval BUNDLE --benchmark MT10 --episodes 50 --out DIR``: every task of a MetaWorld
benchmark (or of ``--tasks``) on the held-out seeds of single-task ``vidact eval``, in parallel.

Each task is :func:`vidact.deploy.sim.evaluate` run by one of ``--workers`` processes (default one
per core; spawned, as a forked MuJoCo/EGL context is not safe to render from; one torch thread each
unless ``--threads``), writing ``DIR/<task>/results.json`` as a one-task evaluation does, plus the
videos of its first success and first failure. A task the bundle was not trained on runs too: the
instruction is the task's (LeRobot's ``TASK_DESCRIPTIONS``), whatever the bundle saw.

``DIR/benchmark.json`` and ``DIR/benchmark.md`` hold the per-task table (successes/episodes, Wilson
95% interval, videos) and the benchmark average: the mean of the per-task success rates. Every task
runs the same number of episodes, so the average is the pooled rate, and its interval is the Wilson
interval of all successes over all episodes (episodes counted as independent trials; the per-task
intervals show how far tasks differ).

A refused observation (``ObservationError``) in one task ends the run, as in a one-task evaluation:
tasks not yet started are cancelled, those running finish first.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from vidact.bundle import read_config
from vidact.deploy.sim import evaluate, load_policy, set_threads, wilson_interval

_WORKER_POLICY = None  # a worker process's policy, loaded for its first task


def main(args: argparse.Namespace) -> int:
    from vidact.data.metaworld import TaskListError, resolve_tasks

    if args.task is not None:
        raise TaskListError("give --task (one task) or --tasks/--benchmark (a task list), not both")
    if not args.tasks and not args.benchmark:
        raise TaskListError("give --task, --tasks or --benchmark (MT10, MT25, MT50)")
    tasks = resolve_tasks(args.tasks, args.benchmark)
    name = args.benchmark.upper() if args.benchmark else "custom"
    workers = min(os.cpu_count() or 1, len(tasks)) if args.workers is None else args.workers
    if workers < 1:
        raise TaskListError(f"--workers must be >= 1, got {workers}")
    read_config(args.bundle)  # a missing or broken bundle fails here, not in every worker
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"vidact eval: {name}: {len(tasks)} tasks x {args.episodes} episodes, {workers} worker(s) -> {out}",
          flush=True)
    results = run_tasks(args, tasks, out, workers)
    summary = write_benchmark_summary(out, name, {task: results[task] for task in tasks}, bundle=str(args.bundle),
                                      seeds=results[tasks[0]]["seeds"], max_steps=args.max_steps)
    print((out / "benchmark.md").read_text())
    low, high = summary["wilson95"]
    print(f"vidact eval: {name}: average success {summary['average_success_rate']:.3f} over {len(tasks)} tasks "
          f"(Wilson 95% CI [{low:.3f}, {high:.3f}]) | {out / 'benchmark.json'}")
    return 0


def run_tasks(args: argparse.Namespace, tasks: list[str], out: Path, workers: int) -> dict[str, dict]:
    """Each task's ``results.json`` summary, evaluated by ``workers`` processes (in this one if 1)."""
    start, results = time.perf_counter(), {}

    def report(task: str) -> None:
        r = results[task]
        print(f"[{len(results)}/{len(tasks)} tasks, {time.perf_counter() - start:.0f} s] {task}: "
              f"{r['successes']}/{r['episodes']} successes", flush=True)

    if workers == 1:
        set_threads(args.threads)
        policy = load_policy(args)
        for task in tasks:
            results[task] = _evaluate_task(policy, args, task, out / task)
            report(task)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    picklable = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_worker_evaluate, picklable, task, out / task): task for task in tasks}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                report(futures[future])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _worker_evaluate(args: argparse.Namespace, task: str, out: Path) -> dict:
    global _WORKER_POLICY
    if _WORKER_POLICY is None:
        set_threads(args.threads or 1)
        _WORKER_POLICY = load_policy(args)
    return _evaluate_task(_WORKER_POLICY, args, task, out)


def _evaluate_task(policy, args: argparse.Namespace, task: str, out: Path) -> dict:
    return evaluate(policy, task, args.episodes, out, seed=args.seed, max_steps=args.max_steps, videos=args.videos,
                    dataset_paths=policy.info.get("source", {}).get("datasets"), videos_per_outcome=1,
                    save_dataset=Path(args.save_dataset) / task if args.save_dataset else None, overwrite=args.overwrite)


def write_benchmark_summary(out: Path, name: str, results: dict[str, dict], **details) -> dict:
    """``out/benchmark.json`` and ``out/benchmark.md`` from each task's ``results.json`` summary
    (``results``, in table order); returns the JSON's content."""
    import json

    rows = []
    for task, r in results.items():
        videos = {}
        for outcome, success in (("success", True), ("failure", False)):
            video = next((e["video"] for e in r["per_episode"] if e["success"] == success and "video" in e), None)
            videos[outcome] = None if video is None else os.path.relpath(video, out)
        rows.append({"task": task, "instruction": r["instruction"], "successes": r["successes"],
                     "episodes": r["episodes"], "success_rate": r["success_rate"], "wilson95": r["wilson95"],
                     "mean_episode_length": r["mean_episode_length"], "videos": videos})
    successes, episodes = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    summary = {
        "benchmark": name, "tasks": len(rows), "successes": successes, "episodes": episodes,
        "average_success_rate": sum(r["success_rate"] for r in rows) / max(len(rows), 1),
        "wilson95": list(wilson_interval(successes, episodes)), **details, "per_task": rows,
    }
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    (out / "benchmark.md").write_text(benchmark_table(summary))
    return summary


def benchmark_table(summary: dict) -> str:
    """The markdown page of ``benchmark.json``: one row per task, then the average."""
    lines = [f"# {summary['benchmark']}: {summary['tasks']} tasks", ""]
    if "bundle" in summary:
        lines += [f"Bundle `{summary['bundle']}`, seeds {summary['seeds'][0]}-{summary['seeds'][-1]} on every task, "
                  f"at most {summary['max_steps']} steps an episode. Average: mean of the task rates; its interval: "
                  "Wilson on all episodes pooled.", ""]
    lines += ["| task | successes | rate | Wilson 95% | videos |", "|---|---|---|---|---|"]
    for r in summary["per_task"]:
        links = " ".join(f"[{outcome}]({path})" for outcome, path in r["videos"].items() if path)
        lines.append(f"| {r['task']} | {r['successes']}/{r['episodes']} | {r['success_rate']:.2f} | "
                     f"[{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}] | {links} |")
    low, high = summary["wilson95"]
    lines.append(f"| **average** | {summary['successes']}/{summary['episodes']} | "
                 f"{summary['average_success_rate']:.2f} | [{low:.2f}, {high:.2f}] | |")
    return "\n".join(lines) + "\n"
