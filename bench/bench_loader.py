"""Samples/s of vidact's robot loader vs LeRobot's own LeRobotDataset, same windows, same dataset.

Both read the same LeRobot v3.0 dataset with the same ``delta_timestamps`` (derived from one
VidActConfig), through a shuffled DataLoader with the same seed, batch size and worker count:
- ``lerobot``: ``LeRobotDataset.__getitem__`` + default collate (a fresh decoder cache per worker,
  without which LeRobot's module-global cache fails in forked workers);
- ``vidact``: ``vidact.data.robot.RobotDataset`` (reader="vidact") + ``Batch.collate``.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 python bench/bench_loader.py --workers 0 2

Without ``--dataset`` it first generates MetaWorld expert episodes at 96x96 into ``--cache``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from vidact.data.robot import RobotDataset, lerobot_worker_init_fn
from vidact.models.configuration import VidActConfig
from vidact.types import Batch


def run(loader: DataLoader, batches: int, warmup: int) -> float:
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        n += batch.batch_size if isinstance(batch, Batch) else len(batch["index"])
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="LeRobot v3.0 dataset folder (default: generate MetaWorld)")
    p.add_argument("--cache", default="/tmp/vidact_bench_metaworld", help="where the generated dataset goes")
    p.add_argument("--episodes", type=int, default=6, help="episodes per task when generating")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the main process")
    p.add_argument("--history", type=int, default=2)
    p.add_argument("--future-frames", type=int, default=4)
    p.add_argument("--chunk-length", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(args.dataset or args.cache)
    if args.dataset is None and not (root / "meta" / "info.json").is_file():
        from vidact.data.commands import main as data_main

        data_main(["metaworld", "--tasks", "button-press-topdown-v3", "drawer-open-v3", "--episodes",
                   str(args.episodes), "--out", str(root), "--height", "96", "--width", "96", "--overwrite"])
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
    H, W, _ = meta.features[meta.camera_keys[0]]["shape"]
    cfg = VidActConfig(height=H, width=W, views=len(meta.camera_keys), history=args.history,
                       future_frames=args.future_frames, future_frame_stride=4, chunk_length=args.chunk_length)
    ours = RobotDataset(root, cfg)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    theirs = LeRobotDataset(f"local/{root.name}", root=root, delta_timestamps=ours.delta_timestamps,
                            video_backend="torchcodec")
    print(f"dataset {root}: {meta.total_episodes} episodes, {meta.total_frames} frames, {meta.fps} fps, "
          f"cameras {meta.camera_keys} {H}x{W}")
    print(f"windows: history {cfg.history}, future {cfg.future_frames} (stride {cfg.future_frame_stride}), "
          f"chunk {cfg.chunk_length}; batch {args.batch_size}, {args.batches} timed batches, torch threads "
          f"{args.threads}, {os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'lerobot samples/s':>18} {'vidact samples/s':>17} {'speedup':>8}")
    for workers in args.workers:
        rates = {}
        for name, ds, collate, init in (("lerobot", theirs, None, lerobot_worker_init_fn),
                                        ("vidact", ours, Batch.collate, None)):
            sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(0), replacement=True,
                                    num_samples=args.batch_size * (args.batches + args.warmup))
            loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=workers,
                                collate_fn=collate, worker_init_fn=init,
                                multiprocessing_context="fork" if workers else None)
            rates[name] = run(loader, args.batches, args.warmup)
        print(f"{workers:>7} {rates['lerobot']:>18.1f} {rates['vidact']:>17.1f} "
              f"{rates['vidact'] / rates['lerobot']:>7.2f}x")


if __name__ == "__main__":
    main()
