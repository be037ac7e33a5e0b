"""``training_loss(model, batch, cfg)``: the one objective behind pretraining, finetuning and
co-training (DiT's ``training_losses(model, x, t)`` split: the network knows nothing of it).

Per sample: draw a mode (``video`` for action-free samples, UWM), an independent tau for each
generated modality, noise the latents/actions, predict velocities, and score only what was
generated. Given modalities enter clean at tau = 0; dropped ones are masked out as keys, which is
the same computation as leaving them out (what ``policy_fast`` and ``video`` do at inference).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vidact.generative.schedule import (MODE_ROLES, GenerativeConfig, Mode, Role, draw_modes, interpolate,
                                        sample_tau, velocity_target)
from vidact.types import Batch


@dataclass
class LossOutput:
    loss: Tensor  # the scalar to backpropagate
    video_loss: Tensor  # detached, mean over scored future-frame tokens (0 when none were scored)
    action_loss: Tensor  # detached, mean over scored action steps
    mode_counts: dict[str, int] = field(default_factory=dict)
    video_tokens_scored: int = 0
    action_steps_scored: int = 0
    env_state_loss: Tensor | None = None  # detached, the auxiliary scene-state loss (model.env_state_dim)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _masked_mean(err: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``err`` over True entries of ``mask``; exactly 0 (with zero gradient) when none."""
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def roles_mask(modes: list[Mode], role: Role, modality: str, device: torch.device) -> Tensor:
    return torch.tensor([getattr(MODE_ROLES[m], modality) == role for m in modes], dtype=torch.bool, device=device)


def _take(batch: Batch, rows: list[int]) -> Batch:
    """The samples ``rows`` of ``batch`` (every per-sample field)."""
    def take(value):
        if isinstance(value, Tensor):
            return value[torch.tensor(rows, device=value.device)]
        return [value[i] for i in rows] if isinstance(value, list) else value
    return Batch(**{f.name: take(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def _shift(x: Tensor, steps: int, last: Tensor) -> Tensor:
    """``x`` [b,T,...] moved ``steps`` along T: x[:, steps:] then ``last`` [b,steps,...]."""
    return torch.cat([x[:, steps:], last.to(x.dtype)], 1)


@torch.no_grad()
def self_forced(model, batch: Batch, rows: list[int], steps: int, seed: int) -> Batch:
    """``batch`` with the samples ``rows`` moved one step down the frame grid onto the model's own
    imagination (``generative.self_forcing``): the model imagines their first future frame from
    the real history and the given actions (``forward_dynamics``, ``steps`` Euler steps), which
    becomes the newest history frame (state unknown, as in a rollout); the actions, the future
    frames and their masks move on by one frame stride, the steps past the window padded."""
    from vidact.generative.sample import Sampler, SamplerConfig

    c = model.config
    s = c.future_frame_stride
    if c.future_frames < 2 or s > c.chunk_length:
        raise ValueError(f"generative.self_forcing needs model.future_frames >= 2 (got {c.future_frames}) and "
                         f"model.future_frame_stride <= model.chunk_length (got {s} > {c.chunk_length})")
    sub = _take(batch, rows)
    out = Sampler(model, SamplerConfig(steps=steps)).sample(sub, Mode.FORWARD_DYNAMICS, seed=seed)
    imagined = out.future_frames[:, :1].clamp(0, 1)  # [b,1,V,C,H,W], what a rollout feeds back
    b, device = len(rows), sub.obs_frames.device
    yes = torch.ones(b, 1, dtype=torch.bool, device=device)
    moved = dict(
        obs_frames=_shift(sub.obs_frames, 1, imagined),
        obs_is_pad=_shift(sub.obs_is_pad, 1, ~yes),
        state=_shift(sub.state, 1, sub.state[:, -1:]),
        state_is_pad=_shift(sub.state_is_pad if sub.state_is_pad is not None else sub.obs_is_pad.clone(), 1, yes),
        actions=_shift(sub.actions, s, sub.actions[:, -1:].expand(-1, s, -1)),
        action_is_pad=_shift(sub.action_is_pad, s, yes.expand(-1, s)),
        future_frames=_shift(sub.future_frames, 1, sub.future_frames[:, -1:]),
        future_is_pad=_shift(sub.future_is_pad, 1, yes))
    if sub.obs_frame_latents is not None:  # the imagined frame re-encoded, as a rollout reads it
        moved["obs_frame_latents"] = _shift(sub.obs_frame_latents, 1, model.frame_tokenizer.encode(imagined))
    if sub.future_frame_latents is not None:
        moved["future_frame_latents"] = _shift(sub.future_frame_latents, 1, sub.future_frame_latents[:, -1:])
    index = torch.tensor(rows, device=device)
    updates = {}
    for name, value in moved.items():
        full = getattr(batch, name)
        if full is None:  # state_is_pad absent from the batch: nothing else was unknown
            full = torch.zeros_like(batch.obs_is_pad)
        full = full.clone()
        full[index] = value.to(full.device, full.dtype)
        updates[name] = full
    return dataclasses.replace(batch, **updates)


def training_loss(model, batch: Batch, cfg: GenerativeConfig, generator: torch.Generator | None = None) -> LossOutput:
    """``model`` is a :class:`vidact.models.VidAct`. ``generator`` (CPU) makes the draw reproducible."""
    batch = batch.with_defaults()
    model.spec.check(batch)
    B, device = batch.batch_size, batch.obs_frames.device
    has_actions = batch.has_actions if batch.has_actions is not None else torch.zeros(B, dtype=torch.bool,
                                                                                        device=device)
    modes = draw_modes(has_actions, cfg, generator, allowed=batch.modes)
    drop_language = (torch.rand(B, generator=generator) < cfg.language_dropout).to(device)
    if cfg.state_dropout > 0:  # drawn only when on, so recipes without it keep their random stream
        drop_state = (torch.rand(B, generator=generator) < cfg.state_dropout).to(device)[:, None]
        known = batch.state_is_pad if batch.state_is_pad is not None else torch.zeros_like(batch.obs_is_pad)
        batch = dataclasses.replace(batch, state_is_pad=known | drop_state)
    if cfg.self_forcing > 0:  # drawn only when on, as above
        pick = torch.rand(B, generator=generator) < cfg.self_forcing
        rows = [i for i, m in enumerate(modes) if m == Mode.FORWARD_DYNAMICS and bool(pick[i]) and bool(has_actions[i])]
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        if rows and batch.future_frames is not None:
            batch = self_forced(model, batch, rows, cfg.self_forcing_steps, seed)
    clean_obs, clean_obs_latents = batch.obs_frames, batch.obs_frame_latents
    if cfg.history_noise > 0:
        std = torch.rand(B, generator=generator) * cfg.history_noise  # [B]
        if cfg.history_noise_on == "tokens":
            if model.obs_encoder is not None:
                raise ValueError("generative.history_noise_on=tokens needs the observed frames read through the "
                                 "frame tokenizer (model.obs_encoder.kind=tokenizer)")
            if clean_obs_latents is None:  # not cached
                with torch.no_grad():
                    clean_obs_latents = model.frame_tokenizer.encode(clean_obs)  # [B,Th,V,n,Dl]
            noise = _randn_like(clean_obs_latents, generator) * std.to(device).view(B, 1, 1, 1, 1)
            batch = dataclasses.replace(batch, obs_frame_latents=clean_obs_latents + noise)
        else:
            noise = _randn_like(clean_obs, generator) * std.to(device).view(B, *([1] * (clean_obs.ndim - 1)))
            batch = dataclasses.replace(batch, obs_frames=(clean_obs + noise).clamp(0, 1), obs_frame_latents=None)
    prefix = model.embed_prefix(batch, drop_language=drop_language)

    xv = x0_v = noise_v = None
    tau_v = torch.zeros(B, device=device)
    video_gen = roles_mask(modes, Role.GENERATED, "video", device)
    if batch.future_frames is not None and model.future_tokens > 0:
        x0_v = model.encode_frames(batch.future_frames, batch.future_frame_latents)  # [B,Nf,Dl]
        noise_v = _randn_like(x0_v, generator)
        tau_v = torch.where(video_gen, sample_tau(B, cfg, generator, device), torch.zeros_like(tau_v))
        xv = interpolate(x0_v, noise_v, tau_v)
    future_valid = ~roles_mask(modes, Role.DROPPED, "video", device)

    xa = x0_a = noise_a = None
    tau_a = torch.zeros(B, device=device)
    action_gen = roles_mask(modes, Role.GENERATED, "action", device) & has_actions
    if batch.actions is not None:
        x0_a = model.normalizer.normalize("action", batch.actions)  # [B,K,A]
        x0_a = torch.where(has_actions[:, None, None], x0_a, torch.zeros_like(x0_a))
        noise_a = _randn_like(x0_a, generator)
        # Action-free samples sit at tau = 1 (pure noise), as in UWM; they are also masked as keys.
        tau_a = torch.where(action_gen, sample_tau(B, cfg, generator, device),
                            torch.where(has_actions, torch.zeros_like(tau_a), torch.ones_like(tau_a)))
        xa = interpolate(x0_a, noise_a, tau_a)
    action_valid = ~roles_mask(modes, Role.DROPPED, "action", device) & has_actions

    pred = model(prefix, xv, xa, tau_v, tau_a, future_valid=future_valid, action_valid=action_valid)

    zero = torch.zeros((), device=device)  # a modality entirely absent from the batch scores nothing
    video_loss, n_video = zero, 0
    if pred.video is not None:
        per_frame = model.future_tokens // model.config.future_frames
        frame_ok = ~batch.future_is_pad  # [B,Tf]
        mask = video_gen[:, None] & frame_ok.repeat_interleave(per_frame, dim=1)  # [B,Nf]
        err = (pred.video.float() - velocity_target(x0_v, noise_v).float()).pow(2).mean(-1)  # [B,Nf]
        if cfg.video_change_weight > 0:  # a weighted mean: changed tokens count 1 + weight times
            known = None if clean_obs_latents is None else clean_obs_latents[:, -1:]  # cached: not re-encoded
            last = model.encode_frames(clean_obs[:, -1:], known).repeat(1, model.config.future_frames, 1)
            changed = (x0_v - last).abs().mean(-1) > cfg.video_change_threshold  # [B,Nf]
            weight = mask.float() * (1 + cfg.video_change_weight * changed.float())
            video_loss = (err * weight).sum() / weight.sum().clamp(min=1)
        else:
            video_loss = _masked_mean(err, mask)
        n_video = int(mask.sum())
    action_loss, n_action = zero, 0
    if pred.action is not None:
        mask = action_gen[:, None] & ~batch.action_is_pad  # [B,K]
        err = (pred.action.float() - velocity_target(x0_a, noise_a).float()).pow(2).mean(-1)  # [B,K]
        action_loss, n_action = _masked_mean(err, mask), int(mask.sum())

    loss = cfg.video_loss_weight * video_loss + cfg.action_loss_weight * action_loss
    env_loss = None
    if pred.env_state is not None:
        env_loss = env_state_loss(model, pred.env_state, batch.env_state)
        loss = loss + cfg.env_state_weight * env_loss
        env_loss = env_loss.detach()
    return LossOutput(loss=loss, video_loss=video_loss.detach(), action_loss=action_loss.detach(),
                      mode_counts=dict(Counter(m.value for m in modes)), video_tokens_scored=n_video,
                      action_steps_scored=n_action, env_state_loss=env_loss)


def env_state_loss(model, pred: Tensor, target: Tensor | None) -> Tensor:
    """Mean squared error of the scene-state head ``pred`` [B,E] (normalized) against the raw
    ``target`` [B,E] over the samples that have one (NaN rows: none, e.g. web video)."""
    if target is None:
        raise ValueError(f"model.env_state_dim={model.config.env_state_dim} but the batch has no scene state: the "
                         "data needs observation.environment_state (`vidact data metaworld --env-state`)")
    target = target.to(pred.device)
    known = ~torch.isnan(target).any(-1)
    if not bool(known.any()):
        return pred.sum() * 0.0  # in the graph, so every rank's head has a gradient
    return (pred.float()[known] - model.env_state_head.normalize(target[known])).pow(2).mean()
