"""Tokenizer and encoder settings (plain dataclasses, part of ``VidActConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

FRAME_TOKENIZERS = ("patch", "vae")
OBS_ENCODERS = ("tokenizer", "patch", "timm", "keypoints", "vit")
TEXT_ENCODERS = ("t5", "clip", "siglip", "tiny_t5", "none")


@dataclass
class FrameTokenizerConfig:
    kind: str = "patch"  # one of FRAME_TOKENIZERS
    patch_size: int = 8  # pixels per patch side (patch) or latent cells per token side (vae)
    vae_path: Optional[str] = None  # local diffusers AutoencoderKL folder; None with kind=vae builds a tiny random one
    vae_tiny_seed: int = 0


@dataclass
class ObsEncoderConfig:
    """How observed frames become tokens: through the frame tokenizer (the tokens the model
    predicts), as pixel patches whatever the frame tokenizer is (a latent world model that reads
    its observations at pixel precision), through a timm backbone, as keypoints (a small trainable
    CNN and a spatial softmax: each token is where one learned feature is in the frame and what it
    sees there), or through a small ViT of its own (pixel patches and ``layers`` transformer layers
    that read this frame only: a perception trunk the scene-state head can train apart from the
    robot's state)."""

    kind: str = "tokenizer"  # one of OBS_ENCODERS
    patch_size: int = 12  # kind=patch / vit: pixels per patch side
    timm_name: str = "resnet18"
    weights_path: Optional[str] = None  # local .safetensors/.pth for the timm model; None = random init
    freeze: bool = True  # kind=timm: keep the backbone's weights (keypoints and vit always train)
    keypoints: int = 32  # kind=keypoints: tokens per frame
    conv_width: int = 64  # kind=keypoints: channels of the CNN
    layers: int = 2  # kind=vit: transformer layers
    width: int = 128  # kind=vit: token width (4 heads)


@dataclass
class TextEncoderConfig:
    kind: str = "tiny_t5"  # one of TEXT_ENCODERS
    path: Optional[str] = None  # local transformers checkpoint folder (t5 / clip / siglip)
    max_length: int = 32
    cache_size: int = 4096  # instruction strings whose embeddings are kept in memory
