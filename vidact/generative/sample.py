"""Samplers: one named method per mode, Euler or Heun, seeded and deterministic, with
classifier-free guidance on the instruction.

The observation prefix is encoded once per call (``VidAct.cache_prefix``); each denoising step
runs only the generated tokens. Dropped groups are never built, so ``policy_fast`` costs only
the action tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from vidact.generative.schedule import MODE_ROLES, Mode, ModeRoles, Role, tau_grid
from vidact.models.layout import Group
from vidact.models.transformer import KVCache
from vidact.models.vidact import Prediction, VidAct
from vidact.types import Batch, BatchKey

METHODS = ("euler", "heun")


def initial_noise(model, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """(video noise [B, Nf, Dl], action noise [B, K, A]) the sampler starts from for ``seed``. Both
    are always drawn, in this order, so one seed gives the same action noise in every mode (policy
    and policy_fast start from the same point, and an exported program can be fed the same noise)."""
    generator = torch.Generator().manual_seed(seed)
    noise_v = torch.randn(batch_size, model.future_tokens, model.latent_dim, generator=generator)
    return noise_v, torch.randn(batch_size, model.config.chunk_length, model.config.action_dim, generator=generator)


MAX_NOISE_SCALE = 10.0  # the action noise's largest standard deviation a sampler accepts


@dataclass
class SamplerConfig:
    method: str = "euler"  # one of METHODS
    steps: int = 10
    guidance_scale: float = 1.0  # 1 = no classifier-free guidance; > 1 pushes toward the instruction
    shift: float = 1.0  # > 1 spends more steps at high noise
    # forward_dynamics only: classifier-free guidance on the given actions, v = v_without + w (v_with -
    # v_without), the unconditional branch being the same frames with the actions dropped (``video``
    # mode, which the model learns when generative.mode_weights gives it weight on robot samples).
    # > 1 pushes the imagined video toward what these actions do (against "different actions, same video").
    action_guidance: float = 1.0
    # Standard deviation of the action noise the sampler starts from (a temperature; video noise
    # stays at 1). Below 1 the sampled chunk sits nearer the centre of what the model predicts:
    # policies that are unsure where the object is stop depending on one lucky or unlucky draw.
    noise_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"sampler.method={self.method!r} is not one of {list(METHODS)}")
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.noise_scale <= MAX_NOISE_SCALE:
            raise ValueError(f"sampler.noise_scale must be in [0, {MAX_NOISE_SCALE:g}], got {self.noise_scale}")


@dataclass
class SampleOutput:
    mode: Mode
    actions: Tensor | None  # [B,K,A] raw actions (generated or given)
    future_frames: Tensor | None  # [B,Tf,V,C,H,W] in [0,1], when video was generated
    future_latents: Tensor | None  # [B,Nf,Dl]


class Sampler:
    def __init__(self, model: VidAct, config: SamplerConfig | None = None):
        self.model = model
        self.config = config or SamplerConfig()

    # One named entry point per mode (DESIGN.md's table).
    def policy(self, batch: Batch, **kw) -> SampleOutput:
        return self.sample(batch, Mode.POLICY, **kw)

    def policy_fast(self, batch: Batch, **kw) -> SampleOutput:
        return self.sample(batch, Mode.POLICY_FAST, **kw)

    def forward_dynamics(self, batch: Batch, **kw) -> SampleOutput:
        return self.sample(batch, Mode.FORWARD_DYNAMICS, **kw)

    def inverse_dynamics(self, batch: Batch, **kw) -> SampleOutput:
        return self.sample(batch, Mode.INVERSE_DYNAMICS, **kw)

    def video(self, batch: Batch, **kw) -> SampleOutput:
        return self.sample(batch, Mode.VIDEO, **kw)

    @torch.no_grad()
    def sample(self, batch: Batch, mode: Mode | str, seed: int | None = None, steps: int | None = None,
               guidance_scale: float | None = None, noise: tuple[Tensor, Tensor] | None = None,
               noise_scale: float | None = None, prefix: KVCache | None = None) -> SampleOutput:
        """``noise``: (video [B,Nf,Dl], action [B,K,A]) to start from instead of ``initial_noise(seed)``
        (a planner's candidates, each with its own seed, in one batch); the action noise is multiplied
        by ``noise_scale`` (default: the config's). ``prefix``: the batch's prefix cache, already
        assembled (a streaming policy's, ``VidAct.assemble_prefix``; without classifier-free guidance)."""
        mode = Mode(mode)
        cfg = self.config
        steps = steps or cfg.steps
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        model, roles = self.model, MODE_ROLES[mode]
        model.spec.check(batch)
        if model.future_tokens == 0 and roles.video != Role.DROPPED:
            raise ValueError(f"mode {mode.value!r} needs future frames but model.future_frames=0")
        if roles.video == Role.GIVEN and batch.future_frames is None:
            raise ValueError(f"mode {mode.value!r} needs batch field '{BatchKey.FUTURE_FRAMES.value}'")
        if roles.action == Role.GIVEN and batch.actions is None:
            raise ValueError(f"mode {mode.value!r} needs batch field '{BatchKey.ACTIONS.value}'")

        B, device = batch.batch_size, batch.obs_frames.device
        dtype = next(model.backbone.parameters()).dtype
        noise_v, noise_a = noise if noise is not None else initial_noise(model, B, cfg.seed if seed is None else seed)
        if prefix is not None and guidance != 1.0:
            raise ValueError("a prebuilt prefix cache has no unconditional branch: guidance_scale must be 1")
        cache, uncond = (prefix, None) if prefix is not None else prefix_caches(model, batch, guidance)

        xv = {Role.GENERATED: noise_v.to(device, dtype),
              Role.GIVEN: (model.encode_frames(batch.future_frames, batch.future_frame_latents).to(dtype)
                           if roles.video == Role.GIVEN else None),
              Role.DROPPED: None}[roles.video]
        xa = {Role.GENERATED: (noise_a * (cfg.noise_scale if noise_scale is None else noise_scale)).to(device, dtype),
              Role.GIVEN: (model.normalizer.normalize("action", batch.actions).to(dtype)
                           if roles.action == Role.GIVEN else None),
              Role.DROPPED: None}[roles.action]

        action_guidance = cfg.action_guidance if mode == Mode.FORWARD_DYNAMICS else 1.0
        velocity = guided_velocity(model, cache, uncond, roles, B, device, guidance, action_guidance)
        xv, xa = integrate(velocity, xv, xa, roles, tau_grid(steps, cfg.shift), cfg.method)

        actions = frames = latents = None
        if roles.action == Role.GENERATED:
            actions = model.normalizer.unnormalize("action", xa.float())
        elif roles.action == Role.GIVEN:
            actions = batch.actions
        if roles.video == Role.GENERATED:
            latents = xv.float()
            frames = model.decode_frames(latents)
        return SampleOutput(mode=mode, actions=actions, future_frames=frames, future_latents=latents)


Velocity = Callable[[Tensor | None, Tensor | None, float], Prediction]


def prefix_caches(model: VidAct, batch: Batch, guidance: float) -> tuple[KVCache, KVCache | None]:
    """The observation prefix encoded once (``VidAct.cache_prefix``), and again with the
    instruction dropped when classifier-free guidance needs the unconditional branch."""
    prefix = model.embed_prefix(batch)
    cache = model.cache_prefix(prefix)
    uncond = None
    if guidance != 1.0 and Group.LANGUAGE in prefix.layout.groups:
        drop = torch.ones(batch.batch_size, dtype=torch.bool, device=batch.obs_frames.device)
        uncond = model.cache_prefix(model.embed_prefix(batch, drop_language=drop))
    return cache, uncond


def guide(cond: Tensor | None, uncond: Tensor, scale: float) -> Tensor | None:
    """Classifier-free guidance: ``uncond + scale (cond - uncond)``."""
    return None if cond is None else uncond + scale * (cond - uncond)


def guided_velocity(model: VidAct, cache: KVCache, uncond: KVCache | None, roles: ModeRoles, batch_size: int,
                    device: torch.device, guidance: float = 1.0, action_guidance: float = 1.0) -> Velocity:
    """``v(xv, xa, t)``: the network's velocity with the generated modalities at noise level ``t``
    and the given ones at 0; guided on the instruction when ``uncond`` (``prefix_caches``) is set,
    and on the given actions when ``action_guidance != 1`` (``SamplerConfig.action_guidance``)."""

    def velocity(xv: Tensor | None, xa: Tensor | None, t: float) -> Prediction:
        tau_v = torch.full((batch_size,), t if roles.video == Role.GENERATED else 0.0, device=device)
        tau_a = torch.full((batch_size,), t if roles.action == Role.GENERATED else 0.0, device=device)
        pred = model.forward_cached(cache, xv, xa, tau_v, tau_a)
        if action_guidance != 1.0:
            without = model.forward_cached(cache, xv, None, tau_v, tau_a).video
            pred = Prediction(guide(pred.video, without, action_guidance), pred.action)
        if uncond is None:
            return pred
        pu = model.forward_cached(uncond, xv, xa, tau_v, tau_a)
        return Prediction(guide(pred.video, pu.video, guidance), guide(pred.action, pu.action, guidance))

    return velocity


def integrate(velocity: Velocity, xv: Tensor | None, xa: Tensor | None, roles: ModeRoles, grid: list[float],
              method: str) -> tuple[Tensor | None, Tensor | None]:
    """Euler or Heun along ``grid`` (``tau_grid``: 1 -> 0), moving only the generated modalities;
    ``Sampler.sample`` and the exported program (``vidact.export.torch_export``) both run this."""

    def step(xv, xa, pred: Prediction, dt: float):
        if roles.video == Role.GENERATED:
            xv = xv + dt * pred.video
        if roles.action == Role.GENERATED:
            xa = xa + dt * pred.action
        return xv, xa

    for t, t_next in zip(grid[:-1], grid[1:]):
        dt = t_next - t
        pred = velocity(xv, xa, t)
        if method == "heun" and t_next > 0:
            pred2 = velocity(*step(xv, xa, pred, dt), t_next)
            avg = lambda a, b: None if a is None else (a + b) / 2  # noqa: E731
            pred = Prediction(avg(pred.video, pred2.video), avg(pred.action, pred2.action))
        xv, xa = step(xv, xa, pred, dt)
    return xv, xa
