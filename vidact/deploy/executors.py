"""Chunk executors: how a policy that predicts K actions at a time turns into one action per step.

Each executor has ``act(infer) -> action`` and ``reset()``. ``infer()`` runs the policy on the
current observation and returns a chunk ``[K, ...]`` (time first; any trailing shape, e.g. [K,A]
or [K,B,A]) whose row 0 is the action for the current step. The executor decides when to call it.

- ``OpenLoop``: infer, execute the first ``n_action_steps`` actions, infer again (diffusion_policy,
  LeRobot's ``n_action_steps``).
- ``TemporalEnsemble``: infer every step and average all chunks' predictions for this step with
  weights ``exp(-coeff * i)``, i = 0 for the oldest chunk (ACT, Zhao et al. 2023, sec. 3.3).
- ``RealTimeChunking``: infer every ``execution_horizon`` steps while the robot keeps moving: the
  chunk computed from the observation at step r only takes over at step r + delay (the inference
  time in control steps), so its first ``delay`` actions are stale and skipped, and the next
  ``overlap`` actions are cross-faded from the old chunk into the new one (the bidirectional
  blending baseline of Black et al. 2025, "Real-Time Execution of Action Chunking Flow Policies";
  their guided inpainting needs model support and is not done here). In a synchronous loop (sim
  evaluation) the delay is simulated exactly: the old chunk keeps running for ``delay`` steps.
- ``AsyncChunking``: the same, with the next chunk computed in a background thread while the
  current one is executed, so a control loop never waits for inference (``vidact drive``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

Infer = Callable[[], np.ndarray]


class Executor:
    def reset(self) -> None:
        raise NotImplementedError

    def act(self, infer: Infer) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Finish work still running (a background inference) before the process moves on or exits."""


def _check_chunk(chunk: np.ndarray, chunk_length: int) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim < 1 or chunk.shape[0] != chunk_length:
        raise ValueError(f"policy returned a chunk of shape {list(chunk.shape)}; expected [K={chunk_length}, ...]")
    return chunk


class OpenLoop(Executor):
    def __init__(self, chunk_length: int, n_action_steps: int | None = None):
        n_action_steps = n_action_steps or chunk_length
        if not 1 <= n_action_steps <= chunk_length:
            raise ValueError(f"n_action_steps={n_action_steps} must be in [1, chunk_length={chunk_length}]")
        self.chunk_length, self.n_action_steps = chunk_length, n_action_steps
        self.reset()

    def reset(self) -> None:
        self.queue: deque[np.ndarray] = deque()

    def act(self, infer: Infer) -> np.ndarray:
        if not self.queue:
            chunk = _check_chunk(infer(), self.chunk_length)
            self.queue.extend(chunk[: self.n_action_steps])
        return self.queue.popleft()


class TemporalEnsemble(Executor):
    def __init__(self, chunk_length: int, coeff: float = 0.01):
        self.chunk_length, self.coeff = chunk_length, coeff
        self.reset()

    def reset(self) -> None:
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was predicted at, chunk), oldest first
        self.t = 0

    def act(self, infer: Infer) -> np.ndarray:
        self.chunks.append((self.t, _check_chunk(infer(), self.chunk_length)))
        while self.t - self.chunks[0][0] >= self.chunk_length:
            self.chunks.popleft()
        preds = np.stack([chunk[self.t - start] for start, chunk in self.chunks])  # oldest first
        weights = np.exp(-self.coeff * np.arange(len(preds)))
        weights = (weights / weights.sum()).reshape(-1, *([1] * (preds.ndim - 1)))
        self.t += 1
        return (weights * preds).sum(0).astype(preds.dtype)


class RealTimeChunking(Executor):
    """``delay``: inference time in control steps; ``None`` with ``fps`` measures it (the longest
    of the recent inference calls, rounded up)."""

    def __init__(self, chunk_length: int, execution_horizon: int | None = None, delay: int | None = 0,
                 overlap: int = 0, fps: float | None = None):
        self.chunk_length = chunk_length
        self.execution_horizon = execution_horizon or max(1, chunk_length // 2)
        if delay is None and not fps:
            raise ValueError("RealTimeChunking: give delay (control steps) or fps (to measure it)")
        self.fixed_delay, self.fps, self.overlap = delay, fps, overlap
        self._check(delay or 0)
        self.reset()

    def _check(self, delay: int) -> None:
        if delay < 0 or self.overlap < 0 or self.execution_horizon < 1:
            raise ValueError("RealTimeChunking: delay and overlap must be >= 0, execution_horizon >= 1")
        if self.execution_horizon + delay > self.chunk_length:
            raise ValueError(f"RealTimeChunking: execution_horizon ({self.execution_horizon}) + delay ({delay}) "
                             f"exceeds chunk_length ({self.chunk_length}): the old chunk would run out before "
                             "the new one arrives")

    def reset(self) -> None:
        self.t = 0
        self.plan: np.ndarray | None = None  # the chunk being executed
        self.plan_start = 0  # step of the observation it was computed from
        self.pending: tuple[np.ndarray, int, int] | None = None  # (chunk, its observation step, takes over at)
        self.latencies: deque[float] = deque(maxlen=10)

    @property
    def delay(self) -> int:
        if self.fixed_delay is not None:
            return self.fixed_delay
        if not self.latencies:
            return 0
        return min(math.ceil(max(self.latencies) * self.fps), self.chunk_length - self.execution_horizon)

    def _infer(self, infer: Infer) -> np.ndarray:
        start = time.perf_counter()
        chunk = _check_chunk(infer(), self.chunk_length)
        self.latencies.append(time.perf_counter() - start)
        return chunk

    def act(self, infer: Infer) -> np.ndarray:
        if self.plan is None:  # first step: nothing to keep running while we wait
            self.plan, self.plan_start = self._infer(infer), self.t
        if self.pending is not None and self.t >= self.pending[2]:
            self._switch(*self.pending[:2])
            self.pending = None
        # Checked after a switch, so the next request goes out on the step the new chunk takes
        # over: with delay == chunk_length - execution_horizon there is no step to spare.
        if self.pending is None and self.t - self.plan_start >= self.execution_horizon:
            self.pending = (self._infer(infer), self.t, self.t + self.delay)
            if self.t >= self.pending[2]:
                self._switch(*self.pending[:2])
                self.pending = None
        action = self.plan[self.t - self.plan_start]
        self.t += 1
        return action

    def _switch(self, chunk: np.ndarray, start: int) -> None:
        chunk = chunk.copy()
        # Steps t..: the new chunk's row (t - start); blend with the old plan's row for the same step.
        for j in range(self.overlap):
            step = self.t + j
            new_i, old_i = step - start, step - self.plan_start
            if new_i >= self.chunk_length or old_i >= self.chunk_length:
                break
            w = (j + 1) / (self.overlap + 1)  # weight of the new chunk grows to 1
            chunk[new_i] = (1 - w) * self.plan[old_i] + w * chunk[new_i]
        self.plan, self.plan_start = chunk, start


class AsyncChunking(RealTimeChunking):
    """Real-time chunking with inference in a background thread (LeRobot's async inference,
    LingBot-VA's asynchronous execution): when ``execution_horizon`` actions of the current chunk
    have run, the next chunk is requested from the observation of that step and computed while the
    robot keeps executing the current one; ``act`` never waits for it unless the current chunk runs
    out (counted in ``waits``: raise the control period or lower ``execution_horizon``). The new
    chunk takes over on the first step after it is ready: its rows for the steps that passed while
    it was computed are skipped and the next ``overlap`` are cross-faded from the old chunk, as in
    ``RealTimeChunking`` (whose ``delay`` is here what the wall clock measured). ``infer`` must be
    safe to run in another thread on the observation it was made for (``Policy.select_action``'s is).
    """

    def __init__(self, chunk_length: int, execution_horizon: int | None = None, overlap: int = 0):
        super().__init__(chunk_length, execution_horizon, delay=0, overlap=overlap)

    def reset(self) -> None:
        self.close()  # a chunk for the old episode: let it finish, drop it
        super().reset()
        self.request: tuple[threading.Thread, dict, int] | None = None  # (thread, its result, request step)
        self.waits = 0

    def close(self) -> None:
        # Joined, not abandoned: a daemon thread still inside torch when the interpreter exits
        # aborts the process ("terminate called without an active exception").
        pending = getattr(self, "request", None)
        if pending is not None:
            pending[0].join()
            self.request = None

    def _request(self, infer: Infer) -> None:
        result: dict = {}

        def run() -> None:
            try:
                result["chunk"] = self._infer(infer)
            except BaseException as e:  # re-raised on the control thread when the chunk is collected
                result["error"] = e

        thread = threading.Thread(target=run, name="vidact-infer", daemon=True)
        thread.start()
        self.request = (thread, result, self.t)

    def act(self, infer: Infer) -> np.ndarray:
        if self.plan is None:  # first step: nothing to execute while we wait
            self.plan, self.plan_start = self._infer(infer), self.t
        if self.request is not None:
            thread, result, start = self.request
            if thread.is_alive() and self.t - self.plan_start >= self.chunk_length:
                self.waits += 1  # the current chunk ran out
                thread.join()
            if not thread.is_alive():
                self.request = None
                if "error" in result:
                    raise result["error"]
                self._switch(result["chunk"], start)
        if self.request is None and self.t - self.plan_start >= self.execution_horizon:
            self._request(infer)
        action = self.plan[self.t - self.plan_start]
        self.t += 1
        return action


EXECUTORS = {"open_loop": OpenLoop, "temporal_ensemble": TemporalEnsemble, "rtc": RealTimeChunking,
             "async": AsyncChunking}


def build_executor(name: str, chunk_length: int, **kwargs) -> Executor:
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r} is not one of {sorted(EXECUTORS)}")
    return EXECUTORS[name](chunk_length, **kwargs)
