"""Planning in imagination (issue 13): sample candidate action chunks, imagine where each leads
with the model's ``forward_dynamics`` mode, execute the one whose imagined future scores best.

- ``best_of_n``: N chunks from the policy (its own mode, each candidate with its own noise seed:
  candidate 0 uses the plain policy's seed and noise scale, so N=1 *is* the plain policy; the
  others are drawn at ``noise_scale``, so a policy that samples at its mean, noise scale 0, can
  still plan over varied chunks and keeps its own chunk as a candidate), imagined and scored;
- ``cem``: the cross-entropy method: those N chunks start a Gaussian over (normalized) chunks that
  is refit to the best ``elites`` for ``iterations`` rounds; the best chunk seen is executed.

A future is scored by the judge (``vidact.worldmodel.judge``: the value of the last imagined
frame, or with ``score="mean"`` the mean value over every imagined frame) or, given a goal image,
by closeness to the goal in the model's own frame latent space (minus the mean squared latent
difference). With ``horizon`` H > 1 each candidate's future is imagined H chunks deep: after the
candidate chunk, the policy's own next chunks from the imagined frames (their state masked out,
as in ``vidact.worldmodel.rollout``), so a chunk that sets up a later success can win. With
``margin`` M > 0 the best candidate is executed only if its score beats the policy's own chunk
(candidate 0) by more than M: the judge's small, noisy differences leave the policy in charge. All
candidates go through the model in one batch: per round and chunk of the horizon, one policy call
and one ``forward_dynamics`` call. Every candidate is imagined from the same video noise (and
followed by chunks from the same noise), so imagined futures differ by their actions alone.

The model that imagines is the policy's own unless a separate world model is given (``world``: a
sampler over another checkpoint of the same cameras, image size, action and state spaces, history
and chunk; ``--plan-model``): the policy then only proposes, so a policy that imagines nothing, or
imagines poorly, plans with a better world model and its judge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from vidact.generative.sample import MAX_NOISE_SCALE, Sampler, initial_noise
from vidact.generative.schedule import Mode
from vidact.types import Batch
from vidact.worldmodel.rollout import RolloutStart, frames_per_call, history_batch, mismatch

PLANNERS = ("best_of_n", "cem")
SCORES = ("last", "mean")  # the judge's value of the last imagined frame | mean over the imagined frames
SEED_STRIDE = 7919  # candidate i samples with seed + i * SEED_STRIDE (a prime: no overlap with per-call seeds)


class PlanningError(ValueError):
    """A planner that cannot run as asked (no judge, sizes that differ); the message names both sides."""


@dataclass
class PlannerConfig:
    kind: str = "best_of_n"  # one of PLANNERS
    candidates: int = 8  # N
    iterations: int = 2  # cem: refits after the policy's proposals
    elites: int | None = None  # cem: chunks each refit keeps (default max(2, N // 4))
    min_std: float = 0.05  # cem: floor of the per-dimension standard deviation (normalized actions)
    imagine_steps: int | None = None  # sampler steps for imagining candidates (default: the policy's)
    horizon: int = 1  # chunks imagined per candidate: the candidate, then the policy's own next ones
    score: str = "last"  # one of SCORES
    noise_scale: float | None = None  # action noise of candidates 1..N-1 (default: the policy's own)
    world_model: str | None = None  # where the model that imagines came from (None: the policy's own); a record
    margin: float = 0.0  # execute another candidate only if it beats the policy's own chunk (candidate 0) by more

    def __post_init__(self) -> None:
        if self.kind not in PLANNERS:
            raise PlanningError(f"--planner {self.kind!r} is not one of {list(PLANNERS)}")
        if self.candidates < 1:
            raise PlanningError(f"--candidates must be >= 1, got {self.candidates}")
        if self.kind == "cem" and self.candidates < 2:
            raise PlanningError("--planner cem needs --candidates >= 2 (it refits a distribution to the best ones)")
        if self.iterations < 0:
            raise PlanningError(f"--cem-iterations must be >= 0, got {self.iterations}")
        if self.imagine_steps is not None and self.imagine_steps < 1:
            raise PlanningError(f"--imagine-steps must be >= 1, got {self.imagine_steps}")
        if self.horizon < 1:
            raise PlanningError(f"--plan-horizon must be >= 1, got {self.horizon}")
        if self.score not in SCORES:
            raise PlanningError(f"--plan-score {self.score!r} is not one of {list(SCORES)}")
        if self.elites is not None and not 1 <= self.elites <= self.candidates:
            raise PlanningError(f"--elites must be in 1..{self.candidates}, got {self.elites}")
        if not self.margin >= 0:
            raise PlanningError(f"--plan-margin must be >= 0, got {self.margin}")
        if self.noise_scale is not None and not 0.0 <= self.noise_scale <= MAX_NOISE_SCALE:
            raise PlanningError(f"--plan-noise-scale must be in [0, {MAX_NOISE_SCALE:g}], got {self.noise_scale}")


@dataclass
class Plan:
    actions: Tensor  # [B,K,A] raw, the chosen chunk
    future_frames: Tensor  # [B,Tf,V,C,H,W] what the model imagines the chosen chunk does
    scores: Tensor  # [B,N] the last round's candidate scores
    best_score: Tensor  # [B] the chosen chunk's score
    chosen: Tensor  # [B] index of the chosen candidate in the last round that had it (best_of_n: the candidate;
    # 0 also where --plan-margin kept the policy's own chunk)


def repeat_batch(batch: Batch, n: int) -> Batch:
    """Each sample repeated ``n`` times, sample-major: b0, b0, ..., b1, b1, ..."""

    def rep(value):
        if isinstance(value, Tensor):
            return value.repeat_interleave(n, 0)
        if isinstance(value, list):
            return [v for v in value for _ in range(n)]
        return value

    return Batch(**{f.name: rep(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def check_world(policy_model, world_model) -> None:
    """A separate world model imagines what the policy's batch and chunks describe: the same
    cameras, frame size, action and state spaces, observed history and chunk."""
    p, w = policy_model.config, world_model.config
    fields = [("cameras", "views"), ("channels", "channels"), ("height", "height"), ("width", "width"),
              ("action dim", "action_dim"), ("state dim", "state_dim"), ("history frames", "history"),
              ("frame stride", "future_frame_stride"), ("chunk length", "chunk_length")]
    message = mismatch([(name, getattr(p, key), getattr(w, key)) for name, key in fields], "the planning world model")
    if message:
        raise PlanningError(message)


class Planner:
    """``plan(batch, mode, seed)`` -> ``Plan``; ``judge`` (a ``Judge``) or ``goal`` ([V,C,H,W] in
    [0,1] at the model's size) scores imagined futures; ``clip`` bounds raw actions (the policy's).
    ``world``: the sampler that imagines the candidates (default: ``sampler``, the policy's own model)."""

    def __init__(self, sampler: Sampler, config: PlannerConfig, judge=None, goal: Tensor | None = None,
                 clip: Callable[[Tensor], Tensor] | None = None, world: Sampler | None = None):
        self.sampler, self.config, self.judge, self.clip = sampler, config, judge, clip
        self.world = world or sampler
        if world is not None:
            check_world(sampler.model, world.model)
        model = self.world.model
        c = model.config
        if model.future_tokens == 0:
            raise PlanningError("the model imagines no frames (model.future_frames=0): it cannot plan; "
                                "train with future frames (recipes/world_model_metaworld*.yaml), or plan with "
                                "a world model that does (--plan-model)")
        own, *others = self.noise_scales()
        if others and max(own, *others) == 0:
            raise PlanningError(f"a noise scale of 0 makes all {config.candidates} candidates the same chunk: plan "
                                "with --plan-noise-scale above 0")
        if len(others) > 1 and max(others) == 0:
            raise PlanningError(f"--plan-noise-scale 0 makes candidates 1..{len(others)} the same chunk (the policy's "
                                "mean): pass --candidates 2 or a scale above 0")
        if judge is None and goal is None:
            raise PlanningError("planning needs a judge (`vidact judge`, stored as BUNDLE/judge) or --goal-image")
        if judge is not None:
            j = judge.config
            if (j.channels, j.height, j.width) != (c.channels, c.height, c.width):
                raise PlanningError(f"the judge reads [{j.channels},{j.height},{j.width}] frames but the model imagines "
                                    f"[{c.channels},{c.height},{c.width}]")
        self.goal_latents = None
        if goal is not None:
            want = (c.views, c.channels, c.height, c.width)
            if goal.ndim == 3:
                goal = goal[None]
            if tuple(goal.shape) != want:
                raise PlanningError(f"--goal-image is {list(goal.shape)} (views, channels, height, width) but the model "
                                    f"imagines {list(want)}")
            self.goal_latents = model.encode_frames(goal[None, None].float())  # [1, V*n, Dl]

    @property
    def model(self):
        """The model that imagines (and encodes a goal image)."""
        return self.world.model

    def noise_scales(self) -> list[float]:
        """The action noise's scale per candidate: the policy's own for candidate 0, the planner's
        (default: the same) for the others."""
        own, planned = self.sampler.config.noise_scale, self.config.noise_scale
        return [own] + [own if planned is None else planned] * (self.config.candidates - 1)

    def score(self, frames: Tensor, texts: list[str]) -> Tensor:
        """[M,T,V,C,H,W] imagined frames (those the actions reach) -> [M] scores (higher is better):
        of the last frame, or with ``score="mean"`` the mean over the T frames."""
        M, T = frames.shape[:2]
        if self.config.score == "last":
            frames, T = frames[:, -1:], 1
        flat = frames.flatten(0, 1)  # [M*T,V,C,H,W]
        if self.goal_latents is not None:
            lat = self.model.encode_frames(flat[:, None].float())
            per_frame = -(lat - self.goal_latents.to(lat)).pow(2).mean((1, 2))
        else:
            value, _ = self.judge.predict(flat[:, 0].float().cpu(), [t for t in texts for _ in range(T)])
            per_frame = value.to(frames.device)
        return per_frame.view(M, T).mean(1)

    def imagine(self, batch: Batch, actions: Tensor, noise_v: Tensor, seed: int) -> Tensor:
        """[M,K,A] raw actions -> [M,Tf,V,C,H,W] imagined frames (forward_dynamics, one batch)."""
        imagined = dataclasses.replace(batch, actions=actions)
        noise_a = torch.zeros(actions.shape, dtype=noise_v.dtype)  # unused: actions are given
        return self.world.sample(imagined, Mode.FORWARD_DYNAMICS, seed=seed, noise=(noise_v, noise_a),
                                 steps=self.config.imagine_steps).future_frames

    def reached(self, frames: Tensor) -> Tensor:
        """The imagined frames a chunk's actions reach ([M,Tf,...] -> [M,n,...], n = min(Tf, K // s)),
        clamped to [0,1] as real frames are."""
        return frames[:, :frames_per_call(self.model, self.model.config.future_frame_stride)].float().clamp(0, 1)

    def look_ahead(self, batch: Batch, frames: Tensor, mode: Mode | str, seed: int) -> Tensor:
        """The frames the candidate chunks reach [M,n,...] -> every frame of the horizon
        [M,H*n,...]: ``horizon - 1`` times, the policy acts on the history of imagined frames
        (``rollout.history_batch``: the state masked out where the frame is imagined) and the model
        imagines its chunk; the same noise for every candidate and every call with this ``seed``."""
        model, M, N = self.model, batch.batch_size, self.config.candidates
        Th = batch.obs_frames.shape[1]
        start = RolloutStart(batch.obs_frames.float(), batch.state, list(batch.text), batch.obs_is_pad)
        grid = [*start.frames.unbind(1), *frames.unbind(1)]  # from grid index -(Th-1)
        seen = [frames]
        for h in range(1, self.config.horizon):
            follow = history_batch(start, grid, len(grid) - Th, Th)
            # Candidate i's seeds are seed + i * SEED_STRIDE, i < N: the follow-up noise is apart from them.
            follow_seed = seed + (N + h) * SEED_STRIDE
            noise = self.policy_noise(follow_seed) + (initial_noise(model, 1, follow_seed)[0],)
            noise_v, noise_a, world_v = (x.expand(M, *x.shape[1:]).to(frames.device) for x in noise)
            actions = self.sampler.sample(follow, mode, seed=seed, noise=(noise_v, noise_a)).actions.float()
            if self.clip is not None:
                actions = self.clip(actions)
            new = self.reached(self.imagine(follow, actions, world_v, seed))
            grid += new.unbind(1)
            seen.append(new)
        return torch.cat(seen, 1)

    def policy_noise(self, seed: int, batch_size: int = 1) -> tuple[Tensor, Tensor]:
        """The policy's (video, action) starting noise for ``seed``, for its own model's shapes."""
        return initial_noise(self.sampler.model, batch_size, seed)

    def evaluate(self, big: Batch, actions: Tensor, noise_v: Tensor, mode: Mode | str, seed: int):
        """Candidate chunks [M,K,A] -> (their imagined frames [M,Tf,...], their scores [M]); ``seed``
        is the plan's: every round of CEM looks ahead from the same noise."""
        frames = self.imagine(big, actions, noise_v, seed)
        future = self.reached(frames)
        if self.config.horizon > 1:
            future = self.look_ahead(big, future, mode, seed)
        return frames, self.score(future, big.text)

    @torch.no_grad()
    def plan(self, batch: Batch, mode: Mode | str, seed: int) -> Plan:
        cfg, model = self.config, self.model
        B, N = batch.batch_size, cfg.candidates
        noise = [self.policy_noise(seed + i * SEED_STRIDE, B) for i in range(N)]
        noise_v = torch.stack([v for v, _ in noise], 1).flatten(0, 1)  # [B*N,...] sample-major
        noise_a = torch.stack([a * s for (_, a), s in zip(noise, self.noise_scales())], 1).flatten(0, 1)
        big = repeat_batch(batch, N)
        # Each candidate's action noise is scaled above: the sampler must not scale it again.
        actions = self.sampler.sample(big, mode, seed=seed, noise=(noise_v, noise_a), noise_scale=1.0).actions.float()
        if self.clip is not None:
            actions = self.clip(actions)
        # Every candidate is imagined from the same video noise (candidate 0's): the imagined
        # futures then differ by the actions alone, not by the luck of the draw.
        first_v = noise[0][0] if self.world is self.sampler else initial_noise(model, B, seed)[0]
        common_v = first_v.repeat_interleave(N, 0)
        frames, scores = self.evaluate(big, actions, common_v, mode, seed)
        scores = scores.view(B, N)
        best = scores.argmax(1)
        take = lambda x: x.view(B, N, *x.shape[1:])[torch.arange(B), best]  # noqa: E731
        take_index = lambda x, i: x.view(B, N, *x.shape[1:])[:, i]  # noqa: E731
        chosen_actions, chosen_frames, best_score = take(actions), take(frames), scores.max(1).values
        own_score, own_actions, own_frames = scores[:, 0], take_index(actions, 0), take_index(frames, 0)
        if cfg.kind == "cem":
            chosen_actions, chosen_frames, best_score, scores, best = self._cem(
                big, actions, scores, common_v, mode, seed, chosen_actions, chosen_frames, best_score, best)
        if cfg.margin > 0:  # the policy's own chunk unless another is clearly better
            keep = best_score <= own_score + cfg.margin
            chosen_actions = torch.where(keep.view(B, 1, 1), own_actions, chosen_actions)
            chosen_frames = torch.where(keep.view(B, *[1] * (chosen_frames.ndim - 1)), own_frames, chosen_frames)
            best_score = torch.where(keep, own_score, best_score)
            best = torch.where(keep, torch.zeros_like(best), best)
        return Plan(chosen_actions, chosen_frames, scores, best_score, best)

    def _cem(self, big: Batch, actions: Tensor, scores: Tensor, noise_v: Tensor, mode: Mode | str, seed: int,
             best_actions: Tensor, best_frames: Tensor, best_score: Tensor, best: Tensor):
        cfg, norm = self.config, self.sampler.model.normalizer  # the policy's actions
        B, N = scores.shape
        elites = cfg.elites or max(2, N // 4)
        x = norm.normalize("action", actions).view(B, N, *actions.shape[1:])  # [B,N,K,A]
        generator = torch.Generator().manual_seed(seed)
        for it in range(cfg.iterations):
            top = scores.topk(elites, dim=1).indices  # [B,E]
            elite = x[torch.arange(B)[:, None], top]  # [B,E,K,A]
            mean, std = elite.mean(1), elite.std(1, unbiased=False).clamp(min=cfg.min_std)
            x = mean[:, None] + std[:, None] * torch.randn(x.shape, generator=generator).to(x)
            raw = norm.unnormalize("action", x.flatten(0, 1))
            if self.clip is not None:
                raw = self.clip(raw)
                x = norm.normalize("action", raw).view_as(x)
            frames, scores = self.evaluate(big, raw, noise_v, mode, seed)
            scores = scores.view(B, N)
            round_best = scores.argmax(1)
            better = scores.max(1).values > best_score
            pick = lambda t: t.view(B, N, *t.shape[1:])[torch.arange(B), round_best]  # noqa: E731
            best_actions = torch.where(better.view(B, 1, 1), pick(raw), best_actions)
            best_frames = torch.where(better.view(B, *[1] * (best_frames.ndim - 1)), pick(frames), best_frames)
            best = torch.where(better, round_best, best)
            best_score = torch.maximum(best_score, scores.max(1).values)
        return best_actions, best_frames, best_score, scores, best


def read_goal_image(path: str) -> Tensor:
    """An image file -> [1,C,H,W] float in [0,1] (one camera view; its size must be the model's)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise PlanningError(f"--goal-image {path}: no such file")
    try:
        img = np.asarray(Image.open(path).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise PlanningError(f"--goal-image {path}: not an image ({e})") from None
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255


def planner_kwargs(args) -> dict:
    """``Policy`` keyword arguments from the command line's planning options (``--planner``,
    ``--candidates``, ``--cem-iterations``, ``--elites``, ``--imagine-steps``, ``--plan-horizon``,
    ``--plan-score``, ``--plan-noise-scale``, ``--plan-model``, ``--plan-margin``, ``--judge``, ``--goal-image``)."""
    planner = getattr(args, "planner", None)
    if not planner:
        given = [f for f, v in (("--judge", getattr(args, "judge", None)),
                                ("--goal-image", getattr(args, "goal_image", None)),
                                ("--plan-horizon", getattr(args, "plan_horizon", 1) != 1),
                                ("--plan-score", getattr(args, "plan_score", "last") != "last"),
                                ("--plan-noise-scale", getattr(args, "plan_noise_scale", None) is not None),
                                ("--plan-model", getattr(args, "plan_model", None)),
                                ("--plan-margin", getattr(args, "plan_margin", 0.0) != 0.0)) if v]
        if given:
            raise PlanningError(f"{' and '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with "
                                "--planner best_of_n|cem")
        return {}
    kwargs: dict = {"planner": PlannerConfig(planner, args.candidates, args.cem_iterations, args.elites,
                                             imagine_steps=args.imagine_steps, horizon=args.plan_horizon,
                                             score=args.plan_score, noise_scale=args.plan_noise_scale,
                                             world_model=getattr(args, "plan_model", None),
                                             margin=getattr(args, "plan_margin", 0.0))}
    if getattr(args, "plan_model", None):
        kwargs["plan_model"] = args.plan_model
    if args.judge:
        from vidact.worldmodel.judge import Judge

        kwargs["judge"] = Judge.load(args.judge)
    if args.goal_image:
        kwargs["goal_image"] = read_goal_image(args.goal_image)
    return kwargs
