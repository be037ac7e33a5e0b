"""The one batch contract between data and model, and the token-kind vocabulary.

Shape letters, used in every shape comment in vidact:

    B batch          T time (Th observed history, Tf future frames)
    V camera views   C H W image channels / height / width
    S state dim      A action dim           K action chunk length
    L text tokens    E text embedding dim   N tokens   D model width

Frames are float in [0, 1] (LeRobot's convention); state and actions are raw, un-normalized
values. Normalization lives inside the model (``vidact.tokenizers.action.Normalizer``) so the
statistics travel with the weights.

Both data sources (robot datasets, web video) produce exactly this type. Web video sets
``has_actions`` False and fills ``state``/``actions`` with zeros.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


class BatchKey(str, enum.Enum):
    """Field names of :class:`Batch`. Code that addresses fields by name uses these."""

    OBS_FRAMES = "obs_frames"  # [B,Th,V,C,H,W] float in [0,1]
    OBS_IS_PAD = "obs_is_pad"  # [B,Th] bool, True where the history ran past the episode start
    FUTURE_FRAMES = "future_frames"  # [B,Tf,V,C,H,W] float in [0,1]
    FUTURE_IS_PAD = "future_is_pad"  # [B,Tf] bool, True past the episode end
    STATE = "state"  # [B,Th,S] raw proprioception
    STATE_IS_PAD = "state_is_pad"  # optional [B,Th] bool, True where the state is unknown (masked out)
    ACTIONS = "actions"  # [B,K,A] raw actions
    ACTION_IS_PAD = "action_is_pad"  # [B,K] bool
    HAS_ACTIONS = "has_actions"  # [B] bool, False for action-free (web) video
    TEXT = "text"  # list[str] of length B
    TEXT_EMBEDDINGS = "text_embeddings"  # optional cached [B,L,E] float
    TEXT_MASK = "text_mask"  # optional [B,L] bool, True for real (non-pad) text tokens
    SOURCE = "source"  # optional list[str]: which dataset each sample came from
    FRAME_KEYS = "frame_keys"  # optional, per sample [Th+Tf][V] strings naming each frame (latent cache keys)
    OBS_FRAME_LATENTS = "obs_frame_latents"  # optional [B,Th,V,n,Dl] frame-tokenizer tokens of obs_frames
    FUTURE_FRAME_LATENTS = "future_frame_latents"  # optional [B,Tf,V,n,Dl] frame-tokenizer tokens of future_frames
    SKIPPED_FILES = "skipped_files"  # optional, per sample: unreadable files skipped while loading it
    MODES = "modes"  # optional, per sample: the training modes its source allows (None: all)
    ENV_STATE = "env_state"  # optional [B,E] raw scene state at the current step (a training target; NaN: unknown)


@dataclass
class Batch:
    """A batch of training or inference samples. See the module docstring for shapes."""

    obs_frames: Tensor
    state: Tensor
    text: list[str]
    future_frames: Tensor | None = None
    actions: Tensor | None = None
    action_is_pad: Tensor | None = None
    has_actions: Tensor | None = None
    obs_is_pad: Tensor | None = None
    # The state is unknown at these history steps (frames imagined by a world model have no
    # proprioception; generative.state_dropout rehearses it): its tokens are masked out as keys.
    state_is_pad: Tensor | None = None
    future_is_pad: Tensor | None = None
    text_embeddings: Tensor | None = None
    text_mask: Tensor | None = None
    source: list[str] | None = None
    # Per sample, a stable name for each frame, [Th+Tf][V] strings (observed then future): source,
    # episode or file, frame index or timestamp, camera, fit. Set by the loader when data.cache_dir
    # is set, so a frozen VAE's latents can be read from the cache instead of re-encoded.
    frame_keys: list[list[list[str]]] | None = None
    # The frame tokenizer's tokens of obs_frames / future_frames when already known (read from the
    # latent cache by frame_keys: vidact.data.cache.with_cached_latents); the model uses them
    # instead of encoding the frames, so whoever changes the frames drops them.
    obs_frame_latents: Tensor | None = None
    future_frame_latents: Tensor | None = None
    # Per sample, the files the loader found unreadable (and skipped) while producing it.
    skipped_files: list[list[str]] | None = None
    # The scene state (observation.environment_state) at the current step: the target of the
    # auxiliary head (model.env_state_dim), never an input. NaN rows: a sample without one (web video).
    env_state: Tensor | None = None
    # Per sample, the training modes its source rehearses (data.sources[i].modes; None: the recipe's).
    modes: list[tuple[str, ...] | None] | None = None

    @property
    def batch_size(self) -> int:
        return self.obs_frames.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        """Move tensors to ``device``; float tensors are cast to ``dtype`` when given."""

        def move(value: Any) -> Any:
            if not isinstance(value, Tensor):
                return value
            if dtype is not None and value.is_floating_point():
                return value.to(device=device, dtype=dtype, non_blocking=True)
            return value.to(device=device, non_blocking=True)

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def with_defaults(self) -> "Batch":
        """Fill the optional masks with their "nothing padded, actions present" defaults."""
        B, Th = self.obs_frames.shape[:2]
        device = self.obs_frames.device
        out = dataclasses.replace(self)
        if out.obs_is_pad is None:
            out.obs_is_pad = torch.zeros(B, Th, dtype=torch.bool, device=device)
        if out.future_frames is not None and out.future_is_pad is None:
            out.future_is_pad = torch.zeros(B, out.future_frames.shape[1], dtype=torch.bool, device=device)
        if out.actions is not None:
            if out.action_is_pad is None:
                out.action_is_pad = torch.zeros(out.actions.shape[:2], dtype=torch.bool, device=device)
            if out.has_actions is None:
                out.has_actions = torch.ones(B, dtype=torch.bool, device=device)
        return out

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> "Batch":
        """Stack per-sample dicts (keys are :class:`BatchKey` values) into one batch."""
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        names = {f.name for f in dataclasses.fields(Batch)}
        unknown = set(samples[0]) - names
        if unknown:
            raise KeyError(f"unknown batch fields {sorted(unknown)}; expected a subset of {sorted(names)}")
        fields_out: dict[str, Any] = {}
        known = [s[BatchKey.ENV_STATE.value] for s in samples if BatchKey.ENV_STATE.value in s]
        if known:  # a mixture: samples without a scene state (web video) get NaN, which the loss skips
            fields_out[BatchKey.ENV_STATE.value] = torch.stack([
                s.get(BatchKey.ENV_STATE.value, torch.full_like(known[0], float("nan"))) for s in samples])
        for name in samples[0]:
            if name == BatchKey.ENV_STATE.value:
                continue
            values = [s[name] for s in samples]
            if isinstance(values[0], Tensor):
                fields_out[name] = torch.stack(values)
            elif isinstance(values[0], bool):
                fields_out[name] = torch.tensor(values, dtype=torch.bool)
            else:
                fields_out[name] = list(values)
        return Batch(**fields_out)


@dataclass(frozen=True)
class BatchSpec:
    """The shapes a model expects; :meth:`check` names the field and the expected shape."""

    history: int  # Th
    future: int  # Tf
    views: int  # V
    channels: int  # C
    height: int  # H
    width: int  # W
    state_dim: int  # S
    action_dim: int  # A
    chunk_length: int  # K
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, batch: Batch, *, need_future: bool = False, need_actions: bool = False) -> None:
        if not isinstance(batch, Batch):
            raise TypeError(f"expected a vidact.types.Batch, got {type(batch).__name__}")
        B = batch.batch_size
        frame = (self.views, self.channels, self.height, self.width)
        _expect(BatchKey.OBS_FRAMES, batch.obs_frames, (B, self.history, *frame), "B,Th,V,C,H,W")
        _expect(BatchKey.STATE, batch.state, (B, self.history, self.state_dim), "B,Th,S")
        if batch.text is None or (batch.text_embeddings is None and len(batch.text) != B):
            got = "None" if batch.text is None else f"{len(batch.text)} strings"
            raise ValueError(f"batch field '{BatchKey.TEXT.value}': expected {B} instruction strings "
                             f"(one per sample, may be empty), got {got}")
        if batch.text_embeddings is not None and batch.text_embeddings.shape[0] != B:
            raise ValueError(f"batch field '{BatchKey.TEXT_EMBEDDINGS.value}': expected shape [B={B},L,E], "
                             f"got {list(batch.text_embeddings.shape)}")
        if need_future or batch.future_frames is not None:
            if batch.future_frames is None:
                raise ValueError(f"batch field '{BatchKey.FUTURE_FRAMES.value}' is required in this mode: "
                                 f"expected shape [B,Tf,V,C,H,W] = {[B, self.future, *frame]}")
            _expect(BatchKey.FUTURE_FRAMES, batch.future_frames, (B, self.future, *frame), "B,Tf,V,C,H,W")
        if need_actions or batch.actions is not None:
            if batch.actions is None:
                raise ValueError(f"batch field '{BatchKey.ACTIONS.value}' is required in this mode: "
                                 f"expected shape [B,K,A] = {[B, self.chunk_length, self.action_dim]}")
            _expect(BatchKey.ACTIONS, batch.actions, (B, self.chunk_length, self.action_dim), "B,K,A")
        for key, value, shape, letters in (
            (BatchKey.OBS_IS_PAD, batch.obs_is_pad, (B, self.history), "B,Th"),
            (BatchKey.STATE_IS_PAD, batch.state_is_pad, (B, self.history), "B,Th"),
            (BatchKey.FUTURE_IS_PAD, batch.future_is_pad, (B, self.future), "B,Tf"),
            (BatchKey.ACTION_IS_PAD, batch.action_is_pad, (B, self.chunk_length), "B,K"),
            (BatchKey.HAS_ACTIONS, batch.has_actions, (B,), "B"),
        ):
            if value is not None:
                _expect(key, value, shape, letters)


def _expect(key: BatchKey, value: Any, shape: tuple[int, ...], letters: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"batch field '{key.value}': expected a tensor of shape [{letters}] = {list(shape)}, "
                        f"got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"batch field '{key.value}': expected shape [{letters}] = {list(shape)}, "
                         f"got {list(value.shape)}")
