"""Training on a LeRobot dataset through the colleague's loader: stats reach the model, and a
resumed run continues the sampler's stream exactly where the checkpoint left it."""

from __future__ import annotations

import torch

from vidact.config import load
from vidact.train import train

MODEL = ["model.channels=3", "model.state_dim=2", "model.action_dim=2", "model.history=1", "model.chunk_length=4"]


def _run(robot_dataset, run_dir, steps: int) -> dict:
    # warmup (30 in the recipe) outlasts every run here, so lr(step) does not depend on train.steps.
    data = ["data.kind=lerobot", f"data.sources=[{{kind: lerobot, path: '{robot_dataset}'}}]"]
    train(load("debug_sliding_square", [*MODEL, *data, "train.batch_size=4", "train.log_every=1",
                                        f"train.steps={steps}", f"run_dir={run_dir}"]))
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_train_on_robot_data_sets_stats_and_resumes(robot_dataset, tmp_path):
    at_2 = _run(robot_dataset, tmp_path / "resumed", 2)
    state = at_2["state_dict"]
    assert bool(state["model.normalizer.has_stats"])
    # Mean of the state's first dim is 105.5 (100 + 0..11, both episodes).
    assert abs(float(state["model.normalizer.state_offset"][0]) - 105.5) < 1e-3

    resumed = _run(robot_dataset, tmp_path / "resumed", 3)
    straight = _run(robot_dataset, tmp_path / "straight", 3)
    assert resumed["global_step"] == 3 and resumed["vidact"]["batches_consumed"] == 3
    for name, weight in straight["state_dict"].items():
        assert torch.allclose(weight, resumed["state_dict"][name], atol=1e-6), name
