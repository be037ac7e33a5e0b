"""Logging: wandb offline with a run id that survives resume, throughput columns, media files."""

from __future__ import annotations

import csv

import torch
from PIL import Image

from vidact.config import load
from vidact.lit.media import actions_plot, frames_grid
from vidact.train import train

RECIPE = "debug_sliding_square"
TINY = ["train.batch_size=4", "train.log_every=1", "train.warmup_steps=10", "train.checkpoint_every=2"]


def test_wandb_offline_id_media_and_throughput(tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY, f"run_dir={run_dir}", "log.wandb=offline", "log.media_every=2", "log.media_samples=2",
              "log.media_sampler_steps=2"]
    train(load(RECIPE, [*common, "train.steps=2"]))
    run_id = (run_dir / "wandb_id").read_text().strip()
    train(load(RECIPE, [*common, "train.steps=4"]))  # resumed: same wandb run
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    offline_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    # wandb names the folder offline-run-<time>-<id>, adding "-1" when both runs start in the same second.
    assert len(offline_runs) == 2 and all(f"-{run_id}" in name for name in offline_runs)

    cfg = load(RECIPE)
    frames = Image.open(run_dir / "media" / "step-00000004-frames.png")
    # 2 samples x (last observed + real future + predicted future frames), 2-pixel gaps.
    tiles = 1 + 2 * cfg.model.future_frames
    assert frames.size == (tiles * cfg.model.width + 2 * (tiles - 1), 2 * cfg.model.height + 2)
    actions = Image.open(run_dir / "media" / "step-00000004-actions.png")
    assert actions.size == (cfg.model.action_dim * 160, 2 * 90)
    assert (run_dir / "media" / "step-00000002-frames.png").is_file()

    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("tokens/s")]
    assert rows and all(float(r["tokens/s"]) > 0 for r in rows)


def test_media_images_show_real_and_predicted():
    obs = torch.zeros(1, 1, 1, 3, 4, 4)
    real, predicted = torch.ones(1, 2, 1, 3, 4, 4), torch.full((1, 2, 1, 3, 4, 4), 0.5)
    grid = torch.tensor(list(frames_grid(obs, real, predicted).getdata()))
    assert grid.shape[0] == (5 * 4 + 4 * 2) * 4 and {0, 128, 255} <= set(grid.flatten().tolist())
    plot = actions_plot(torch.zeros(1, 4, 2), torch.arange(8.0).reshape(1, 4, 2))
    colors = set(plot.getdata())
    assert (30, 150, 30) in colors and (200, 30, 30) in colors
