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
    chunk = policy.predict_chunk(obs())
    assert chunk.actions.shape == (4, 2) and chunk.future_frames is None
    # The same frame as CHW float, and at 3x the resolution (resized to the model's 16x16).
    policy.reset()
    chw = {**obs(), "observation.image": torch.full((1, 16, 16), 100 / 255.0)}
    assert np.allclose(policy.predict_chunk(chw).actions, chunk.actions, atol=1e-5)
    policy.reset()
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
    first, second = policy.predict_chunk(obs()).actions, policy.predict_chunk(obs()).actions
    assert not np.allclose(first, second)  # a new noise draw per chunk
    policy.reset()
    assert np.allclose(policy.predict_chunk(obs()).actions, first)


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
    raw = policy.predict_chunk(obs()).actions
    policy.action_low, policy.action_high = np.array([-0.01, -0.02], np.float32), np.array([0.01, 0.02], np.float32)
    policy.reset()
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
