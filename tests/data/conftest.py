"""Data fixtures, all generated here: LeRobot datasets written by LeRobot's own writer (a MetaWorld
expert dataset and a synthetic one with known values), and videos encoded by PyAV and ffmpeg."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

SYNTH_FPS = 10
SYNTH_LENGTHS = (20, 25)
SYNTH_SIZE = (30, 42)  # odd-ish camera resolution, resized by the loader


@pytest.fixture(scope="session")
def synth_spec() -> dict:
    """What :func:`synthetic_dataset` holds (tests import no module from tests/)."""
    return {"fps": SYNTH_FPS, "lengths": SYNTH_LENGTHS, "size": SYNTH_SIZE}


@pytest.fixture(scope="session")
def metaworld_dataset(tmp_path_factory) -> Path:
    """2 expert episodes of button-press-topdown-v3, two cameras at 32x32, plus action-free video."""
    from vidact.data.commands import main

    root = tmp_path_factory.mktemp("mw") / "button"
    rc = main(["metaworld", "--tasks", "button-press-topdown-v3", "--episodes", "2", "--out", str(root),
               "--cameras", "corner2", "topview", "--height", "32", "--width", "32", "--seed", "3",
               "--video-out", str(root.parent / "videos")])
    assert rc == 0
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """Written with LeRobotDataset.create/add_frame/save_episode. Values encode their position:
    state = [episode, frame_index, 0], action = [global index, -frame_index]; camera "a" shows
    brightness 10 * frame_index, camera "b" 250 - 10 * frame_index; two tasks."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.codec import keep_scheduling

    H, W = SYNTH_SIZE
    root = tmp_path_factory.mktemp("synth") / "synth"
    features = {
        "observation.images.a": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        "observation.images.b": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["episode", "frame", "constant"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["index", "neg_frame"]},
    }
    ds = LeRobotDataset.create("test/synth", fps=SYNTH_FPS, features=features, root=root, use_videos=True)
    index = 0
    for ep, length in enumerate(SYNTH_LENGTHS):
        for t in range(length):
            ds.add_frame({
                "observation.images.a": np.full((H, W, 3), 10 * t, dtype=np.uint8),
                "observation.images.b": np.full((H, W, 3), 250 - 10 * t, dtype=np.uint8),
                "observation.state": np.array([ep, t, 0.0], dtype=np.float32),
                "action": np.array([index, -t], dtype=np.float32),
                "task": ["pick the red block", "open the drawer"][ep],
            })
            index += 1
        with keep_scheduling():  # LeRobot's AV1 encoder would leave pytest real-time
            ds.save_episode()
    with keep_scheduling():
        ds.finalize()
    return root


def counting_frames(T: int, H: int, W: int) -> np.ndarray:
    """Frame k is uniform gray 8 * k (decodable back to k despite compression)."""
    return np.stack([np.full((H, W, 3), 8 * k, dtype=np.uint8) for k in range(T)])


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Good videos at odd sizes and rates (H.264 by PyAV, AV1 by the ffmpeg CLI) and bad files."""
    from vidact.data.webvideo import write_video

    d = tmp_path_factory.mktemp("videos")
    write_video(d / "h264_odd.mp4", counting_frames(30, 37, 53), fps=25)
    write_video(d / "h264_ntsc.mp4", counting_frames(30, 121, 77), fps=30000 / 1001)
    raw = counting_frames(24, 45, 61)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "61x45", "-r", "12",
                    "-i", "-", "-vf", "pad=62:46", "-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p",
                    str(d / "av1.mp4")], input=raw.tobytes(), check=True)
    (d / "not_a_video.mp4").write_bytes(b"this is a text file, not a video\n" * 10)
    good = (d / "h264_odd.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) // 3])  # index (moov) at the end: cannot open
    # index at the front: opens, then fails mid-stream ("Could not push packet to decoder")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(d / "h264_odd.mp4"), "-c", "copy", "-movflags",
                    "+faststart", str(d / "faststart.mp4")], check=True)
    front = (d / "faststart.mp4").read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(front[: len(front) // 2])
    entries = [("h264_odd.mp4", "odd size"), ("h264_ntsc.mp4", "ntsc rate"), ("av1.mp4", "av1 clip"),
               ("not_a_video.mp4", "bad"), ("truncated.mp4", "cut"), ("truncated_faststart.mp4", "cut mid-stream"),
               ("missing.mp4", "gone")]
    with open(d / "manifest.jsonl", "w") as f:
        for path, caption in entries:
            f.write(json.dumps({"path": path, "caption": caption}) + "\n")
    return d
