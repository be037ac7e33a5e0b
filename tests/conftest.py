"""Shared test set-up: offline, CPU, small thread count, deterministic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_cfg():
    from vidact.models import VidActConfig
    from vidact.models.configuration import FrameTokenizerConfig

    return VidActConfig(flavor="tiny", height=32, width=32, history=2, future_frames=2, views=2, chunk_length=8,
                        state_dim=3, action_dim=5, frame_tokenizer=FrameTokenizerConfig(kind="patch", patch_size=8))


@pytest.fixture
def tiny_model(tiny_cfg):
    from vidact.models import VidAct

    torch.manual_seed(0)
    model = VidAct(tiny_cfg)
    # Non-zero output heads and adaLN, so parity tests compare real numbers, not zeros.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(std=0.05)
    return model.eval()


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """A test whose fixtures encode AV1 through LeRobot's own API (libsvtav1) would leave the pytest
    process real-time (SCHED_FIFO 99, as root), and every later test's subprocesses with it
    (``vidact.data.codec.keep_scheduling``)."""
    from vidact.data.codec import keep_scheduling

    with keep_scheduling():
        yield
