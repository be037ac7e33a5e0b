"""Chunk executors on scripted chunks: chunk row i is the action for step (call step + i)."""

from __future__ import annotations

import numpy as np
import pytest

from vidact.deploy.executors import OpenLoop, RealTimeChunking, TemporalEnsemble, build_executor

K = 8


class Scripted:
    """infer() at step t returns [t*100 + i for i in range(K)] (shape [K,1]); counts calls."""

    def __init__(self):
        self.t = 0
        self.calls: list[int] = []

    def infer(self):
        self.calls.append(self.t)
        return (self.t * 100 + np.arange(K, dtype=np.float64))[:, None]

    def run(self, executor, steps):
        out = []
        for _ in range(steps):
            out.append(float(executor.act(self.infer)[0]))
            self.t += 1
        return out


def test_open_loop_executes_n_action_steps_then_replans():
    s = Scripted()
    actions = s.run(OpenLoop(K, n_action_steps=3), 7)
    assert s.calls == [0, 3, 6]
    assert actions == [0, 1, 2, 300, 301, 302, 600]


def test_open_loop_validates_and_resets():
    with pytest.raises(ValueError, match="n_action_steps"):
        OpenLoop(K, n_action_steps=K + 1)
    s, ex = Scripted(), OpenLoop(K, 4)
    s.run(ex, 2)
    ex.reset()
    assert s.run(ex, 1) == [200]  # the queue was dropped: a fresh chunk at step 2


def test_temporal_ensemble_weights_oldest_first():
    s, coeff = Scripted(), 0.5
    actions = s.run(TemporalEnsemble(K, coeff=coeff), 3)
    assert s.calls == [0, 1, 2]
    # step 2: chunks from steps 0, 1, 2 predict 2, 101, 200 (oldest first) with weights exp(-0.5 i)
    w = np.exp(-coeff * np.arange(3))
    assert actions[2] == pytest.approx(float((w * [2, 101, 200]).sum() / w.sum()))
    assert actions[0] == 0


def test_temporal_ensemble_forgets_chunks_older_than_k():
    s, ex = Scripted(), TemporalEnsemble(K, coeff=0.0)
    actions = s.run(ex, K + 3)
    assert len(ex.chunks) == K
    t = K + 2  # chunks from steps 3..10 cover step 10: mean of (start*100 + t-start)
    assert actions[-1] == pytest.approx(np.mean([st * 100 + t - st for st in range(3, t + 1)]))


def test_rtc_without_delay_is_open_loop_with_horizon():
    s = Scripted()
    assert s.run(RealTimeChunking(K, execution_horizon=3, delay=0), 7) == [0, 1, 2, 300, 301, 302, 600]


def test_rtc_delay_skips_stale_actions_and_keeps_old_chunk_running():
    s = Scripted()
    actions = s.run(RealTimeChunking(K, execution_horizon=3, delay=2), 9)
    # request at 3 (obs of step 3), lands at 5: steps 3,4 still from chunk 0; from step 5 the new
    # chunk's row 2 (5 - 3) -- its rows 0,1 were for steps that already happened.
    assert s.calls == [0, 3, 6]
    assert actions == [0, 1, 2, 3, 4, 302, 303, 304, 602]


def test_rtc_overlap_cross_fades():
    s = Scripted()
    actions = s.run(RealTimeChunking(K, execution_horizon=4, delay=1, overlap=2), 8)
    # switch at step 5 (request 4 + delay 1): old chunk 0 says 5, 6; new chunk says 401, 402
    assert actions[:5] == [0, 1, 2, 3, 4]
    assert actions[5] == pytest.approx(5 * (2 / 3) + 401 * (1 / 3))
    assert actions[6] == pytest.approx(6 * (1 / 3) + 402 * (2 / 3))
    assert actions[7] == 403


def test_rtc_rejects_horizon_plus_delay_beyond_chunk():
    with pytest.raises(ValueError, match="exceeds chunk_length"):
        RealTimeChunking(K, execution_horizon=6, delay=3)
    with pytest.raises(ValueError, match="delay"):
        RealTimeChunking(K, execution_horizon=4, delay=None)


def test_rtc_measured_delay_from_fps():
    ex = RealTimeChunking(K, execution_horizon=4, delay=None, fps=100.0)
    ex.latencies.extend([0.025, 0.011])
    assert ex.delay == 3  # ceil(0.025 s * 100 Hz)


def test_batched_chunks_and_registry():
    ex = build_executor("temporal_ensemble", 4, coeff=0.01)
    action = ex.act(lambda: np.ones((4, 3, 2)))  # [K,B,A]
    assert action.shape == (3, 2)
    with pytest.raises(ValueError, match="not one of"):
        build_executor("nope", 4)
    with pytest.raises(ValueError, match="chunk of shape"):
        OpenLoop(4).act(lambda: np.ones((3, 2)))


def test_rtc_delay_filling_the_whole_slack_never_runs_out():
    """delay == K - execution_horizon (what a measured delay is capped at): the next request must
    go out on the very step the new chunk takes over, or the plan is indexed past its end."""
    s = Scripted()
    actions = s.run(RealTimeChunking(K, execution_horizon=4, delay=4), 16)
    assert s.calls == [0, 4, 8, 12]
    # the chunk from step c lands at c + 4 and serves its rows 4..7 (steps c+4 .. c+7)
    assert actions == [0, 1, 2, 3, 4, 5, 6, 7, 404, 405, 406, 407, 804, 805, 806, 807]


class SlowPolicy:
    """A policy that plans perfectly but thinks for ``latency`` seconds: the chunk requested at step t
    holds the actions for steps t .. t+K-1, so an executor that never sends a stale or misplaced
    action sends exactly t at step t, whenever the chunk arrived."""

    def __init__(self, latency: float):
        self.latency, self.t, self.calls = latency, 0, []

    def infer_now(self):
        t = self.t  # the observation of this step, captured now (as Policy.select_action's closure does)

        def infer():
            import time

            self.calls.append(t)
            time.sleep(self.latency)
            return np.arange(t, t + K, dtype=np.float64)[:, None]
        return infer


def control_loop(executor, policy: SlowPolicy, steps: int, period: float) -> tuple[list[float], list[float]]:
    """A control loop at ``period`` seconds a step: (actions, seconds each act() took)."""
    import time

    actions, took = [], []
    for _ in range(steps):
        tick = time.perf_counter()
        actions.append(float(executor.act(policy.infer_now())[0]))
        took.append(time.perf_counter() - tick)
        policy.t += 1
        time.sleep(max(0.0, period - (time.perf_counter() - tick)))
    return actions, took


def test_async_chunking_computes_the_next_chunk_while_the_robot_moves():
    from vidact.deploy.executors import AsyncChunking

    policy = SlowPolicy(latency=0.1)  # 3.3 control periods of 30 ms; the slack is 4
    ex = AsyncChunking(K, execution_horizon=4)
    actions, took = control_loop(ex, policy, 24, period=0.03)
    assert actions == list(range(24))  # stale rows skipped, every step's own action sent
    assert max(took[1:]) < 0.06, took  # after the first chunk act() never waits out an inference
    assert len(policy.calls) >= 4
    ex.close()  # joins a request still running, so nothing outlives the loop
    assert ex.request is None
    # the synchronous executor with the same latency blocks the loop on every request
    sync, sync_took = control_loop(RealTimeChunking(K, execution_horizon=4, delay=0), SlowPolicy(0.1), 12, 0.03)
    assert sum(t > 0.09 for t in sync_took) >= 3


def test_async_chunking_waits_only_when_the_chunk_runs_out_and_reraises_errors():
    from vidact.deploy.executors import AsyncChunking, build_executor

    policy = SlowPolicy(latency=0.12)  # longer than the 4 steps of slack (4 x 10 ms)
    ex = build_executor("async", K, execution_horizon=4, overlap=1)
    actions, _ = control_loop(ex, policy, 20, period=0.01)
    assert actions == list(range(20)) and ex.waits >= 1  # blending equal plans changes nothing
    ex.reset()
    assert ex.waits == 0 and ex.request is None

    def broken():
        raise RuntimeError("model exploded")

    ex = AsyncChunking(K, execution_horizon=2)
    ex.act(lambda: np.zeros((K, 1)))
    ex.act(lambda: np.zeros((K, 1)))
    ex.act(broken)  # requested in the background
    with pytest.raises(RuntimeError, match="model exploded"):
        for _ in range(K):
            ex.act(lambda: np.zeros((K, 1)))
