"""Rectified flow with an independent noise level per modality, and the table of modes.

Convention (tau = 1 is pure noise, tau = 0 is data)::

    x_tau = (1 - tau) * x0 + tau * eps          target velocity  v = eps - x0
    sampling integrates dx/dtau = v from tau = 1 down to tau = 0.

Each mode says, per generated modality, whether it is generated (noised and denoised), given
(clean, tau = 0, not scored) or dropped (absent from the sequence). One table serves training,
which rehearses the modes, and sampling, which runs them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import Tensor


class Mode(str, enum.Enum):
    POLICY = "policy"  # video and actions co-generated (GR-2 / PAD)
    POLICY_FAST = "policy_fast"  # actions only; the future frames are dropped, not paid for
    FORWARD_DYNAMICS = "forward_dynamics"  # actions given, video generated (world model)
    INVERSE_DYNAMICS = "inverse_dynamics"  # video given, actions generated (UniPi)
    VIDEO = "video"  # video generated, actions absent (web-video pretraining)


class Role(str, enum.Enum):
    GENERATED = "generated"
    GIVEN = "given"
    DROPPED = "dropped"


@dataclass(frozen=True)
class ModeRoles:
    video: Role
    action: Role


MODE_ROLES: dict[Mode, ModeRoles] = {
    Mode.POLICY: ModeRoles(video=Role.GENERATED, action=Role.GENERATED),
    Mode.POLICY_FAST: ModeRoles(video=Role.DROPPED, action=Role.GENERATED),
    Mode.FORWARD_DYNAMICS: ModeRoles(video=Role.GENERATED, action=Role.GIVEN),
    Mode.INVERSE_DYNAMICS: ModeRoles(video=Role.GIVEN, action=Role.GENERATED),
    Mode.VIDEO: ModeRoles(video=Role.GENERATED, action=Role.DROPPED),
}


def _default_mode_weights() -> dict[str, float]:
    return {Mode.POLICY.value: 0.5, Mode.POLICY_FAST.value: 0.2, Mode.INVERSE_DYNAMICS.value: 0.15,
            Mode.FORWARD_DYNAMICS.value: 0.15}


@dataclass
class GenerativeConfig:
    """The training objective. Action-free samples always train in ``video`` mode."""

    tau_sampling: str = "logit_normal"  # "uniform" | "logit_normal" (SD3) | "beta" (pi0: more noise)
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    # How often each mode is rehearsed on samples that have actions (normalized when drawn).
    mode_weights: dict[str, float] = field(default_factory=_default_mode_weights)
    video_loss_weight: float = 1.0
    action_loss_weight: float = 1.0
    language_dropout: float = 0.1  # for classifier-free guidance
    # Probability that a sample's state tokens are masked out (``Batch.state_is_pad``): a world
    # model rolled out on its own imagined frames has no proprioception for them (``vidact
    # imagine``), so it must read the arm from the frames, not from the state.
    state_dropout: float = 0.0
    # Extra weight on future-frame tokens that differ from the last observed frame (mean absolute
    # change above video_change_threshold, in latent units): most tokens of a robot scene are
    # static and a residual predictor gets them for free; the arm and the objects it moves are
    # what a world model has to learn. Weight 1 + video_change_weight on those tokens, 1 elsewhere.
    video_change_weight: float = 0.0
    video_change_threshold: float = 0.02
    # Gaussian noise on the observed frames, std drawn per sample from U(0, history_noise) (pixels
    # in [0, 1]): a world model rolled out on its own frames reads imperfect history, so training
    # shows it imperfect history to correct (the exposure-bias remedy of diffusion forcing /
    # GameNGen's noise augmentation). 0: off.
    history_noise: float = 0.0
    # Where that noise goes: "pixels" (the frames, before the frame tokenizer) or "tokens" (the
    # history frames' tokens, std in token units: for a latent tokenizer, whose imagined history is
    # imperfect latents, and whose cached latents then need no re-encoding).
    history_noise_on: str = "pixels"
    # Self-forcing: this fraction of the forward_dynamics samples trains on a history whose last
    # frame the model imagined itself (one step down the frame grid: the model, without gradient,
    # imagines the sample's first future frame with self_forcing_steps Euler steps, and that frame
    # becomes the newest history step, with no proprioception, while the next real frame is the
    # target). A rollout reads its own imperfect frames; Gaussian noise does not look like them.
    # Needs model.future_frames >= 2. 0: off.
    self_forcing: float = 0.0
    self_forcing_steps: int = 4
    # Weight of the auxiliary scene-state loss (model.env_state_dim > 0): the mean squared error of
    # the head's prediction against the normalized observation.environment_state.
    env_state_weight: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.tau_sampling not in ("uniform", "logit_normal", "beta"):
            raise ValueError(f"generative.tau_sampling={self.tau_sampling!r} is not one of "
                             "['uniform', 'logit_normal', 'beta']")
        names = {m.value for m in Mode}
        for k, w in self.mode_weights.items():
            if k not in names:
                raise ValueError(f"generative.mode_weights.{k}: unknown mode; modes are {sorted(names)}")
            if w < 0:
                raise ValueError(f"generative.mode_weights.{k}={w} must be >= 0")
        if sum(self.mode_weights.values()) <= 0:
            raise ValueError("generative.mode_weights must give at least one mode a positive weight")
        for key in ("language_dropout", "state_dropout", "self_forcing"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"generative.{key}={getattr(self, key)} must be in [0, 1]")
        if self.history_noise_on not in ("pixels", "tokens"):
            raise ValueError(f"generative.history_noise_on={self.history_noise_on!r} is not one of ['pixels', 'tokens']")
        if self.self_forcing_steps < 1:
            raise ValueError(f"generative.self_forcing_steps={self.self_forcing_steps} must be >= 1")
        if self.env_state_weight < 0:
            raise ValueError(f"generative.env_state_weight={self.env_state_weight} must be >= 0")
        if self.history_noise < 0:
            raise ValueError(f"generative.history_noise={self.history_noise} must be >= 0")
        if self.video_change_weight < 0 or self.video_change_threshold < 0:
            raise ValueError("generative.video_change_weight and generative.video_change_threshold must be >= 0")


def sample_tau(n: int, cfg: GenerativeConfig, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> Tensor:
    """[n] training noise levels in (0, 1)."""
    if cfg.tau_sampling == "uniform":
        tau = torch.rand(n, generator=generator)
    elif cfg.tau_sampling == "logit_normal":
        tau = torch.sigmoid(torch.randn(n, generator=generator) * cfg.logit_normal_std + cfg.logit_normal_mean)
    else:  # pi0's beta(1.5, 1) on the noise side
        u = torch.rand(n, generator=generator)
        tau = 1 - (1 - u) ** (1 / 1.5)
    return tau.clamp(1e-4, 1 - 1e-4).to(device)


def interpolate(x0: Tensor, noise: Tensor, tau: Tensor) -> Tensor:
    """x_tau = (1 - tau) x0 + tau eps, tau [B] broadcast over the trailing dims."""
    t = tau.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    return noise - x0


def tau_grid(steps: int, shift: float = 1.0) -> list[float]:
    """Sampling noise levels from 1 to 0; ``shift`` > 1 spends more steps at high noise (SD3)."""
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    grid = [1 - i / steps for i in range(steps + 1)]
    return [shift * t / (1 + (shift - 1) * t) for t in grid]


def draw_modes(has_actions: Tensor, cfg: GenerativeConfig, generator: torch.Generator | None = None,
               allowed: list[tuple[str, ...] | None] | None = None) -> list[Mode]:
    """One training mode per sample: ``video`` where there are no actions, else by ``mode_weights``;
    ``allowed[i]`` (a source's ``modes``) restricts sample i to those modes, weighted by
    ``mode_weights`` (equally where the recipe gives none of them a weight)."""
    modes = [Mode(k) for k in cfg.mode_weights]
    weights = torch.tensor([cfg.mode_weights[m.value] for m in modes], dtype=torch.float)
    picks = torch.multinomial(weights / weights.sum(), has_actions.shape[0], replacement=True, generator=generator)
    out = [modes[int(i)] if bool(h) else Mode.VIDEO for i, h in zip(picks, has_actions.cpu())]
    for i, names in enumerate(allowed or []):
        if names is None or not bool(has_actions[i]):
            continue
        w = torch.tensor([cfg.mode_weights.get(n, 0.0) for n in names], dtype=torch.float)
        w = w if w.sum() > 0 else torch.ones(len(names))
        out[i] = Mode(names[int(torch.multinomial(w / w.sum(), 1, generator=generator))])
    return out


__all__ = ["Mode", "Role", "MODE_ROLES", "GenerativeConfig", "sample_tau", "interpolate", "velocity_target",
           "tau_grid", "draw_modes"]
