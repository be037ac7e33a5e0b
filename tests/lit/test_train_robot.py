"""Training on a LeRobot dataset through the colleague's loader: stats reach the model, resume works."""

from __future__ import annotations

import torch

from vidact.config import load
from vidact.train import train

MODEL = ["model.channels=3", "model.state_dim=2", "model.action_dim=2", "model.history=1", "model.chunk_length=4"]


def test_train_on_robot_data_sets_stats_and_resumes(robot_dataset, tmp_path):
    run_dir = tmp_path / "robot"
    data = ["data.kind=lerobot", f"data.sources=[{{kind: lerobot, path: '{robot_dataset}'}}]"]
    common = [*MODEL, *data, "train.batch_size=4", "train.log_every=1", f"run_dir={run_dir}"]
    train(load("debug_sliding_square", [*common, "train.steps=2"]))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["state_dict"]
    assert bool(state["model.normalizer.has_stats"])
    # Mean of the state's first dim is 105.5 (100 + 0..11, both episodes).
    assert abs(float(state["model.normalizer.state_offset"][0]) - 105.5) < 1e-3

    train(load("debug_sliding_square", [*common, "train.steps=3"]))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["vidact"]["batches_consumed"] == 3
