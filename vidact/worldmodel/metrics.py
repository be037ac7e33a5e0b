"""Frame metrics for imagined futures, per frame, none of which blur alone can win.

All take frames ``[N,C,H,W]`` in [0, 1] and return one value per frame ``[N]``:
- ``mse`` / ``psnr``: full-frame pixel error (the static background dominates);
- ``ssim``: structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5);
- ``moving_mse``: error only on the pixels that differ between the last observed frame and the true
  future, where copying the last frame scores worst and a world model has to put things.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# A pixel "moves" when some channel changes by more than this between the last observed and the
# true future frame (video compression noise on a static MetaWorld scene stays below ~0.03).
MOVING_THRESHOLD = 0.1


def mse(pred: Tensor, real: Tensor) -> Tensor:
    return (pred.float() - real.float()).pow(2).flatten(1).mean(1)


def psnr(pred: Tensor, real: Tensor) -> Tensor:
    return 10 * torch.log10(1.0 / mse(pred, real).clamp(min=1e-10))


def psnr_of(mse_value: float) -> float:
    return 10 * math.log10(1.0 / max(mse_value, 1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # [size,size]


def ssim(pred: Tensor, real: Tensor) -> Tensor:
    """Mean SSIM per frame over channels and valid window positions (data range 1)."""
    pred, real = pred.float(), real.float()
    C = pred.shape[1]
    size = min(11, pred.shape[-1], pred.shape[-2])
    window = _gaussian_window(size).to(pred.device)[None, None].expand(C, 1, size, size)
    blur = lambda x: F.conv2d(x, window, groups=C)  # noqa: E731
    mu_p, mu_r = blur(pred), blur(real)
    var_p = blur(pred * pred) - mu_p.pow(2)
    var_r = blur(real * real) - mu_r.pow(2)
    cov = blur(pred * real) - mu_p * mu_r
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_p * mu_r + c1) * (2 * cov + c2)) / ((mu_p.pow(2) + mu_r.pow(2) + c1) * (var_p + var_r + c2))
    return s.flatten(1).mean(1)


def moving_mask(last: Tensor, real: Tensor, threshold: float = MOVING_THRESHOLD) -> Tensor:
    """[N,1,H,W] bool: pixels where the true future differs from the last observed frame."""
    return ((real.float() - last.float()).abs().amax(1, keepdim=True) > threshold)


def moving_mse(pred: Tensor, real: Tensor, last: Tensor, threshold: float = MOVING_THRESHOLD) -> Tensor:
    """Pixel MSE over the moving pixels only; NaN for a frame where nothing moved."""
    mask = moving_mask(last, real, threshold).float()
    err = (pred.float() - real.float()).pow(2).mean(1, keepdim=True)
    n = mask.flatten(1).sum(1)
    return torch.where(n > 0, (err * mask).flatten(1).sum(1) / n.clamp(min=1), torch.full_like(n, float("nan")))


def frame_metrics(pred: Tensor, real: Tensor, last: Tensor) -> dict[str, Tensor]:
    """Every per-frame metric at once: {"mse", "psnr", "ssim", "moving_mse"} -> [N]."""
    return {"mse": mse(pred, real), "psnr": psnr(pred, real), "ssim": ssim(pred, real),
            "moving_mse": moving_mse(pred, real, last)}
