"""Batches made from nothing: a random batch of the right shapes for any config (openpi's fake
batch), and a small generated task that a model can actually learn, for tests and dry runs.

The generated task ("sliding square"): a bright square sits somewhere in a dark frame; the
instruction names a wall ("move left" / "right" / "up" / "down"). The action chunk slides the
square to that wall in equal steps, and the future frame shows it there. Both depend on the
observed frame (where the square is) and on the instruction (which wall), so neither can be
predicted from one alone.
"""

from __future__ import annotations

import torch

from vidact.models.configuration import VidActConfig
from vidact.types import Batch

DIRECTIONS = {"move left": (-1, 0), "move right": (1, 0), "move up": (0, -1), "move down": (0, 1)}


def fake_batch(cfg: VidActConfig, batch_size: int = 2, seed: int = 0, action_free: bool = False) -> Batch:
    """Random values in every field, shaped for ``cfg``."""
    g = torch.Generator().manual_seed(seed)
    B, c = batch_size, cfg
    frame = (c.views, c.channels, c.height, c.width)
    return Batch(
        obs_frames=torch.rand(B, c.history, *frame, generator=g),
        future_frames=torch.rand(B, c.future_frames, *frame, generator=g) if c.future_frames else None,
        state=torch.randn(B, c.history, c.state_dim, generator=g),
        actions=torch.randn(B, c.chunk_length, c.action_dim, generator=g),
        action_is_pad=torch.zeros(B, c.chunk_length, dtype=torch.bool),
        has_actions=torch.full((B,), not action_free, dtype=torch.bool),
        text=[f"fake instruction {i}" for i in range(B)],
    )


def sliding_square_config(**overrides) -> VidActConfig:
    """The tiny model shaped for :func:`sliding_square_batch`."""
    from vidact.models.configuration import FrameTokenizerConfig

    kw = dict(flavor="tiny", height=16, width=16, channels=1, views=1, history=1, future_frames=1,
              chunk_length=4, state_dim=2, action_dim=2, frame_tokenizer=FrameTokenizerConfig(kind="patch",
                                                                                              patch_size=4))
    kw.update(overrides)
    return VidActConfig(**kw)


def sliding_square_batch(cfg: VidActConfig, batch_size: int, generator: torch.Generator,
                         square: int = 4) -> Batch:
    """One batch of the sliding-square task for a config made by :func:`sliding_square_config`."""
    B, H, W, K = batch_size, cfg.height, cfg.width, cfg.chunk_length
    names = list(DIRECTIONS)
    which = torch.randint(len(names), (B,), generator=generator)
    x = torch.randint(W - square + 1, (B,), generator=generator)
    y = torch.randint(H - square + 1, (B,), generator=generator)
    obs = torch.zeros(B, 1, 1, 1, H, W)
    fut = torch.zeros(B, 1, 1, 1, H, W)
    actions = torch.zeros(B, K, 2)
    for i in range(B):
        dx, dy = DIRECTIONS[names[which[i]]]
        # Slide to the wall named by the instruction.
        x1 = 0 if dx < 0 else (W - square if dx > 0 else int(x[i]))
        y1 = 0 if dy < 0 else (H - square if dy > 0 else int(y[i]))
        obs[i, 0, 0, 0, y[i]: y[i] + square, x[i]: x[i] + square] = 1
        fut[i, 0, 0, 0, y1: y1 + square, x1: x1 + square] = 1
        actions[i, :, 0] = (x1 - int(x[i])) / K
        actions[i, :, 1] = (y1 - int(y[i])) / K
    return Batch(obs_frames=obs, future_frames=fut, state=torch.zeros(B, 1, 2), actions=actions,
                 action_is_pad=torch.zeros(B, K, dtype=torch.bool), has_actions=torch.ones(B, dtype=torch.bool),
                 text=[names[int(i)] for i in which])
