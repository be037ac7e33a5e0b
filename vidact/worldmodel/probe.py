"""An objective reader of imagined frames: a small CNN trained on real frames to regress a
slice of the robot state (MetaWorld: the hand's xyz, ``observation.state[:3]``, in metres).

Applied to imagined frames it says where the model put the arm, in physical units, so a world
model is judged by where things are rather than by pixel error, which blur can win: the probe's
error on imagined frames is compared with its error on the copied last frame and on the real
future frame (its own floor).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROBE_WEIGHTS, PROBE_CONFIG = "probe.safetensors", "probe.json"


@dataclass
class ProbeConfig:
    channels: int = 3
    height: int = 96
    width: int = 96
    dims: list[int] = field(default_factory=lambda: [0, 1, 2])  # state dims read (MetaWorld: hand x, y, z)
    width_mult: int = 16


def conv_trunk(channels: int, height: int, width: int, width_mult: int) -> tuple[nn.Sequential, int]:
    """Four stride-2 convolutions (GroupNorm, SiLU) -> (the trunk, its flattened output size)."""
    chans = [channels, width_mult, 2 * width_mult, 4 * width_mult, 4 * width_mult]
    layers: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(min(8, b), b), nn.SiLU()]
    for _ in range(4):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return nn.Sequential(*layers), chans[-1] * height * width


class StateProbe(nn.Module):
    """[N,C,H,W] frames in [0,1] -> [N,len(dims)] state values (raw units). Strided convolutions,
    then a linear read-out of the whole final map: position is where things are, so no pooling."""

    def __init__(self, config: ProbeConfig):
        super().__init__()
        self.config = config
        self.features, flat = conv_trunk(config.channels, config.height, config.width, config.width_mult)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.SiLU(),
                                  nn.Linear(128, len(config.dims)))
        self.register_buffer("mean", torch.zeros(len(config.dims)))
        self.register_buffer("std", torch.ones(len(config.dims)))

    def forward(self, frames: Tensor) -> Tensor:
        return self.head(self.features(frames.float() * 2 - 1)) * self.std + self.mean

    @torch.no_grad()
    def predict(self, frames: Tensor, batch_size: int = 256) -> Tensor:
        self.eval()
        return torch.cat([self(frames[i: i + batch_size]) for i in range(0, len(frames), batch_size)])

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / PROBE_WEIGHTS))
        (folder / PROBE_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "StateProbe":
        from safetensors.torch import load_file

        folder = Path(folder)
        probe = cls(ProbeConfig(**json.loads((folder / PROBE_CONFIG).read_text())))
        probe.load_state_dict(load_file(str(folder / PROBE_WEIGHTS)))
        return probe.eval()


def train_probe(frames: Tensor, targets: Tensor, config: ProbeConfig, steps: int = 1500, batch_size: int = 64,
                lr: float = 2e-3, seed: int = 0, shift: int = 2, log=None) -> StateProbe:
    """Fit a probe on real ``frames`` [N,C,H,W] and ``targets`` [N,len(dims)]. ``shift``: random
    translation by up to that many pixels (the probe must not key on single pixel values)."""
    torch.manual_seed(seed)
    probe = StateProbe(config)
    probe.mean.copy_(targets.mean(0))
    probe.std.copy_(targets.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    probe.train()
    for step in range(steps):
        idx = torch.randint(len(frames), (batch_size,), generator=generator)
        x = frames[idx].float()
        if shift:
            x = F.pad(x, (shift,) * 4, mode="replicate")
            dy, dx = torch.randint(2 * shift + 1, (2,), generator=generator).tolist()
            x = x[..., dy: dy + config.height, dx: dx + config.width]
        loss = F.smooth_l1_loss((probe(x) - probe.mean) / probe.std, (targets[idx] - probe.mean) / probe.std,
                                beta=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"probe step {step + 1}/{steps}: loss {loss.item():.4f}")
    return probe.eval()
