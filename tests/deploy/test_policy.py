"""vidact.deploy.Policy: light imports, LeRobot-style observations, clear errors, clipping, modes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vidact.deploy import ObservationError, Policy

HEAVY = ("lightning", "pytorch_lightning", "deepspeed", "omegaconf")


def obs(value: int = 100, state=(0.5, -0.5), task="slide the square"):
    return {"observation.image": np.full((16, 16, 1), value, np.uint8), "observation.state": np.array(state),
            "task": task}


def test_import_deploy_leaves_training_stack_unloaded(bundle):
    code = (f"import sys, vidact.deploy; p = vidact.deploy.Policy.from_pretrained({str(bundle)!r}); "
            f"import numpy as np; p.predict_chunk({{'observation.image': np.zeros((16,16,1), np.uint8), "
            f"'observation.state': np.zeros(2), 'task': 'x'}}); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"vidact.deploy loaded {out.stdout.strip()}"


def test_predict_chunk_shapes_layouts_and_determinism(bundle):
    policy = Policy.from_pretrained(bundle)
    policy.reset(seed=3)
    chunk = policy.predict_chunk(obs())
    assert chunk.actions.shape == (4, 2) and chunk.future_frames is None
    # The same frame as CHW float, and at 3x the resolution (resized to the model's 16x16).
    policy.reset(seed=3)
    chw = {**obs(), "observation.image": torch.full((1, 16, 16), 100 / 255.0)}
    assert np.allclose(policy.predict_chunk(chw).actions, chunk.actions, atol=1e-5)
    policy.reset(seed=3)
    big = {**obs(), "observation.image": np.full((48, 48, 1), 100, np.uint8)}
    assert np.allclose(policy.predict_chunk(big).actions, chunk.actions, atol=1e-4)
    # Batched observations give one chunk per sample (each with its own noise draw).
    policy.reset()
    batched = {"observation.image": np.stack([obs()["observation.image"], obs(200)["observation.image"]]),
               "observation.state": np.array([[0.5, -0.5], [1.0, 1.0]]), "task": "slide the square"}
    out = policy.predict_chunk(batched).actions
    assert out.shape == (2, 4, 2)
    assert not np.allclose(out[0], out[1])


def test_seed_counter_and_reset(bundle):
    policy = Policy.from_pretrained(bundle)
    policy.reset(seed=7)
    first, second = policy.predict_chunk(obs()).actions, policy.predict_chunk(obs()).actions
    assert not np.allclose(first, second)  # a new noise draw per chunk
    policy.reset(seed=7)  # the same episode seed replays the same noise
    assert np.allclose(policy.predict_chunk(obs()).actions, first)
    policy.reset(seed=8)
    assert not np.allclose(policy.predict_chunk(obs()).actions, first)
    # Without a seed every new episode, of this policy and of its sessions, draws its own noise.
    episodes = []
    for p in (policy, policy, policy.session(), policy.session()):
        p.reset()
        episodes.append(p.predict_chunk(obs()).actions)
    assert not any(np.allclose(a, b) for i, a in enumerate(episodes) for b in episodes[i + 1:])
    with pytest.raises(ValueError, match="episode seed must be >= 0"):
        policy.reset(seed=-1)


def test_policy_mode_returns_imagined_frames(bundle):
    policy = Policy.from_pretrained(bundle, mode="policy")
    chunk = policy.predict_chunk(obs())
    assert chunk.future_frames.shape == (1, 1, 1, 16, 16)  # [Tf,V,C,H,W]
    assert chunk.future_frames.min() >= 0 and chunk.future_frames.max() <= 1
    fast = Policy.from_pretrained(bundle)
    # Same seed, same action noise in both modes; the actions differ only through the video tokens.
    assert fast.predict_chunk(obs()).actions.shape == chunk.actions.shape


@pytest.mark.parametrize("bad, words", [
    ({"observation.state": np.zeros(2), "task": "x"}, ["observation.image", "missing"]),
    ({**obs(), "observation.image": np.zeros((16, 16, 3), np.uint8)}, ["observation.image", "uint8"]),
    ({**obs(), "observation.image": np.zeros((16,), np.uint8)}, ["observation.image", "shape"]),
    ({**obs(), "observation.state": np.zeros(3)}, ["observation.state", "[2]"]),
    ({**obs(), "observation.image": np.full((1, 16, 16), 255.0, np.float32)}, ["observation.image", "[0,1]"]),
    ({**obs(), "observation.image": "not an image"}, ["observation.image", "str"]),
])
def test_malformed_observations_name_key_and_shape(bundle, bad, words):
    policy = Policy.from_pretrained(bundle)
    with pytest.raises(ObservationError) as err:
        policy.predict_chunk(bad)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_actions_are_clipped_to_bounds(bundle):
    policy = Policy.from_pretrained(bundle)
    policy.reset(seed=0)
    raw = policy.predict_chunk(obs()).actions
    policy.action_low, policy.action_high = np.array([-0.01, -0.02], np.float32), np.array([0.01, 0.02], np.float32)
    policy.reset(seed=0)
    clipped = policy.predict_chunk(obs()).actions
    assert np.allclose(clipped, np.clip(raw, policy.action_low, policy.action_high))
    assert (np.abs(raw) > 0.02).any(), "nothing to clip: the test could not fail"


def test_select_action_open_loop_uses_n_action_steps(bundle):
    policy = Policy.from_pretrained(bundle, n_action_steps=2)
    calls = []
    original = policy._predict
    policy._predict = lambda *a, **k: calls.append(1) or original(*a, **k)
    chunk_actions = [policy.select_action(obs()) for _ in range(5)]
    assert len(calls) == 3 and chunk_actions[0].shape == (2,)


# ---------------------------------------------------------------------- refused observations (issue 16)


def with_state_stats(policy: Policy, std=(1.0, 0.1)) -> Policy:
    """The debug bundle was trained without statistics; give it some (mean 0, ``std``)."""
    policy.model.normalizer.set_stats({"state": {"mean": [0.0, 0.0], "std": list(std)},
                                       "action": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}})
    return policy


def one_pixel(value: float) -> np.ndarray:
    """A valid float image but for one pixel."""
    image = np.full((1, 16, 16), 0.5, np.float32)
    image[0, 7, 9] = value
    return image


@pytest.mark.parametrize("bad, words", [
    ({**obs(), "observation.state": np.array([np.nan, 0.0])}, ["observation.state", "NaN"]),
    ({**obs(), "observation.state": np.array([0.0, np.inf])}, ["observation.state", "dims [1]"]),
    ({**obs(), "observation.state": np.array([0.0, 5.0])}, ["dim 1 = 5", "50 standard deviations", "limit 10"]),
    ({**obs(), "observation.image": np.full((1, 16, 16), np.nan, np.float32)}, ["observation.image", "NaN"]),
    ({**obs(), "observation.image": one_pixel(np.nan)}, ["observation.image", "NaN"]),
    ({**obs(), "observation.image": one_pixel(np.inf)}, ["observation.image", "infinite"]),
    ({**obs(), "observation.image": one_pixel(-np.inf)}, ["observation.image", "infinite"]),
    ({**obs(), "observation.image": np.full((1, 16, 16), -0.5, np.float32)}, ["observation.image", "[0,1]"]),
    ({**obs(), "observation.image": np.zeros((16, 16, 1), np.int32)}, ["observation.image", "int32"]),
    ({**obs(), "observation.state": [[1.0], [1.0, 2.0]]}, ["observation.state", "numeric"]),
    ({**obs(), "task": 3}, ["task", "int"]),
])
def test_refused_observations_leave_the_episode_unchanged(bundle, bad, words):
    policy = with_state_stats(Policy.from_pretrained(bundle))
    fresh = with_state_stats(Policy.from_pretrained(bundle))
    with pytest.raises(ObservationError) as err:
        policy.check_observation(bad)
    with pytest.raises(ObservationError):
        policy.select_action(bad)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    # Nothing entered the history or advanced the seed: the next good step is the episode's first.
    assert np.array_equal(policy.predict_chunk(obs()).actions, fresh.predict_chunk(obs()).actions)


def test_state_deviation_is_measured_in_the_bundles_normalization(bundle):
    from vidact.deploy import ObservationChecks

    policy = with_state_stats(Policy.from_pretrained(bundle), std=(1.0, 0.01))
    policy.check_observation(obs(state=(5.0, 0.09)))  # 5 and 9 standard deviations: inside the default 10
    with pytest.raises(ObservationError, match="dim 0 = 11 is 11 standard deviations"):
        policy.check_observation(obs(state=(11.0, 0.0)))
    policy.checks = ObservationChecks(max_state_deviation=3)
    with pytest.raises(ObservationError, match=r"dim 1 .* \(limit 3:"):
        policy.check_observation(obs(state=(0.0, 0.05)))
    policy.checks = ObservationChecks(max_state_deviation=None)  # off; NaN is still refused
    policy.check_observation(obs(state=(1e6, 1e6)))
    with pytest.raises(ObservationError, match="NaN"):
        policy.check_observation(obs(state=(np.nan, 0.0)))
    # Quantile normalization: units of half the q01..q99 range, from its midpoint.
    policy.checks = ObservationChecks()
    policy.model.normalizer.mode = "quantile"
    policy.model.normalizer.set_stats({"state": {"q01": [-1.0, 0.0], "q99": [1.0, 2.0]},
                                       "action": {"q01": [-1.0, -1.0], "q99": [1.0, 1.0]}})
    policy.check_observation(obs(state=(9.0, 1.0)))
    with pytest.raises(ObservationError, match="dim 1 = 12 is 11 half q01..q99 ranges"):
        policy.check_observation(obs(state=(0.0, 12.0)))
    # A bundle trained without statistics has nothing to measure against: only finiteness.
    Policy.from_pretrained(bundle).check_observation(obs(state=(1e6, -1e6)))


def test_observation_age_limit(bundle):
    import time

    from vidact.deploy import ObservationChecks

    policy = Policy.from_pretrained(bundle, checks=ObservationChecks(max_age_s=0.5))
    policy.check_observation({**obs(), "capture_time": time.time() - 0.1})
    for observation, words in [(obs(), "no 'capture_time'"), ({**obs(), "capture_time": time.time() - 3}, "3 s old"),
                               ({**obs(), "capture_time": time.time() + 3}, "in the future"),
                               ({**obs(), "capture_time": "now"}, "seconds since the epoch")]:
        with pytest.raises(ObservationError, match=words):
            policy.check_observation(observation)
    Policy.from_pretrained(bundle).check_observation({**obs(), "capture_time": 0.0})  # no limit: not read
    with pytest.raises(ValueError, match="max_age_s must be > 0"):
        ObservationChecks(max_age_s=0)


def test_non_finite_actions_are_never_returned(bundle):
    from vidact.deploy import UnsafeActionError

    policy = Policy.from_pretrained(bundle)
    with torch.no_grad():
        policy.model.action_out.bias.fill_(float("nan"))
    with pytest.raises(UnsafeActionError, match="NaN or infinite actions"):
        policy.predict_chunk(obs())
    with pytest.raises(UnsafeActionError):
        policy.select_action(obs())


def test_sessions_keep_their_own_episode(bundle):
    policy = Policy.from_pretrained(bundle, n_action_steps=2)
    policy.reset(seed=4)
    first = policy.predict_chunk(obs()).actions
    session = policy.session()
    assert session.model is policy.model and session.executor is not policy.executor
    assert not np.allclose(session.predict_chunk(obs()).actions, first)  # a new episode: its own noise
    session.reset(seed=4)
    assert np.array_equal(session.predict_chunk(obs()).actions, first)  # its own seed counter, from 0
    session.select_action(obs())
    assert len(session.executor.queue) == 1 and len(policy.executor.queue) == 0
    assert not np.allclose(policy.predict_chunk(obs()).actions, first)  # the original's episode went on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", ["policy_fast", "policy"])
def test_cuda_graphs_give_the_eager_policys_actions(bundle, mode):
    graphed = Policy.from_pretrained(bundle, mode=mode, device="cuda")
    eager = Policy.from_pretrained(bundle, mode=mode, device="cuda", cuda_graphs=False)
    for seed in (3, 4):  # the second chunk replays the graph the first one captured, on a new observation
        o = obs(value=50 + 40 * seed)
        a, b = graphed.predict_chunk(o, seed=seed).actions, eager.predict_chunk(o, seed=seed).actions
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(graphed._graphs) == 1


def test_compiled_backbone_gives_the_eager_policys_chunks(bundle):
    """Policy(compiled=True): the same chunks (actions and imagined frames) as the eager network."""
    compiled = Policy.from_pretrained(bundle, mode="policy", compiled=True)
    eager = Policy.from_pretrained(bundle, mode="policy")
    for seed in (3, 4):  # the second chunk reuses the first one's compiled graph
        o = obs(value=50 + 40 * seed)
        a, b = compiled.predict_chunk(o, seed=seed), eager.predict_chunk(o, seed=seed)
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-4)
        np.testing.assert_allclose(a.future_frames, b.future_frames, atol=1e-4)


@pytest.fixture(scope="module")
def frame_local_policy(metaworld_bundle, train_metaworld_tiny, tmp_path_factory):
    """A tiny frame-local model on MetaWorld data (two history frames two steps apart), its weights
    perturbed so that every part of the network shapes the chunk."""
    from vidact.cli import main

    root = tmp_path_factory.mktemp("frame_local")
    assert train_metaworld_tiny(metaworld_bundle.parent / "data", root / "run", 2,
                                "model.prefix_attention=frame_local") == 0
    assert main(["export", str(root / "run"), str(root / "bundle")]) == 0
    from vidact.deploy.policy import ObservationChecks

    # One training episode: the state guard would refuse any other arm position.
    policy = Policy.from_pretrained(root / "bundle", mode="policy", checks=ObservationChecks(max_state_deviation=None))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return policy


def arm(step: int, task: str = "press the button") -> dict:
    rng = np.random.default_rng(step)
    return {"observation.image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
            "observation.state": np.array([0.1 * step, 0.6, 0.2, 0.5]), "task": task}


def test_streaming_reuses_each_frame_and_gives_the_recomputed_chunks(frame_local_policy):
    """A frame-local prefix: each step's keys/values are computed once, when it arrives, and the
    chunks are those of recomputing the whole prefix every chunk."""
    streaming = frame_local_policy
    full = Policy(streaming.model, streaming.sampler.config, streaming.info, mode="policy", streaming=False,
                  checks=streaming.checks)
    assert streaming.streaming and not full.streaming
    calls = []
    cache_frame = streaming.model.cache_frame
    streaming.model.cache_frame = lambda *a: calls.append(1) or cache_frame(*a)
    try:
        for policy in (streaming, full):
            policy.reset(seed=5)
        for step in range(6):  # the first chunks read padded history (the first frame, masked)
            a, b = streaming.predict_chunk(arm(step)), full.predict_chunk(arm(step))
            np.testing.assert_allclose(a.actions, b.actions, atol=1e-4)
            np.testing.assert_allclose(a.future_frames, b.future_frames, atol=1e-4)
        assert len(calls) == 6  # one per step, not one per slot and chunk (12)
        # A new instruction: the steps' keys/values read it, so those in the history are computed again.
        o = arm(6, task="open the drawer")
        np.testing.assert_allclose(streaming.predict_chunk(o).actions, full.predict_chunk(o).actions, atol=1e-4)
        assert len(calls) == 6 + 2
    finally:
        del streaming.model.cache_frame
