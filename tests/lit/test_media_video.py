"""Media as video: the mp4 written next to the PNGs (real | predicted, history then future) decodes
with the right frame count and size, and is logged to wandb (offline) as a video."""

from __future__ import annotations

import av
import numpy as np
import torch

from vidact.config import load
from vidact.lit.media import VIDEO_MIN_HEIGHT, video_frames, write_mp4
from vidact.train import train

RECIPE = "debug_sliding_square"


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_video_frames_show_history_then_real_and_predicted(tmp_path):
    obs = torch.zeros(2, 2, 1, 3, 16, 16)  # black history
    real, predicted = torch.ones(2, 3, 1, 3, 16, 16), torch.full((2, 3, 1, 3, 16, 16), 0.5)
    clip = video_frames(obs, real, predicted)
    scale = VIDEO_MIN_HEIGHT // 16
    assert clip.shape == (5, (2 * 16 + 2) * scale, (2 * 16 + 2) * scale, 3) and clip.dtype == np.uint8
    tile = 16 * scale
    assert (clip[:2, :tile, :tile] == 0).all() and (clip[:2, :tile, -tile:] == 0).all()  # history: both sides
    assert (clip[2:, :tile, :tile] == 255).all() and (clip[2:, :tile, -tile:] == 128).all()  # real | predicted
    decoded = decode(write_mp4(clip, tmp_path / "clip.mp4"))
    assert decoded.shape == clip.shape
    assert np.abs(decoded.astype(int) - clip.astype(int)).mean() < 3  # lossy, but the same picture
    odd = video_frames(torch.zeros(1, 1, 1, 1, 5, 7), None, torch.ones(1, 1, 1, 1, 5, 7))
    assert odd.shape[1] % 2 == 0 and odd.shape[2] % 2 == 0  # H.264 needs even sizes
    assert decode(write_mp4(odd, tmp_path / "odd.mp4")).shape == odd.shape


def test_training_writes_mp4_and_logs_it_to_wandb(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load(RECIPE, ["train.batch_size=4", "train.steps=2", "train.warmup_steps=10", f"run_dir={run_dir}",
                        "log.wandb=offline", "log.media_every=2", "log.media_samples=2",
                        "log.media_sampler_steps=2"])
    train(cfg)
    video = run_dir / "media" / "step-00000002-video.mp4"
    assert video.is_file() and (run_dir / "media" / "step-00000002-frames.png").is_file()
    frames = decode(video)
    assert frames.shape[0] == cfg.model.history + cfg.model.future_frames
    scale = -(-VIDEO_MIN_HEIGHT // cfg.model.height)
    assert frames.shape[1] == (2 * cfg.model.height + 2) * scale  # two samples, one row each
    logged = list((run_dir / "wandb").glob("offline-run-*/files/media/videos/media/video_*.mp4"))
    assert len(logged) == 1, sorted(p.relative_to(run_dir) for p in (run_dir / "wandb").rglob("*.mp4"))
