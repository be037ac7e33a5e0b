"""``Policy``: an exported bundle (``vidact export``) as a LeRobot-style policy.

Observations are LeRobot dicts, one step at a time, batched or not:

    {"observation.image": [H,W,C] uint8 | [C,H,W] float in [0,1]   (or with a leading batch dim B),
     "observation.state": [S] (or [B,S]),
     "task": "instruction" (or a list of B instructions)}

Each camera is fitted to the model's resolution as the training loader fitted it
(``vidact.data.transforms.fit_frames``, the bundle's ``cameras.fit``; resize by default), whatever
its resolution and aspect ratio. The policy keeps the last ``Th``
observations itself; before ``Th`` steps have been seen the missing history is marked padded,
as the training loader marks the steps before an episode's start. ``reset()`` starts a new
episode.

``predict_chunk`` returns a whole action chunk (and, in ``policy`` mode, the imagined future
frames); ``select_action`` returns one action through a chunk executor (``executors.py``).

Safety (issue 16): every observation is checked before it reaches the model (``ObservationChecks``:
finite values, the model's channel count and state size, a state near the training statistics,
optionally its age); a refused one raises ``ObservationError`` and leaves the episode state as it
was. Actions are clipped to the bundle's bounds, and non-finite ones raise ``UnsafeActionError``
instead of being returned. ``check_observation`` runs the checks alone.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from vidact.data.robot import window_offsets
from vidact.data.transforms import fit_frames
from vidact.bundle import PRIMARY_IMAGE_KEY, STATE_KEY, network_config, read_config, read_info, read_weights
from vidact.deploy.executors import Executor, build_executor
from vidact.deploy.planner import Planner, PlannerConfig, PlanningError
from vidact.generative.sample import SampleOutput, Sampler, SamplerConfig
from vidact.generative.schedule import Mode
from vidact.models import VidAct, VidActConfig
from vidact.types import Batch

TASK_KEY = "task"
# Optional: time.time() when the observation was captured; read when ObservationChecks.max_age_s is set.
CAPTURE_TIME_KEY = "capture_time"
# 10 training standard deviations: a Gaussian never gets there, while a state in the wrong units
# (degrees for radians, mm for m) or a garbage reading lands far beyond it. A MetaWorld bundle
# trained on one demonstration saw at most 4.5 on random-action rollouts of held-out seeds.
DEFAULT_MAX_STATE_DEVIATION = 10.0


class ObservationError(ValueError):
    """A refused observation (malformed, non-finite, out of distribution, stale); the one-line
    message names the key and what was expected."""


class UnsafeActionError(RuntimeError):
    """The model produced non-finite actions; they are never returned."""


@dataclass
class ObservationChecks:
    """What an observation must satisfy before it reaches the model, beyond its keys and shapes.

    ``max_state_deviation``: each state dimension may lie at most this many units from the
    training centre, in the bundle's own normalization: standard deviations from the mean
    (``mean_std``) or half q01..q99 ranges from their midpoint (``quantile``); that is,
    ``|normalized state| <= max_state_deviation``. Default 10 (``DEFAULT_MAX_STATE_DEVIATION``);
    None turns it off. Bundles trained without statistics skip it (their normalization is the
    identity). A dimension constant in training has scale 1, so it is measured in raw units.
    ``max_age_s``: when set, an observation must carry ``capture_time`` (``time.time()`` when it
    was captured, on a clock shared with this process) and be at most this old.
    Non-finite values, a camera with the wrong number of channels and a state of the wrong size
    are always refused.
    """

    max_state_deviation: float | None = DEFAULT_MAX_STATE_DEVIATION
    max_age_s: float | None = None

    @classmethod
    def from_args(cls, args) -> "ObservationChecks":
        """From ``vidact eval|serve|drive``'s ``--max-state-deviation`` (None: the default, inf: off)
        and ``--max-observation-age``."""
        deviation = getattr(args, "max_state_deviation", None)
        age = getattr(args, "max_observation_age", None)
        return cls(DEFAULT_MAX_STATE_DEVIATION if deviation is None else None if math.isinf(deviation) else deviation,
                   None if age is None or math.isinf(age) else age)

    def __post_init__(self):
        for name in ("max_state_deviation", "max_age_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None to turn the check off), got {value}")


@dataclass
class Chunk:
    actions: np.ndarray  # [K,A] (or [B,K,A] for a batched observation), raw units, clipped to the bounds
    future_frames: np.ndarray | None = None  # [Tf,V,C,H,W] (or [B,...]) in [0,1], policy mode or planning
    latency_s: float = 0.0
    scores: np.ndarray | None = None  # planning: [N] (or [B,N]) the candidates' scores


class Policy:
    def __init__(self, model: VidAct, sampler: SamplerConfig, info: dict[str, Any], mode: Mode | str = Mode.POLICY_FAST,
                 n_action_steps: int | None = None, executor: str | Executor = "open_loop",
                 executor_kwargs: Mapping[str, Any] | None = None, checks: ObservationChecks | None = None,
                 planner: PlannerConfig | None = None, judge=None, goal_image: torch.Tensor | None = None,
                 cuda_graphs: bool = True, compiled: bool = False, streaming: bool = True,
                 plan_model: tuple[VidAct, SamplerConfig] | None = None):
        """``cuda_graphs``: on a CUDA device, each chunk is one replay of a captured CUDA graph (made
        on the first chunk of each batch shape; the same actions as the eager sampler, 6-8x faster at
        batch 1, BENCHMARKS.md "Kernel choices on the GPU"). Planning stays eager. ``compiled``: the
        transformer backbone through ``torch.compile`` (for the CPU: inductor fuses the norms,
        modulations and GELU between the matmuls, -2 to -25% per chunk for the quickstart model; the
        first chunk of each shape compiles, 25-50 s on one core; BENCHMARKS.md "One sampler step").
        ``streaming``: for a model with a frame-local prefix (``model.prefix_attention``), each
        observation step's keys/values are computed once, when it arrives, and the instruction's
        once per episode; a chunk then pays for its newest frame and the denoising steps only (the
        same chunk as recomputing the prefix; not with classifier-free guidance, planning or CUDA
        graphs, which recompute it). ``plan_model``: (world model, its sampler settings) that imagines
        the planner's candidates instead of this policy's own model (same cameras, sizes, action and
        state spaces, history and chunk)."""
        self.model = model.eval()
        if compiled:
            self.model.backbone.compile(dynamic=False)
        self.config: VidActConfig = model.config
        self.sampler = Sampler(model, sampler)
        self.streaming = streaming and model.frame_local and sampler.guidance_scale == 1.0
        self.mode = Mode(mode)
        if self.mode not in (Mode.POLICY, Mode.POLICY_FAST):
            raise ValueError(f"Policy mode must be 'policy' or 'policy_fast', got {self.mode.value!r}")
        self.info = info
        cams = info.get("cameras", {})
        self.camera_keys: list[str] = list(cams.get("keys") or [PRIMARY_IMAGE_KEY])
        self.camera_fit: dict[str, str] = {k: (cams.get("fit") or {}).get(k, "resize") for k in self.camera_keys}
        self.state_key: str = info.get("state", {}).get("key", STATE_KEY)
        bounds = info.get("action", {}).get("bounds")
        self.action_low = np.asarray(bounds["low"], np.float32) if bounds else None
        self.action_high = np.asarray(bounds["high"], np.float32) if bounds else None
        self.n_action_steps = n_action_steps or self.config.chunk_length
        if isinstance(executor, str):
            kwargs = dict(executor_kwargs or {})
            if executor == "open_loop":
                kwargs.setdefault("n_action_steps", self.n_action_steps)
            executor = build_executor(executor, self.config.chunk_length, **kwargs)
        self.executor = executor
        self.checks = checks or ObservationChecks()
        self.judge = judge
        self.planner = None
        if planner is not None:
            low, high = (None, None) if self.action_low is None else (torch.from_numpy(self.action_low),
                                                                      torch.from_numpy(self.action_high))
            clip = None if low is None else (lambda a: torch.maximum(torch.minimum(a, high.to(a)), low.to(a)))
            world = None if plan_model is None else Sampler(plan_model[0].eval(), plan_model[1])
            self.planner = Planner(self.sampler, planner, judge=judge, goal=goal_image, clip=clip, world=world)
        self.last_chunk: Chunk | None = None
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, Any] = {}  # batch shapes -> GraphedSampler; shared by sessions, so
        self._graph_lock = threading.Lock()  # one replay at a time (a graph's buffers are its own)
        self._episodes = itertools.count()  # shared by sessions: no two episodes draw the same noise
        self.reset()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | Path, mode: Mode | str | None = None, device: str = "cpu",
                        steps: int | None = None, seed: int | None = None, noise_scale: float | None = None,
                        **kwargs) -> "Policy":
        """Load a bundle folder written by ``vidact export``. ``mode`` / ``steps`` / ``seed`` /
        ``noise_scale`` override the bundle's sampler settings. With ``planner`` and no ``judge``,
        the bundle's own judge (``BUNDLE/judge``, ``vidact judge``) is loaded, unless a goal image
        scores instead. ``plan_model``: a world model's run directory, checkpoint or bundle that
        imagines the candidates (its judge, unless ``judge`` or ``goal_image``)."""
        path = Path(path)
        plan_model = kwargs.pop("plan_model", None)
        if plan_model is not None and kwargs.get("planner") is None:
            raise PlanningError("--plan-model only applies with --planner best_of_n|cem")
        judged = path if plan_model is None else Path(plan_model)
        if plan_model is not None and not judged.exists():
            raise PlanningError(f"--plan-model {plan_model} does not exist")
        if kwargs.get("planner") is not None and kwargs.get("judge") is None and kwargs.get("goal_image") is None:
            from vidact.worldmodel.judge import Judge, find_judge

            folder = find_judge(judged)
            if folder is None:
                raise PlanningError(f"{judged} has no judge to plan with: train one with `vidact judge {judged} "
                                    "--datasets ...`, or pass --goal-image")
            kwargs["judge"] = Judge.load(folder)
        if plan_model is not None:
            from vidact.worldmodel.imagine import load_model

            world, world_sampler = load_model(plan_model)
            kwargs["plan_model"] = (world.to(device), world_sampler)
            kwargs["planner"] = dataclasses.replace(kwargs["planner"], world_model=str(plan_model))
        config, info = read_config(path), read_info(path)
        sampler = dict(config.get("sampler") or {})
        if steps is not None:
            sampler["steps"] = steps
        if seed is not None:
            sampler["seed"] = seed
        if noise_scale is not None:
            sampler["noise_scale"] = noise_scale
        # The text encoder / VAE definitions come from the bundle's own folders, their weights
        # with the rest below: nothing is read from where the model was trained.
        model = VidAct(network_config(path, config["vidact"], info), component_weights=False)
        model.load_state_dict(read_weights(path), strict=True)
        model.to(device)
        kwargs.setdefault("n_action_steps", config.get("n_action_steps"))
        return cls(model, SamplerConfig(**sampler), info, mode or config.get("mode", Mode.POLICY_FAST.value),
                   **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ episode state

    def session(self) -> "Policy":
        """A policy sharing this one's network, sampler and settings, with its own episode state
        (observation history, executor, seed counter): ``vidact serve`` keeps one per connection."""
        other = copy.copy(self)
        other.executor = copy.deepcopy(self.executor)
        other.last_chunk = None
        other.reset()
        return other

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: forget the observation history, the executor's queue, the seed counter.

        ``seed`` names the episode's stream of sampler noise (``vidact eval`` passes the simulator
        seed): the same seed replays the same noise. Without one, each new episode of this policy
        (and of its sessions) takes the next stream. No two episodes share their noise: when every
        episode started from the same draw, that one draw decided whole evaluations (one sampler
        seed failed every button left of centre, another every one right of it; BENCHMARKS.md)."""
        # History frames are future_frame_stride control steps apart (vidact.data.robot.window_offsets),
        # so every step is remembered and every stride-th one is fed to the model.
        self._offsets = window_offsets(self.config)["history"]  # e.g. [-8, 0]
        self._history: deque[_Step] = deque(maxlen=1 - self._offsets[0])
        self._language = None  # streaming: (instructions, the instruction's keys/values)
        if seed is not None and seed < 0:
            raise ValueError(f"episode seed must be >= 0, got {seed}")
        self._episode = (0, next(self._episodes)) if seed is None else (1, int(seed))
        self._calls = 0
        self.executor.reset()

    # ------------------------------------------------------------------ observations

    def check_observation(self, observation: Mapping[str, Any]) -> None:
        """Raise ``ObservationError`` if ``predict_chunk`` / ``select_action`` would refuse
        ``observation``; changes nothing (no history, no seed)."""
        self._checked(observation)

    def _frames(self, key: str, value: Any) -> tuple[torch.Tensor, bool]:
        """-> ([B,C,H,W] float in [0,1] at the model's resolution, whether the input was batched)."""
        c = self.config
        want = f"[H,W,{c.channels}] uint8 or [{c.channels},H,W] float in [0,1] (optionally with a leading batch dim)"
        x = _as_tensor(key, value, want)
        if x.ndim not in (3, 4) or 0 in x.shape:
            raise ObservationError(f"observation '{key}': expected {want}, got shape {list(x.shape)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            dtype = str(x.dtype).removeprefix("torch.")
            raise ObservationError(f"observation '{key}': expected {want}, got dtype {dtype}")
        is_batched = x.ndim == 4
        if not is_batched:
            x = x[None]
        chw, hwc = x.shape[1] == c.channels, x.shape[3] == c.channels
        if hwc and (not chw or x.dtype == torch.uint8):
            x = x.permute(0, 3, 1, 2)
        elif not chw:
            raise ObservationError(f"observation '{key}': the model takes {c.channels}-channel images, {want}; "
                                   f"got shape {list(x.shape[1:] if not is_batched else x.shape)}")
        if x.is_floating_point():
            # One pass: a NaN makes both extremes NaN and an infinity shows as one (torch.isfinite(x).all()
            # costs 8 ms on a 480x480 camera on one core, this 0.5 ms, and it runs at every control step).
            low, high = (float(v) for v in torch.aminmax(x))
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ObservationError(f"observation '{key}': the image holds NaN or infinite values")
            if low < -1e-3 or high > 1.0 + 1e-3:
                raise ObservationError(f"observation '{key}': float images must be in [0,1] (got values in "
                                       f"[{low:.1f}, {high:.1f}]); pass uint8 for 0-255 values")
        return fit_frames(x.contiguous().cpu(), c.height, c.width, self.camera_fit[key]), is_batched

    def _state(self, value: Any) -> torch.Tensor:
        """-> [S] or [B,S] float, finite and near the training statistics (``ObservationChecks``)."""
        c, key = self.config, self.state_key
        state = _as_tensor(key, value, f"[{c.state_dim}] or [B,{c.state_dim}]").float().cpu()
        if state.shape[-1:] != (c.state_dim,) or state.ndim not in (1, 2) or state.numel() == 0:
            raise ObservationError(f"observation '{key}': expected shape [{c.state_dim}] or [B,{c.state_dim}], "
                                   f"got {list(state.shape)}")
        bad = ~torch.isfinite(state)
        if bool(bad.any()):
            dims = sorted({int(i) for i in bad.nonzero()[:, -1]})
            raise ObservationError(f"observation '{key}': dims {dims} are NaN or infinite")
        limit = self.checks.max_state_deviation
        normalizer = self.model.normalizer
        if limit is not None and bool(normalizer.has_stats):
            offset, scale = normalizer.state_offset.float().cpu(), normalizer.state_scale.float().cpu()
            deviation = ((state - offset) / scale).abs()  # [(B,)S], in the model's normalized units
            if float(deviation.max()) > limit:
                flat = int(deviation.argmax())
                dim = flat % c.state_dim
                unit = ("standard deviations from the training mean" if normalizer.mode == "mean_std"
                        else "half q01..q99 ranges from their midpoint")
                raise ObservationError(
                    f"observation '{key}' dim {dim} = {float(state.flatten()[flat]):.4g} is "
                    f"{float(deviation.flatten()[flat]):.3g} {unit} {float(offset[dim]):.4g} (limit {limit:g}: "
                    "--max-state-deviation); wrong units or calibration?")
        return state

    def _check_age(self, observation: Mapping[str, Any]) -> None:
        limit = self.checks.max_age_s
        if limit is None:
            return
        if CAPTURE_TIME_KEY not in observation:
            raise ObservationError(f"observation has no '{CAPTURE_TIME_KEY}' (time.time() when it was captured), "
                                   f"needed for the age limit of {limit:g} s")
        try:
            captured = float(np.asarray(observation[CAPTURE_TIME_KEY]).reshape(-1).max())
        except (TypeError, ValueError):
            raise ObservationError(f"observation '{CAPTURE_TIME_KEY}': expected seconds since the epoch "
                                   f"(time.time()), got {type(observation[CAPTURE_TIME_KEY]).__name__}") from None
        age = time.time() - captured
        if not math.isfinite(age) or abs(age) > limit:
            when = "old" if age >= 0 else "in the future (clocks differ?)"
            raise ObservationError(f"observation is {abs(age):.3g} s {when}; the limit is {limit:g} s "
                                   "(--max-observation-age)")

    def _parse(self, observation: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str], bool]:
        if not isinstance(observation, Mapping):
            raise ObservationError(f"observation must be a dict, got {type(observation).__name__}")
        c = self.config
        missing = [k for k in (*self.camera_keys, self.state_key) if k not in observation]
        if missing:
            raise ObservationError(f"observation is missing {missing}; this policy expects cameras {self.camera_keys} "
                                   f"(each [H,W,{c.channels}] uint8 or [{c.channels},H,W] float), "
                                   f"'{self.state_key}' [{c.state_dim}] and '{TASK_KEY}' (instruction string)")
        self._check_age(observation)
        views, flags = [], set()
        for key in self.camera_keys:
            frames, batched = self._frames(key, observation[key])
            views.append(frames)
            flags.add(batched)
        state = self._state(observation[self.state_key])
        flags.add(state.ndim == 2)
        if len(flags) > 1:
            raise ObservationError("observation mixes batched and unbatched entries: give every camera and "
                                   f"'{self.state_key}' a leading batch dim, or none")
        batched = flags.pop()
        sizes = [v.shape[0] for v in views]
        if len(set(sizes)) > 1:
            raise ObservationError(f"cameras {self.camera_keys} have different batch sizes {sizes}")
        frames = torch.stack(views, 1)  # [B,V,C,H,W]
        state = state if batched else state[None]
        B = frames.shape[0]
        if state.shape[0] != B:
            raise ObservationError(f"observation '{self.state_key}': batch {state.shape[0]} but cameras have batch {B}")
        task = observation.get(TASK_KEY, "")
        if isinstance(task, str):
            texts = [task] * B
        elif isinstance(task, (list, tuple)) and all(isinstance(t, str) for t in task):
            texts = list(task)
        else:
            raise ObservationError(f"observation '{TASK_KEY}': expected an instruction string (or a list of B), "
                                   f"got {type(task).__name__}")
        if len(texts) != B:
            raise ObservationError(f"observation '{TASK_KEY}': {len(texts)} instructions for a batch of {B}")
        return frames, state, texts, batched

    def _checked(self, observation: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str], bool]:
        frames, state, texts, batched = self._parse(observation)
        if self._history and self._history[-1].frames.shape[0] != frames.shape[0]:
            raise ObservationError(f"batch size changed from {self._history[-1].frames.shape[0]} to {frames.shape[0]} "
                                   "within an episode; call reset() first")
        return frames, state, texts, batched

    def _batch(self, observation: Mapping[str, Any]) -> tuple[Batch, bool]:
        batch, batched, _ = self._observe(observation)
        return batch, batched

    def _observe(self, observation: Mapping[str, Any]) -> tuple[Batch, bool, list["_Step"]]:
        """The observation into the history -> (the model's batch, batched, the history steps it holds)."""
        frames, state, texts, batched = self._checked(observation)  # a refused observation changes nothing
        self._history.append(_Step(frames, state))
        have = len(self._history)
        # Before the episode had enough steps: the first observation, marked padded (LeRobot clamps
        # to the episode's first frame and sets *_is_pad the same way).
        index = [have - 1 + off for off in self._offsets]
        steps = [self._history[max(i, 0)] for i in index]
        B = frames.shape[0]
        obs_is_pad = torch.tensor([i < 0 for i in index])[None].expand(B, -1).clone()
        batch = Batch(obs_frames=torch.stack([s.frames for s in steps], 1),
                      state=torch.stack([s.state for s in steps], 1), text=texts, obs_is_pad=obs_is_pad)
        return batch.to(self.device), batched, steps

    def _prefix(self, batch: Batch, steps: list["_Step"]):
        """Streaming: the chunk's prefix cache from each step's keys/values, computed once per step
        (and the instruction's once per episode, again if it changes)."""
        texts = tuple(batch.text)
        if self._language is None or self._language[0] != texts:
            self._language = (texts, self.model.cache_language(batch))
        language = self._language[1]
        for step in steps:
            if step.kv is None or step.kv[0] != texts:  # the steps' keys/values read the instruction's
                step.kv = (texts, self.model.cache_frame(language, step.frames.to(self.device),
                                                         step.state.to(self.device)))
        return self.model.assemble_prefix(language, [s.kv[1] for s in steps], self.model.history_valid(batch),
                                          self.model.future_base(batch))

    # ------------------------------------------------------------------ acting

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """Clip to the bundle's per-dimension action bounds (the training actions' [min, max])."""
        if self.action_low is None:
            return actions
        return np.clip(actions, self.action_low, self.action_high)

    def noise_seed(self) -> int:
        """The sampler seed of this episode's next chunk: from the sampler's seed, the episode and
        the chunk's index in it."""
        entropy = [self.sampler.config.seed % 2**63, *self._episode, self._calls]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] % 2**53)

    def predict_chunk(self, observation: Mapping[str, Any], seed: int | None = None) -> Chunk:
        """One observation step -> a chunk of K actions starting at this step."""
        batch, batched, steps = self._observe(observation)
        return self._predict(batch, batched, seed, steps)

    @torch.no_grad()
    def _predict(self, batch: Batch, batched: bool, seed: int | None = None,
                 steps: list["_Step"] | None = None) -> Chunk:
        seed = self.noise_seed() if seed is None else seed
        self._calls += 1
        start = time.perf_counter()
        scores = None
        if self.planner is not None:
            plan = self.planner.plan(batch, self.mode, seed)
            out_actions, out_frames, scores = plan.actions, plan.future_frames, plan.scores.float().cpu().numpy()
        else:
            out = self._sample(batch, seed, steps)
            out_actions, out_frames = out.actions, out.future_frames
        actions = out_actions.float().cpu().numpy()  # on a GPU, the wait for the chunk
        latency = time.perf_counter() - start
        if not np.isfinite(actions).all():
            raise UnsafeActionError(f"the model produced NaN or infinite actions (seed {seed}); none were returned. "
                                    "Are the bundle's weights intact?")
        actions = self.clip(actions)
        frames = out_frames.float().cpu().numpy() if out_frames is not None else None
        if not batched:
            actions = actions[0]
            frames = frames[0] if frames is not None else None
            scores = scores[0] if scores is not None else None
        self.last_chunk = Chunk(actions, frames, latency, scores)
        return self.last_chunk

    def _sample(self, batch: Batch, seed: int, steps: list["_Step"] | None = None):
        """The sampler's chunk; on a GPU, replayed from a CUDA graph of this mode and batch shape,
        under a lock held over all of its GPU work (a capture fails if another thread uses the GPU)."""
        if not (self.cuda_graphs and self.device.type == "cuda"):
            if self.streaming and steps is not None:
                return self.sampler.sample(batch, self.mode, seed=seed, prefix=self._prefix(batch, steps))
            return self.sampler.sample(batch, self.mode, seed=seed)
        from vidact.generative.graphs import GraphedSampler, shapes, with_text_embeddings
        from vidact.generative.sample import initial_noise

        with self._graph_lock:
            batch = with_text_embeddings(self.model, batch)
            key = (self.mode, self.sampler.config.steps, shapes(batch))
            if key not in self._graphs:
                if len(self._graphs) >= 8:  # keep memory bounded
                    self._graphs.clear()
                try:
                    self._graphs[key] = GraphedSampler(self.sampler, batch, self.mode)
                except RuntimeError as e:  # a component that cannot be captured: eager for this shape
                    warnings.warn(f"CUDA graph capture failed ({str(e).splitlines()[0]}); sampling eagerly")
                    self._graphs[key] = None  # shared by sessions: tried once
            graphed = self._graphs[key]
            if graphed is None:
                out = self.sampler.sample(batch, self.mode, seed=seed)
            else:
                out = graphed(batch, noise=initial_noise(self.model, batch.batch_size, seed))
            cpu = lambda t: None if t is None else t.float().cpu()  # noqa: E731
            return SampleOutput(out.mode, cpu(out.actions), cpu(out.future_frames), cpu(out.future_latents))

    def select_action(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One observation step -> one action [A] (or [B,A]), through the chunk executor."""
        batch, batched, steps = self._observe(observation)  # every step enters the history, chunk or not

        def infer() -> np.ndarray:
            chunk = self._predict(batch, batched, steps=steps)
            return chunk.actions if not batched else chunk.actions.swapaxes(0, 1)  # time first: [K,(B,)A]

        # Executors blend clipped chunks (convex combinations stay in the box); clip again anyway,
        # so no executor can ever send an action outside the bounds.
        return self.clip(self.executor.act(infer))


class _Step:
    """One observation step of the history: frames [B,V,C,H,W], state [B,S] and, streaming, the
    keys/values it contributes to every chunk that sees it (with the instructions they read)."""

    __slots__ = ("frames", "state", "kv")

    def __init__(self, frames: torch.Tensor, state: torch.Tensor):
        self.frames, self.state, self.kv = frames, state, None


def _as_tensor(key: str, value: Any, want: str) -> torch.Tensor:
    try:
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, np.ndarray):
            # Arrays decoded from msgpack are read-only views of the message; torch wants its own memory.
            return torch.from_numpy(np.array(value, copy=not value.flags.writeable or not value.flags.c_contiguous))
        if isinstance(value, (list, tuple)):
            return torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError):  # ragged lists, strings, object arrays
        raise ObservationError(f"observation '{key}': expected a numeric array {want}, got a {type(value).__name__} "
                               "that is not one") from None
    raise ObservationError(f"observation '{key}': expected an array {want}, got {type(value).__name__}")
