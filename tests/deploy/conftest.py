"""A real (tiny) training run through the CLI, exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """debug_sliding_square trained for 4 steps (16x16 grey frames, 2-dim state and action, K=4)."""
    from vidact.cli import main

    run_dir = tmp_path_factory.mktemp("deploy") / "run"
    assert main(["train", "debug_sliding_square", "train.steps=4", "train.batch_size=8", f"run_dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture(scope="session")
def bundle(trained_run, tmp_path_factory) -> Path:
    from vidact.cli import main

    out = tmp_path_factory.mktemp("bundle") / "pretrained_model"
    assert main(["export", str(trained_run), str(out)]) == 0
    return out
