"""Frame transforms shared by every data source: bring decoded frames to the model's resolution.

All take uint8 or float frames shaped [T,C,H,W] and return float32 in [0, 1] (LeRobot's frame
convention, see ``vidact.types``). Resizing happens on float with antialiasing so downscaling a
720p web video to 64x64 does not alias.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FIT_MODES = ("resize", "center_crop", "random_crop")


def to_float01(frames: Tensor) -> Tensor:
    if frames.dtype == torch.uint8:
        # numpy, not torch: elementwise numpy is single-threaded, while torch's intra-op pool makes
        # this small op ~100x slower when the cores are busy (measured: 2 threads on 2 loaded cores).
        # Same float32 division as LeRobot's ``frames / 255.0``, so both readers agree bit for bit.
        return torch.from_numpy(np.divide(frames.numpy(), np.float32(255.0), dtype=np.float32))
    return frames.float()


def fit_frames(frames: Tensor, height: int, width: int, mode: str = "resize",
               generator: torch.Generator | None = None) -> Tensor:
    """[T,C,h,w] -> [T,C,height,width] float in [0, 1].

    ``resize`` stretches to the target (robot cameras: the model sees the whole field of view);
    ``center_crop`` / ``random_crop`` scale the shorter side to cover the target and crop the rest
    (web video: keeps the aspect ratio of arbitrary sources). A random crop picks one offset for
    the whole clip so motion stays consistent across frames.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"frame fit mode {mode!r} is not one of {list(FIT_MODES)}")
    if frames.ndim != 4:
        raise ValueError(f"expected frames shaped [T,C,H,W], got {list(frames.shape)}")
    frames = to_float01(frames)
    h, w = frames.shape[-2:]
    if (h, w) == (height, width):
        return frames
    if mode == "resize":
        return _resize(frames, height, width)
    scale = max(height / h, width / w)
    # ceil so the scaled frame always covers the target even after float rounding
    sh, sw = max(height, int(-(-h * scale // 1))), max(width, int(-(-w * scale // 1)))
    frames = _resize(frames, sh, sw) if (sh, sw) != (h, w) else frames
    if mode == "center_crop":
        top, left = (sh - height) // 2, (sw - width) // 2
    else:
        top = int(torch.randint(sh - height + 1, (1,), generator=generator))
        left = int(torch.randint(sw - width + 1, (1,), generator=generator))
    return frames[..., top: top + height, left: left + width]


def _resize(frames: Tensor, height: int, width: int) -> Tensor:
    out = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)  # bilinear with antialias can overshoot slightly


def frame_to_uint8(frame: Tensor) -> np.ndarray:
    """[C,H,W] in [0,1] -> [H,W,3] uint8 for pictures and videos (grey for one channel)."""
    x = frame.detach().float().clamp(0, 1).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
