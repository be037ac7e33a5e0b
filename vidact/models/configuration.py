"""VidActConfig: everything that fixes the network's shapes, and the flavor registry.

Plain dataclasses (no omegaconf here): ``vidact.config`` wraps them into the typed run config,
and the exported bundle stores them as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

# name -> (width D, depth, heads). Parameter counts are printed by `vidact dry-run`.
FLAVORS: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),  # < 1M parameters, for tests
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}

FRAME_TOKENIZERS = ("patch", "vae")
OBS_ENCODERS = ("tokenizer", "timm")
TEXT_ENCODERS = ("t5", "clip", "siglip", "tiny_t5", "none")
NORMALIZATION_MODES = ("mean_std", "quantile")


@dataclass
class FrameTokenizerConfig:
    kind: str = "patch"  # one of FRAME_TOKENIZERS
    patch_size: int = 8  # pixels per patch side (patch) or latent cells per token side (vae)
    vae_path: Optional[str] = None  # local diffusers AutoencoderKL folder; None with kind=vae builds a tiny random one
    vae_tiny_seed: int = 0


@dataclass
class ObsEncoderConfig:
    """How observed frames become tokens: through the frame tokenizer, or a timm backbone."""

    kind: str = "tokenizer"  # one of OBS_ENCODERS
    timm_name: str = "resnet18"
    weights_path: Optional[str] = None  # local .safetensors/.pth for the timm model; None = random init
    freeze: bool = True


@dataclass
class TextEncoderConfig:
    kind: str = "tiny_t5"  # one of TEXT_ENCODERS
    path: Optional[str] = None  # local transformers checkpoint folder (t5 / clip / siglip)
    max_length: int = 32
    cache_size: int = 4096  # instruction strings whose embeddings are kept in memory


@dataclass
class VidActConfig:
    flavor: str = "tiny"
    dim: Optional[int] = None  # None: from the flavor
    depth: Optional[int] = None
    heads: Optional[int] = None
    mlp_ratio: float = 4.0
    qk_norm: bool = True

    # What one sample looks like (the batch contract's shape letters).
    height: int = 64  # H
    width: int = 64  # W
    channels: int = 3  # C
    views: int = 1  # V
    history: int = 1  # Th observed frames and state steps
    future_frames: int = 1  # Tf predicted frames
    future_frame_stride: int = 4  # control steps between predicted frames
    chunk_length: int = 16  # K
    state_dim: int = 4  # S
    action_dim: int = 4  # A

    frame_tokenizer: FrameTokenizerConfig = field(default_factory=FrameTokenizerConfig)
    obs_encoder: ObsEncoderConfig = field(default_factory=ObsEncoderConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    normalization: str = "mean_std"  # one of NORMALIZATION_MODES

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _choice("model.flavor", self.flavor, tuple(FLAVORS))
        _choice("model.frame_tokenizer.kind", self.frame_tokenizer.kind, FRAME_TOKENIZERS)
        _choice("model.obs_encoder.kind", self.obs_encoder.kind, OBS_ENCODERS)
        _choice("model.text_encoder.kind", self.text_encoder.kind, TEXT_ENCODERS)
        _choice("model.normalization", self.normalization, NORMALIZATION_MODES)
        for name in ("height", "width", "channels", "views", "history", "chunk_length", "state_dim", "action_dim",
                     "future_frame_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.future_frames < 0:
            raise ValueError(f"model.future_frames must be >= 0, got {self.future_frames}")
        dim, _, heads = self.size
        if dim % heads:
            raise ValueError(f"model.dim={dim} is not divisible by model.heads={heads}")
        if self.text_encoder.kind in ("t5", "clip", "siglip") and not self.text_encoder.path:
            raise ValueError(f"model.text_encoder.path is required for text_encoder.kind={self.text_encoder.kind!r} "
                             "(a local checkpoint folder; vidact never downloads weights)")

    @property
    def size(self) -> tuple[int, int, int]:
        """(dim, depth, heads): the flavor's, with any explicit override applied."""
        dim, depth, heads = FLAVORS[self.flavor]
        return (self.dim or dim, self.depth or depth, self.heads or heads)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VidActConfig":
        data = dict(data)
        nested = {"frame_tokenizer": FrameTokenizerConfig, "obs_encoder": ObsEncoderConfig,
                  "text_encoder": TextEncoderConfig}
        for key, sub in nested.items():
            if isinstance(data.get(key), dict):
                data[key] = sub(**data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise KeyError(f"unknown VidActConfig keys {sorted(unknown)}")
        return cls(**data)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not one of {list(choices)}")
