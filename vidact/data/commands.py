"""``vidact data metaworld ...`` and ``vidact data inspect DIR`` (``vidact.cli`` forwards here)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vidact data", description="Generate and inspect datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    mw = sub.add_parser("metaworld", help="MetaWorld scripted-expert demos -> a LeRobot v3.0 dataset")
    mw.add_argument("--tasks", nargs="+", default=None, help="MetaWorld task names, e.g. button-press-topdown-v3")
    mw.add_argument("--benchmark", default=None, metavar="MT10|MT25|MT50", help="instead of --tasks: every task of "
                    "this MetaWorld benchmark (its own task list), each with its instruction, in one dataset")
    mw.add_argument("--episodes", type=int, default=25, help="episodes to keep per task (default 25, the CPU "
                    "protocol for MT10; the MT50 papers use 50)")
    mw.add_argument("--out", required=True, help="dataset folder to create")
    mw.add_argument("--cameras", nargs="+", default=["corner2"], help="first one is stored as observation.image")
    mw.add_argument("--camera", choices=["vidact", "lerobot"], default="vidact",
                    help="vidact: fast renderer (shadows/reflections/skybox off; evaluate with vidact eval); "
                    "lerobot: exactly the image lerobot-eval gives a policy (LeRobot's env at 480x480, "
                    "resized as the policy resizes it; ~9x slower to render)")
    mw.add_argument("--state", default="agent", help="observation.state: agent "
                    "(hand xyz + gripper, what LeRobot's env gives) or privileged (+ the object's and the goal's xyz: "
                    "a diagnostic, is reading the scene from pixels what limits a policy?)")
    mw.add_argument("--position-noise", type=float, default=0.0, metavar="METRES", help="with --state "
                    "privileged: shift the object's and the goal's xyz by one Gaussian offset per episode and "
                    "dimension with this std (e.g. 0.025), as a perception module's error would; vidact eval "
                    "repeats it (default 0: the true positions)")
    mw.add_argument("--env-state", action="store_true", help="also write observation.environment_state (the "
                    "object's and the goal's xyz) as a training target the policy never sees as input "
                    "(model.env_state_dim: an auxiliary head learns to read it from the frames)")
    mw.add_argument("--height", type=int, default=96)
    mw.add_argument("--width", type=int, default=96)
    mw.add_argument("--seed", type=int, default=0)
    mw.add_argument("--max-steps", type=int, default=400)
    mw.add_argument("--steps-after-success", type=int, default=0, help="keep recording N steps past the first "
                    "success (longer held-out episodes for world-model rollouts; default: end at first success)")
    mw.add_argument("--keep-failed", action="store_true", help="also keep episodes the expert did not finish")
    mw.add_argument("--video-out", default=None, help="also write action-free mp4s + manifest.jsonl here")
    mw.add_argument("--action-free", type=int, default=0, help="per task, N more episodes written only as "
                    "action-free videos in --video-out (their true actions withheld in VIDEO_OUT/withheld_actions, "
                    "to measure `vidact label`); the --episodes demos then go to --out only")
    mw.add_argument("--vcodec", default=None, help="LeRobot video codec (libsvtav1, h264, ...; default libsvtav1, "
                    "h264 for frames under 32 pixels, which libsvtav1 cannot encode)")
    mw.add_argument("--workers", type=int, default=None, help="processes generating tasks in parallel, one task "
                    "at a time each, joined with LeRobot's aggregate_datasets; an interrupted run resumes "
                    "(default: one per CPU core, at most one per task)")
    mw.add_argument("--overwrite", action="store_true")

    ins = sub.add_parser("inspect", help="summarize a LeRobot dataset; non-zero exit if it is malformed")
    ins.add_argument("dir")
    ins.add_argument("--json", action="store_true", help="print the summary as JSON")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # MetaWorld's import: "No OpenGL_accelerate module"
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.command == "metaworld":
        return _metaworld(args)
    return _inspect(args)


def _metaworld(args: argparse.Namespace) -> int:
    from vidact.data.metaworld import MetaWorldGenConfig, generate, generate_parallel, resolve_tasks

    try:
        tasks = resolve_tasks(args.tasks, args.benchmark)
        cfg = MetaWorldGenConfig(tasks=tasks, episodes=args.episodes, out=args.out, cameras=args.cameras,
                                 camera=args.camera, state=args.state, env_state=args.env_state,
                                 position_noise=args.position_noise,
                                 benchmark=args.benchmark and args.benchmark.upper(),
                                 height=args.height, width=args.width, seed=args.seed, max_steps=args.max_steps,
                                 keep_failed=args.keep_failed,
                                 steps_after_success=args.steps_after_success, video_out=args.video_out, vcodec=args.vcodec,
                                 action_free=args.action_free,
                                 overwrite=args.overwrite)
        workers = min(os.cpu_count() or 1, len(cfg.tasks)) if args.workers is None else args.workers
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        summary = generate(cfg) if workers == 1 or len(cfg.tasks) == 1 else generate_parallel(cfg, workers)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"vidact data metaworld: error: {e}", file=sys.stderr)
        return 2
    width = max(map(len, summary))
    for task, s in summary.items():
        print(f"{task:{width}s}  expert succeeded in {s['expert_successes']} of {s['tried']} episodes tried, "
              f"kept {s['kept']}" + (f" + {s['action_free']} as action-free videos" if "action_free" in s else ""))
    print(f"wrote {args.out} ({len(summary)} tasks; per-task expert success in "
          f"{Path(args.out) / 'meta' / 'vidact_generation.json'})")
    return 0


def inspect_dataset(root: str | Path) -> dict:
    """Summary of a LeRobot dataset; raises ValueError naming what is malformed."""
    import numpy as np

    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    if not info_path.is_file():
        raise ValueError(f"{root} is not a LeRobot dataset: meta/info.json is missing")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{info_path} is not valid JSON: {e}") from None
    for key in ("codebase_version", "fps", "features", "total_episodes", "total_frames"):
        if key not in info:
            raise ValueError(f"{info_path} lacks '{key}'")
    if info["codebase_version"] != "v3.0":
        raise ValueError(f"{root} is LeRobot {info['codebase_version']}; vidact reads v3.0 "
                         "(convert with lerobot/datasets/v30/convert_dataset_v21_to_v30.py)")
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    try:
        meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
        episodes = meta.episodes
    except Exception as e:  # LeRobot's own errors on broken parquet/metadata are not uniform
        raise ValueError(f"{root}: LeRobot cannot read the metadata ({type(e).__name__}: {e})") from None
    if episodes is None or len(episodes) != info["total_episodes"]:
        raise ValueError(f"{root}: info.json says {info['total_episodes']} episodes, the episode table has "
                         f"{0 if episodes is None else len(episodes)}")
    lengths = np.asarray(episodes["length"])
    if int(lengths.sum()) != info["total_frames"]:
        raise ValueError(f"{root}: episodes add up to {int(lengths.sum())} frames, info.json says "
                         f"{info['total_frames']}")
    data_files = sorted((root / "data").glob("*/*.parquet"))
    if not data_files:
        raise ValueError(f"{root}: no parquet files under data/")
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(p).num_rows for p in data_files)
    if rows != info["total_frames"]:
        raise ValueError(f"{root}: data/ holds {rows} frames, info.json says {info['total_frames']}")
    missing_videos = [str(p) for ep in range(len(episodes)) for k in meta.video_keys
                      if not (p := root / meta.get_video_file_path(ep, k)).is_file()]
    if missing_videos:
        raise ValueError(f"{root}: missing video files {sorted(set(missing_videos))[:5]}")
    stats = meta.stats or {}
    summary_stats = {k: {s: np.round(np.asarray(stats[k][s], dtype=float).reshape(-1), 4).tolist()
                         for s in ("mean", "std", "q01", "q99") if s in stats[k]}
                     for k, f in meta.features.items() if k in stats and f["dtype"] in ("float32", "float64")}
    return {
        "root": str(root), "codebase_version": info["codebase_version"], "robot_type": info.get("robot_type"),
        "fps": meta.fps, "episodes": meta.total_episodes, "frames": meta.total_frames,
        "episode_length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
        "tasks": list(meta.tasks.index), "cameras": list(meta.camera_keys),
        "features": {k: {"dtype": f["dtype"], "shape": list(f["shape"])} for k, f in meta.features.items()},
        "stats": summary_stats,
    }


def _inspect(args: argparse.Namespace) -> int:
    try:
        s = inspect_dataset(args.dir)
    except ValueError as e:
        print(f"vidact data inspect: malformed dataset: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    L = s["episode_length"]
    print(f"{s['root']}  (LeRobot {s['codebase_version']}, robot {s['robot_type']})")
    print(f"  episodes {s['episodes']}   frames {s['frames']}   fps {s['fps']}   "
          f"episode length min/mean/max {L['min']}/{L['mean']:.1f}/{L['max']}")
    print(f"  tasks ({len(s['tasks'])}): " + "; ".join(s["tasks"][:10]) + (" ..." if len(s["tasks"]) > 10 else ""))
    print("  features:")
    for k, f in s["features"].items():
        print(f"    {k:28s} {f['dtype']:8s} {f['shape']}")
    print("  stats:")
    for k, st in s["stats"].items():
        if k in ("timestamp", "next.reward"):
            continue
        print(f"    {k}:")
        for name, v in st.items():
            print(f"      {name:4s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
