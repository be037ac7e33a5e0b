"""Unreadable web videos met by several dataloader workers (and ranks) add up to one logged
counter, ``data/skipped_files``, and the end of the run warns with the full list."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidact.config import REPO_ROOT, load
from vidact.train import train

BAD = {"not_a_video.mp4", "truncated.mp4", "missing.mp4", "empty.mp4", "noise.mp4"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """9 entries, 5 of them unreadable, interleaved so every worker meets some."""
    from vidact.data.webvideo import write_video

    d = tmp_path_factory.mktemp("skip_videos")
    rng = np.random.default_rng(0)
    good = []
    for i in range(4):
        write_video(d / f"good{i}.mp4", rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=10)
        good.append(f"good{i}.mp4")
    (d / "not_a_video.mp4").write_bytes(b"not a video\n" * 20)
    data = (d / "good0.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "empty.mp4").write_bytes(b"")
    (d / "noise.mp4").write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    order = ["not_a_video.mp4", good[0], "truncated.mp4", good[1], "missing.mp4", good[2], "empty.mp4", good[3],
             "noise.mp4"]
    with open(d / "manifest.jsonl", "w") as f:
        for name in order:
            f.write(json.dumps({"path": name, "caption": name}) + "\n")
    return d / "manifest.jsonl"


def _overrides(manifest: Path, run_dir: Path, steps: int, batch_size: int) -> list[str]:
    return [f"data.sources=[{{kind: webvideo, path: '{manifest}', fps: 10.0}}]", "data.num_workers=2",
            f"train.batch_size={batch_size}", f"train.steps={steps}", "train.log_every=1",
            "train.checkpoint_every=3", "log.media_every=0", f"run_dir={run_dir}"]


def _last_skipped(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("data/skipped_files")]
    return float(rows[-1]["data/skipped_files"])


def test_skips_from_two_workers_add_up(manifest, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # 3 batches of 3 = one pass over the 9 entries: every unreadable file is tried by some worker.
    train(load("debug_pretrain_webvideo", _overrides(manifest, run_dir, steps=3, batch_size=3)))
    assert _last_skipped(run_dir) == len(BAD)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "unreadable file(s) skipped" in x)
    assert line.startswith(f"warning: {len(BAD)} unreadable")
    assert all(name in line for name in BAD) and "good" not in line

    # Resumed for one more step: the files found before the checkpoint still count.
    train(load("debug_pretrain_webvideo", _overrides(manifest, run_dir, steps=4, batch_size=3)))
    assert _last_skipped(run_dir) == len(BAD)


def test_skips_from_two_ranks_add_up(manifest, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("SLURM_JOB_ID", None)
    # Each rank reads every other entry of the pass (4 of 9 per rank over 2 steps of 2; a third step
    # finishes the pass): no rank alone meets all the broken files, the logged total is theirs together.
    cmd = [sys.executable, "-m", "vidact.cli", "train", "debug_pretrain_webvideo",
           *_overrides(manifest, run_dir, steps=3, batch_size=2), "train.strategy=ddp", "train.devices=2",
           "train.accelerator=cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _last_skipped(run_dir) == len(BAD)
    assert f"warning: {len(BAD)} unreadable file(s) skipped" in proc.stdout


def test_each_worker_sees_only_part_of_the_skips(manifest):
    """Why the counter needs aggregating: a DataLoader's batch i comes from worker i % 2, and both
    workers' batches name skipped files, so no worker's own count is the total."""
    from vidact.data.mixture import SkippedFiles, build_loader

    cfg = load("debug_pretrain_webvideo", [f"data.sources=[{{kind: webvideo, path: '{manifest}', fps: 10.0}}]",
                                           "data.num_workers=2"])
    loader, _ = build_loader(cfg.data, cfg.model, batch_size=1)
    per_worker = [set(), set()]
    skipped = SkippedFiles()
    for i, batch in enumerate(loader):  # one pass over the 9 entries
        per_worker[i % 2].update(f for files in batch.skipped_files for f in files)
        skipped.update(batch)
    assert all(0 < len(w) < len(BAD) for w in per_worker), per_worker
    assert skipped.sync() == len(BAD) and {f.split("/")[-1] for f in skipped.all} == BAD
