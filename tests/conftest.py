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


def _scheduling() -> tuple[int, int] | None:
    try:
        return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):  # no scheduler API (not Linux)
        return None


_START_SCHEDULING = _scheduling()  # pytest's own, before any fixture encoded


def _restore_start_scheduling() -> None:
    if _START_SCHEDULING is not None and _scheduling() != _START_SCHEDULING:
        os.sched_setscheduler(0, _START_SCHEDULING[0], os.sched_param(_START_SCHEDULING[1]))


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """A fixture that encodes AV1 through LeRobot's own API (libsvtav1) leaves the pytest process
    real-time (SCHED_FIFO 99, as root), and every later test's subprocesses with it
    (``vidact.data.codec.keep_scheduling``): a session-scoped fixture does so before this one runs,
    so each test starts, and ends, at the scheduling pytest started with. Seen without it: the
    suite pinned to one core hung in a two-rank test, one real-time rank starving the other."""
    _restore_start_scheduling()
    yield
    _restore_start_scheduling()
