"""VidActConfig: everything that fixes the network's shapes, and the flavor registry.

Plain dataclasses (no omegaconf here): ``vidact.config`` wraps them into the typed run config,
and the exported bundle stores them as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from vidact.tokenizers.config import (FRAME_TOKENIZERS, OBS_ENCODERS, TEXT_ENCODERS, FrameTokenizerConfig,
                                     ObsEncoderConfig, TextEncoderConfig)

# name -> (width D, depth, heads). Parameter counts are printed by `vidact dry-run`.
FLAVORS: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),  # < 1M parameters, for tests
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}

NORMALIZATION_MODES = ("mean_std", "quantile")
PREDICTIONS = ("velocity", "x0")
HISTORY_BEFORE_START = ("masked", "rest")
PREFIX_ATTENTION = ("joint", "frame_local")
ENV_STATE_SOURCES = ("backbone", "encoder")


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
    # What the future-frame head outputs. "velocity": eps - x0 directly. "x0": the clean frame
    # tokens, turned into the same velocity by (x_tau - x0_hat) / tau (JiT, "Back to Basics: Let
    # Denoising Generative Models Denoise"): wide pixel patches (12x12x3 = 432 values) through a
    # narrower network cannot carry the full-rank noise a velocity contains; clean frames lie on a
    # low-dimensional manifold. The loss and the sampler stay in velocity space either way.
    video_prediction: str = "velocity"
    # Predict each future frame as a change from the last observed frame: the head's output is added
    # to that frame's tokens (x0 mode) or subtracted from the velocity. With the zero-initialised
    # head a fresh model already "imagines" a still scene and learns only what moves.
    video_residual: bool = False
    # Init std of the learned token-identity embeddings (positions, views, history/future time,
    # modality). At high noise a future-frame token's content is noise; its position is all it
    # knows of which patch it is. At 0.02 (ViT's value) that identity is swamped and a forward
    # model ignores where things are; ~1 (DiT's fixed sin-cos amplitude) lets it learn them
    # (docs/notes.md: sliding square, forward dynamics).
    embedding_init_std: float = 0.02
    # History steps before an episode's first frame (the first Th - 1 steps of every episode).
    # "masked" (LeRobot's convention): left out of attention; the model then cannot tell an arm at
    # rest from one already moving, and a world model started at an episode's first frame runs the
    # arm ahead of physics (~1.5x in the first imagined frame, BENCHMARKS.md "A judge taught by
    # outcomes"). "rest": shown as the first frame and state (every reader pads that way), as the
    # robot was before the episode began: at rest, so the history says its velocity is zero.
    # Measured on the world model (3000 steps, one seed): alone it made the start worse (imagined
    # frame 1 nearest real step 14.7 instead of 11.6; true 8); with the episode starts oversampled
    # (data.sources[i].first_steps) 10.7. Not a recipe default.
    history_before_start: str = "masked"
    # Auxiliary scene-state head: E > 0 adds a head that predicts the dataset's
    # observation.environment_state (E values, e.g. the object's and the goal's xyz: `vidact data
    # metaworld --env-state`) at the current step from the observed frames' tokens, trained with
    # weight generative.env_state_weight. A training-time target only: the policy never receives
    # it as input, so deployment needs nothing new. It asks the network to find in the pixels what
    # the positions say (BENCHMARKS.md: given the positions as input the small-goal tasks rise
    # from 10% to 44%). 0: off.
    env_state_dim: int = 0
    # Where that head reads: "backbone" (the newest frame's tokens after the backbone, where they
    # have also read the robot's state) or "encoder" (the observation encoder's tokens of the newest
    # frame, before anything else: with obs_encoder.kind=vit, keypoints or timm unfrozen, the
    # encoder must find the object in the picture to meet it).
    env_state_source: str = "backbone"
    # With env_state_source=encoder: the head's reading of every observed frame (normalized, not
    # back-propagated into the head) is added to that step's state token, so the policy is handed
    # what perception found, as the privileged-state arm was handed the true positions (state
    # estimation, then control). Deployment needs nothing new: the head reads the camera.
    env_state_input: bool = False
    # How the prefix's history frames read each other. "joint": every prefix token reads every
    # other (and a frame's tokens carry its slot's embedding), so all of the prefix is recomputed
    # for every chunk. "frame_local": a frame's state and image tokens read the instruction and
    # themselves only, and its slot enters as a learned key/value offset where the generated tokens
    # read it; a frame's keys and values are then the same in every chunk that sees it, so a
    # policy computes them once, when the frame arrives (streaming inference, issue 18), and
    # reuses the instruction's for the whole episode. The generated tokens still read every frame.
    prefix_attention: str = "joint"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _choice("model.flavor", self.flavor, tuple(FLAVORS))
        _choice("model.frame_tokenizer.kind", self.frame_tokenizer.kind, FRAME_TOKENIZERS)
        _choice("model.obs_encoder.kind", self.obs_encoder.kind, OBS_ENCODERS)
        _choice("model.text_encoder.kind", self.text_encoder.kind, TEXT_ENCODERS)
        _choice("model.normalization", self.normalization, NORMALIZATION_MODES)
        _choice("model.video_prediction", self.video_prediction, PREDICTIONS)
        _choice("model.history_before_start", self.history_before_start, HISTORY_BEFORE_START)
        _choice("model.prefix_attention", self.prefix_attention, PREFIX_ATTENTION)
        for name in ("height", "width", "channels", "views", "history", "chunk_length", "state_dim", "action_dim",
                     "future_frame_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.env_state_dim < 0:
            raise ValueError(f"model.env_state_dim must be >= 0, got {self.env_state_dim}")
        _choice("model.env_state_source", self.env_state_source, ENV_STATE_SOURCES)
        enc = self.obs_encoder
        frozen = enc.kind in ("tokenizer", "patch") or (enc.kind == "timm" and enc.freeze)
        if self.env_state_source == "encoder" and frozen:
            raise ValueError(f"model.env_state_source=encoder needs a trainable observation encoder "
                             f"(model.obs_encoder.kind=vit, keypoints, or timm with freeze=false), not "
                             f"{self.obs_encoder.kind!r}" + (" frozen" if self.obs_encoder.kind == "timm" else ""))
        if self.env_state_input and (self.env_state_dim == 0 or self.env_state_source != "encoder"):
            raise ValueError(f"model.env_state_input=true reads the scene-state head on the observation encoder: it "
                             f"needs model.env_state_dim > 0 (got {self.env_state_dim}) and "
                             f"model.env_state_source=encoder (got {self.env_state_source!r})")
        if self.embedding_init_std <= 0:
            raise ValueError(f"model.embedding_init_std must be > 0, got {self.embedding_init_std}")
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
