"""A small frame autoencoder trained in-project on the robot's own frames: the latent space a world
model predicts in (``model.frame_tokenizer.kind=vae`` with ``vae_path`` pointing at its folder).

Why not a diffusers ``AutoencoderKL``: its first and last convolutions run at full resolution,
which costs ~10 s per batch of 32 96x96 frames on one CPU core. This one starts with a
space-to-depth step (``patch``: 96x96x3 -> 24x24x48) and works at 1/4 and 1/8 resolution,
~40x cheaper, so it trains on this machine in minutes (``vidact autoencoder``).

Latents come out normalized per channel (mean 0, std 1 over the training frames; buffers set after
training), so the world model's noise schedule sees unit-scale tokens. The decoder is trained on
latents with a little Gaussian noise added (``latent_noise``): what it will decode at run time
are a world model's imperfect predictions, not clean encodings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUTOENCODER_CONFIG, AUTOENCODER_WEIGHTS = "vidact_autoencoder.json", "autoencoder.safetensors"


@dataclass
class AutoencoderConfig:
    channels: int = 3
    latent_channels: int = 8
    patch: int = 4  # space-to-depth factor before the first convolution
    widths: list[int] = field(default_factory=lambda: [64, 128])  # one stage each; every stage after the first halves H, W
    blocks: int = 1  # residual blocks per stage (the decoder has one more)

    @property
    def downsample(self) -> int:
        return self.patch * 2 ** (len(self.widths) - 1)


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        groups = min(8, width)
        self.body = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FrameAutoencoder(nn.Module):
    """[N,C,H,W] in [-1,1] <-> normalized latents [N,latent_channels,H/d,W/d], d = ``config.downsample``.
    Deterministic (no KL term): the world model needs a faithful, smooth latent space, not samples."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        c, w = config, config.widths
        enc: list[nn.Module] = [nn.PixelUnshuffle(c.patch), nn.Conv2d(c.channels * c.patch ** 2, w[0], 3, padding=1)]
        for i, width in enumerate(w):
            if i:
                enc.append(nn.Conv2d(w[i - 1], width, 3, stride=2, padding=1))
            enc += [_ResBlock(width) for _ in range(c.blocks)]
        enc += [nn.GroupNorm(min(8, w[-1]), w[-1]), nn.SiLU(), nn.Conv2d(w[-1], c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, w[-1], 3, padding=1)]
        for i in reversed(range(len(w))):
            dec += [_ResBlock(w[i]) for _ in range(c.blocks + 1)]
            if i:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i], w[i - 1], 3, padding=1)]
        dec += [nn.GroupNorm(min(8, w[0]), w[0]), nn.SiLU(), nn.Conv2d(w[0], c.channels * c.patch ** 2, 3, padding=1),
                nn.PixelShuffle(c.patch)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_mean", torch.zeros(c.latent_channels))
        self.register_buffer("latent_std", torch.ones(c.latent_channels))

    # The interface VAETokenizer reads (beside diffusers' AutoencoderKL).
    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def dtype(self) -> torch.dtype:
        return self.latent_mean.dtype

    def encode_raw(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode_raw(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def encode(self, x: Tensor) -> Tensor:
        """[N,C,H,W] in [-1,1] -> normalized latents."""
        return (self.encoder(x) - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, z: Tensor) -> Tensor:
        """normalized latents -> [N,C,H,W], about [-1,1] (not clamped)."""
        return self.decoder(z * self.latent_std[:, None, None] + self.latent_mean[:, None, None])

    def save_pretrained(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / AUTOENCODER_WEIGHTS))
        write_config(self.config, folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, weights: bool = True) -> "FrameAutoencoder":
        folder = Path(folder)
        model = cls(read_config(folder))
        if weights:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(folder / AUTOENCODER_WEIGHTS)))
        return model.eval()


def is_autoencoder_folder(folder: str | Path) -> bool:
    return (Path(folder) / AUTOENCODER_CONFIG).is_file()


def read_config(folder: str | Path) -> AutoencoderConfig:
    return AutoencoderConfig(**json.loads((Path(folder) / AUTOENCODER_CONFIG).read_text()))


def write_config(config: AutoencoderConfig, folder: str | Path) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / AUTOENCODER_CONFIG).write_text(json.dumps(asdict(config), indent=2))


def reconstruction_loss(model: FrameAutoencoder, x: Tensor, weight: Tensor, latent_noise: float) -> Tensor:
    """Weighted MSE + L1 of the reconstruction of ``x`` [N,C,H,W] in [-1,1]; ``weight`` [N,1,H,W]
    (moving pixels count more: they are the arm and what it moves, a few percent of the frame)."""
    z = model.encode_raw(x)
    if latent_noise:
        z = z + latent_noise * z.detach().std(dim=(0, 2, 3), keepdim=True) * torch.randn_like(z)
    err = model.decode_raw(z) - x
    return ((err.pow(2) + 0.1 * err.abs()) * weight).mean() / weight.mean()
