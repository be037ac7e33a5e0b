"""The video codec vidact writes LeRobot datasets with (``vidact data metaworld``, ``label``, ``synth``)."""

from __future__ import annotations

import os
from contextlib import contextmanager

DEFAULT_VCODEC = "libsvtav1"  # LeRobot's own default (AV1: small files, decoded by torchcodec)
# LeRobot 0.6.1's libsvtav1 dies with SIGFPE (exit 136, nothing written) on 16x16 and 24x24 frames;
# 32x32 encodes. h264 (4:2:0) takes even sizes. LeRobot's "auto" falls back to libsvtav1 on a machine
# without a hardware encoder.
SVTAV1_MIN_SIDE = 32


def video_codec(height: int, width: int, requested: str | None = None) -> str:
    """``requested``, or by default libsvtav1 where it encodes frames of this size and h264 below;
    a codec that cannot encode this size is a ``ValueError`` naming the size and the way out."""
    if min(height, width) >= SVTAV1_MIN_SIDE:
        return requested or DEFAULT_VCODEC
    if requested in ("libsvtav1", "av1", "auto"):
        raise ValueError(f"--vcodec {requested} cannot encode {height}x{width} frames (libsvtav1 needs both sides "
                         f">= {SVTAV1_MIN_SIDE}); pass --vcodec h264 or a larger --height/--width")
    if requested is None and (height % 2 or width % 2):
        raise ValueError(f"{height}x{width} frames: under {SVTAV1_MIN_SIDE} pixels only h264 encodes them, and it "
                         "needs even sizes; pass an even --height/--width")
    return requested or "h264"


@contextmanager
def keep_scheduling():
    """Undo what the SVT-AV1 encoder does to the calling thread. When it may (as root: containers,
    this machine), libsvtav1 raises the thread that encodes to real-time priority (SCHED_FIFO 99),
    and the thread keeps it: every process started from it afterwards (training, evaluation
    workers, DDP ranks) then runs real-time, can starve the rest of the machine and ignores kill
    while it spins (seen here: a two-rank test on one core). Wrap every LeRobot call that encodes
    (``save_episode``, ``finalize``) and every PyAV encode: the policy and priority the thread had
    before are restored after it."""
    try:
        policy, priority = os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):  # no scheduler API (not Linux): nothing to restore
        yield
        return
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority.sched_priority):
            os.sched_setscheduler(0, policy, priority)
