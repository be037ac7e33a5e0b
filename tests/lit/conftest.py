"""A small LeRobot dataset for training on real data loading (written by LeRobot's own writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def robot_dataset(tmp_path_factory) -> Path:
    """Two episodes, one 30x42 camera (16x16 frames crashed the video encoder with SIGFPE); state
    and action far from zero mean / unit std, so the normalization stats differ from the identity."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.codec import keep_scheduling

    root = tmp_path_factory.mktemp("lit") / "robot"
    features = {
        "observation.images.cam": {"dtype": "video", "shape": (30, 42, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["dx", "dy"]},
    }
    ds = LeRobotDataset.create("test/lit", fps=10, features=features, root=root, use_videos=True)
    for episode in range(2):
        for t in range(12):
            ds.add_frame({
                "observation.images.cam": np.full((30, 42, 3), 20 * t, dtype=np.uint8),
                "observation.state": np.array([100 + t, -50 + episode], dtype=np.float32),
                "action": np.array([10 + 3 * t, 5 - t], dtype=np.float32),
                "task": "slide the block",
            })
        with keep_scheduling():  # LeRobot's AV1 encoder would leave pytest real-time
            ds.save_episode()
    with keep_scheduling():
        ds.finalize()
    return root


@pytest.fixture(scope="session")
def metaworld_data(tmp_path_factory) -> dict[str, Path]:
    """2 scripted-expert episodes of button-press-topdown-v3 (one 32x32 camera) as a LeRobot
    dataset, and the same episodes as action-free mp4 clips with a manifest (~12 s)."""
    import os

    from vidact.data.commands import main

    os.environ.setdefault("MUJOCO_GL", "egl")
    root = tmp_path_factory.mktemp("lit_mw")
    rc = main(["metaworld", "--tasks", "button-press-topdown-v3", "--episodes", "2", "--out", str(root / "button"),
               "--height", "32", "--width", "32", "--seed", "3", "--video-out", str(root / "videos")])
    assert rc == 0
    return {"lerobot": root / "button", "manifest": root / "videos" / "manifest.jsonl"}
