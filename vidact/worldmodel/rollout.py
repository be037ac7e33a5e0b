"""Autoregressive world-model rollouts: from real starting frames, the model imagines what
happens next chunk after chunk, feeding its own imagined frames back as history.

Time runs on the model's frame grid: step ``t0 + j * s`` (``s = model.future_frame_stride``), the
start ``t0`` at ``j = 0``. One call at grid index ``j`` reads the history ``j - Th + 1 .. j`` (real
frames up to ``j = 0``, imagined after) and the action chunk starting at ``t0 + j * s``, and
imagines frames ``j + 1 .. j + Tf``; the rollout then moves on by the frames the chunk's actions
cover (``min(Tf, K // s)``). Imagined history steps carry no proprioception: their state is
masked out (``Batch.state_is_pad``; models learn that with ``generative.state_dropout``).

- ``forward_dynamics``: the actions are given (recorded ones, or any policy's);
- ``policy``: the model co-generates the chunk and the frames (closed loop inside the model), and
  the executed actions are returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from vidact.generative.sample import Sampler
from vidact.generative.schedule import Mode
from vidact.types import Batch


class RolloutError(ValueError):
    """A rollout that cannot be run as asked (horizon, shapes); the message names the problem."""


@dataclass
class RolloutStart:
    """Where rollouts begin: the real history at the start step ``t0`` of each of B windows."""

    frames: Tensor  # [B,Th,V,C,H,W] real frames at t0 - (Th-1)s .. t0, in [0,1]
    state: Tensor  # [B,Th,S] raw state at the same steps
    text: list[str]  # B instructions
    is_pad: Tensor | None = None  # [B,Th] bool: history steps before the episode start


@dataclass
class RolloutOutput:
    frames: Tensor  # [B, H/s, V,C,H,W] imagined frames at t0 + s, t0 + 2s, ..., t0 + H
    actions: Tensor  # [B,H,A] the actions the rollout executed (given, or the policy's own)
    calls: int  # model calls (one per chunk)


def mismatch(pairs, model: str) -> str | None:
    """``(name, a, b)`` triples that must agree -> ``"the policy and MODEL differ (name a vs b; ...:
    policy vs world model)"``, or None when they all do (every check of a policy against a world model)."""
    bad = [f"{name} {a} vs {b}" for name, a, b in pairs if a != b]
    return f"the policy and {model} differ ({'; '.join(bad)}: policy vs world model)" if bad else None


def frames_per_call(model, horizon: int) -> int:
    """Grid frames one call advances; checks the horizon against the model's frame grid."""
    c = model.config
    if model.future_tokens == 0:
        raise RolloutError("the model predicts no future frames (model.future_frames=0): it was trained without "
                           "video and cannot imagine")
    if horizon < 1:
        raise RolloutError(f"--horizon must be a positive number of control steps, got {horizon}")
    s = c.future_frame_stride
    if horizon % s:
        raise RolloutError(f"--horizon {horizon} is not a multiple of the model's frame stride "
                           f"(model.future_frame_stride={s} control steps)")
    if s > c.chunk_length:
        raise RolloutError(f"model.future_frame_stride={s} exceeds model.chunk_length={c.chunk_length}: an action "
                           "chunk does not reach the next frame")
    return max(1, min(c.future_frames, c.chunk_length // s))


def history_batch(start: RolloutStart, frames: list[Tensor], j: int, Th: int) -> Batch:
    """The model's input at grid index ``j``: history frames ``j - Th + 1 .. j`` from ``frames``
    (the grid from ``j = -(Th-1)``: real frames, then imagined ones appended), real state and
    padding flags where the history is real, state masked out where it is imagined."""
    B, device = start.frames.shape[0], start.frames.device
    real_pad = start.is_pad if start.is_pad is not None else torch.zeros(B, Th, dtype=torch.bool, device=device)
    grid = range(j - Th + 1, j + 1)
    known = torch.tensor([g <= 0 for g in grid], device=device)
    state = torch.stack([start.state[:, g + Th - 1] if g <= 0 else start.state[:, -1] for g in grid], 1)
    obs_pad = torch.stack([real_pad[:, g + Th - 1] if g <= 0 else torch.zeros(B, dtype=torch.bool, device=device)
                           for g in grid], 1)
    return Batch(obs_frames=torch.stack([frames[g + Th - 1] for g in grid], 1), state=state, text=list(start.text),
                 obs_is_pad=obs_pad, state_is_pad=(~known)[None].expand(B, -1).clone())


@torch.no_grad()
def rollout_calls(sampler: Sampler, start: RolloutStart, n_grid: int, actions: Tensor | None = None,
                  seed: int = 0) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The rollout one model call at a time, up to ``n_grid`` grid frames: yields ``(j, frames,
    actions)`` with the call's imagined frames [B,n,V,C,H,W] (grid ``j + 1 .. j + n``) and the
    ``n * s`` actions that lead there [B,n*s,A]. ``actions`` (raw, padded to every chunk's K steps):
    ``forward_dynamics``; ``None``: ``policy``. Call ``i`` samples with ``seed + i``. A caller may
    stop early (``vidact synth`` stops when the judge says every episode is done)."""
    c = sampler.model.config
    s, K, Th = c.future_frame_stride, c.chunk_length, c.history
    advance = frames_per_call(sampler.model, n_grid * s)
    frames = list(start.frames.unbind(1))  # the grid from j = -(Th-1); imagined frames are appended
    j, call = 0, 0
    while j < n_grid:
        batch = history_batch(start, frames, j, Th)
        n = min(advance, n_grid - j)
        if actions is not None:
            batch.actions = actions[:, j * s: j * s + K]
            out = sampler.sample(batch, Mode.FORWARD_DYNAMICS, seed=seed + call)
        else:
            out = sampler.sample(batch, Mode.POLICY, seed=seed + call)
        new = out.future_frames[:, :n].float().clamp(0, 1)
        frames.extend(new.unbind(1))
        yield j, new, out.actions[:, : n * s].float()
        j, call = j + n, call + 1


@torch.no_grad()
def rollout(sampler: Sampler, start: RolloutStart, horizon: int, actions: Tensor | None = None, seed: int = 0,
            progress: bool = False) -> RolloutOutput:
    """Imagine ``horizon`` control steps from ``start``. ``actions`` [B, >=horizon, A] raw: roll them
    in ``forward_dynamics`` mode (steps past their end repeat the last one, as LeRobot pads);
    ``None``: ``policy`` mode, the model's own actions. Call ``i`` samples with ``seed + i``."""
    model = sampler.model
    c = model.config
    s, K = c.future_frame_stride, c.chunk_length
    frames_per_call(model, horizon)  # checks the horizon against the frame grid
    B = start.frames.shape[0]
    if actions is not None and (actions.ndim != 3 or actions.shape[0] != B or actions.shape[2] != c.action_dim):
        raise RolloutError(f"actions: expected shape [B={B}, T>={horizon}, A={c.action_dim}], "
                           f"got {list(actions.shape)}")
    if actions is not None and actions.shape[1] < horizon:
        raise RolloutError(f"actions cover {actions.shape[1]} steps, fewer than the horizon {horizon}")
    if actions is not None:  # pad so every chunk has K steps
        actions = torch.cat([actions, actions[:, -1:].expand(B, K, -1)], 1)
    imagined, executed, calls = [], [], 0
    n_grid = horizon // s
    with tqdm(total=n_grid, desc="imagining", unit="frame", disable=not progress, leave=False) as bar:
        for _, new, acts in rollout_calls(sampler, start, n_grid, actions, seed):
            imagined.append(new)
            executed.append(acts)
            calls += 1
            bar.update(new.shape[1])
    return RolloutOutput(frames=torch.cat(imagined, 1), actions=torch.cat(executed, 1)[:, :horizon], calls=calls)
