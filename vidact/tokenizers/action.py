"""Per-dimension normalization of state and actions, stored as buffers inside the model.

``x_n = (x - offset) / scale`` with an exact inverse ``x = x_n * scale + offset``:
- ``mean_std``: offset = mean, scale = std
- ``quantile``: offset = (q01 + q99) / 2, scale = (q99 - q01) / 2, so [q01, q99] -> [-1, 1] (openpi)
A constant dimension (scale below ``eps``) gets scale 1, so it never divides by zero. Values are
not clipped: clipping would break the exact inverse.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

EPS = 1e-6


class Normalizer(nn.Module):
    FIELDS = ("state", "action")

    def __init__(self, state_dim: int, action_dim: int, mode: str = "mean_std"):
        super().__init__()
        if mode not in ("mean_std", "quantile"):
            raise ValueError(f"model.normalization={mode!r} is not one of ['mean_std', 'quantile']")
        self.mode = mode
        for name, dim in (("state", state_dim), ("action", action_dim)):
            self.register_buffer(f"{name}_offset", torch.zeros(dim))
            self.register_buffer(f"{name}_scale", torch.ones(dim))
        # Saved with the weights so a loaded policy knows whether it was ever given statistics.
        self.register_buffer("has_stats", torch.tensor(False))

    def set_stats(self, stats: Mapping[str, Mapping[str, object]]) -> None:
        """``stats[field][key]`` with field in (state, action) and keys mean/std or q01/q99."""
        for name in self.FIELDS:
            if name not in stats:
                raise KeyError(f"normalization stats are missing '{name}' (have {sorted(stats)})")
            s = {k: torch.as_tensor(v, dtype=torch.float32).flatten() for k, v in stats[name].items()}
            need = ("mean", "std") if self.mode == "mean_std" else ("q01", "q99")
            missing = [k for k in need if k not in s]
            if missing:
                raise KeyError(f"normalization stats for '{name}' lack {missing} needed by mode {self.mode!r}")
            if self.mode == "mean_std":
                offset, scale = s["mean"], s["std"]
            else:
                offset, scale = (s["q01"] + s["q99"]) / 2, (s["q99"] - s["q01"]) / 2
            expected = getattr(self, f"{name}_offset").shape[0]
            if offset.shape[0] != expected:
                raise ValueError(f"normalization stats for '{name}' have {offset.shape[0]} dims, the model expects "
                                 f"{expected}")
            scale = torch.where(scale.abs() < EPS, torch.ones_like(scale), scale)
            getattr(self, f"{name}_offset").copy_(offset)
            getattr(self, f"{name}_scale").copy_(scale)
        self.has_stats.fill_(True)

    def normalize(self, name: str, x: Tensor) -> Tensor:
        return (x - getattr(self, f"{name}_offset")) / getattr(self, f"{name}_scale")

    def unnormalize(self, name: str, x: Tensor) -> Tensor:
        return x * getattr(self, f"{name}_scale") + getattr(self, f"{name}_offset")
