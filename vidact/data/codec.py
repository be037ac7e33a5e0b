"""The video codec vidact writes LeRobot datasets with (``vidact data metaworld``, ``label``, ``synth``)."""

from __future__ import annotations

DEFAULT_VCODEC = "libsvtav1"  # LeRobot's own default (AV1: small files, decoded by torchcodec)
# LeRobot 0.6.1's libsvtav1 dies with SIGFPE (exit 136, nothing written) on 16x16 and 24x24 frames;
# 32x32 encodes. h264 takes any even size.
SVTAV1_MIN_SIDE = 32


def video_codec(height: int, width: int, requested: str | None = None) -> str:
    """``requested``, or by default libsvtav1 where it encodes frames of this size and h264 below;
    libsvtav1 asked for below its minimum is a ``ValueError`` naming the size and the way out."""
    small = min(height, width) < SVTAV1_MIN_SIDE
    if requested is None:
        return "h264" if small else DEFAULT_VCODEC
    if requested in ("libsvtav1", "av1") and small:
        raise ValueError(f"--vcodec {requested} cannot encode {height}x{width} frames (libsvtav1 needs both sides "
                         f">= {SVTAV1_MIN_SIDE}); pass --vcodec h264 or a larger --height/--width")
    return requested
