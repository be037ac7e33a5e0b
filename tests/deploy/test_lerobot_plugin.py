"""LeRobot loads a vidact bundle the way lerobot-eval does (config registry, policy class lookup,
processor pipelines from the bundle) and acts on LeRobot-shaped MetaWorld observations."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vidact.deploy.lerobot_plugin  # noqa: F401  registers "vidact" (the installed shim does the same)


def test_plugin_distribution_is_discovered_when_installed():
    try:
        importlib.metadata.distribution("lerobot_policy_vidact")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pip install --no-deps -e vidact/deploy/lerobot_plugin/package to enable lerobot-eval")
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    assert "vidact" in PreTrainedConfig.get_known_choices()


def test_lerobot_factory_loads_bundle_and_acts(metaworld_bundle):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    cfg = PreTrainedConfig.from_pretrained(str(metaworld_bundle))
    cfg.pretrained_path = str(metaworld_bundle)
    assert cfg.type == "vidact"
    policy = make_policy(cfg=cfg, env_cfg=MetaworldEnv(task="button-press-topdown-v3"))
    pre, post = make_pre_post_processors(policy_cfg=cfg, pretrained_path=str(metaworld_bundle),
                                         preprocessor_overrides={"device_processor": {"device": "cpu"},
                                                                 "rename_observations_processor": {"rename_map": {}}})
    # The bundle's weights (EMA) are what LeRobot loaded.
    from safetensors.torch import load_file
    weights = load_file(str(metaworld_bundle / "model.safetensors"))
    assert torch.equal(policy.model.action_out.weight, weights["model.action_out.weight"])

    # lerobot-eval's MetaWorld observation: 480x480 CHW float, batch of 2 envs.
    obs = {"observation.image": torch.rand(2, 3, 480, 480), "observation.state": torch.zeros(2, 4),
           "task": ["Press a button from the top"] * 2}
    policy.reset()
    action = post(policy.select_action(pre(obs)))
    assert tuple(action.shape) == (2, 4)
    low, high = (np.array(policy.info["action"]["bounds"][k]) for k in ("low", "high"))
    assert (action.numpy() >= low - 1e-6).all() and (action.numpy() <= high + 1e-6).all()
    chunk = policy.predict_action_chunk(pre(obs))
    assert tuple(chunk.shape) == (2, 4, 4)


# lerobot-eval's entry point (what the `lerobot-eval` console script runs), with one change: LeRobot
# 0.6.1's MetaworldEnv fixes every episode at 500 steps (it ignores --env.episode_length), too long
# for a test, so episodes are capped at 6 steps.
LEROBOT_EVAL_SHORT = """
import sys
import lerobot.envs.metaworld as metaworld
init = metaworld.MetaworldEnv.__init__
def short(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self._max_episode_steps = 6
metaworld.MetaworldEnv.__init__ = short
from lerobot.scripts.lerobot_eval import main
sys.argv[0] = "lerobot-eval"
sys.exit(main())
"""


def test_lerobot_eval_runs_the_bundle_in_metaworld(metaworld_bundle, tmp_path):
    """LeRobot's own evaluation (its MetaWorld env, vector env, rollout loop and metrics) with
    `--policy.path=BUNDLE`, the vidact type found through the installed plugin distribution, in
    `policy` mode with the imagined frames saved as LeRobot's predicted video."""
    try:
        importlib.metadata.distribution("lerobot_policy_vidact")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pip install --no-deps -e vidact/deploy/lerobot_plugin/package to enable lerobot-eval")
    cmd = [sys.executable, "-c", LEROBOT_EVAL_SHORT, f"--policy.path={metaworld_bundle}", "--policy.device=cpu",
           # One training episode: its state std is tiny, so held-out layouts lie beyond the default 10.
           "--policy.max_state_deviation=1000", "--policy.mode=policy", "--policy.save_predicted_video=true",
           "--env.type=metaworld", "--env.task=button-press-topdown-v3",
           "--eval.n_episodes=2", "--eval.batch_size=2", "--eval.use_async_envs=false", "--seed=1000000000",
           f"--output_dir={tmp_path / 'eval'}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Imported third-party plugin: lerobot_policy_vidact" in proc.stderr + proc.stdout
    info = json.loads((tmp_path / "eval" / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 2, info["overall"]
    # The imagined frames (policy mode) through LeRobot's world-model video hook: both envs side by side.
    from torchcodec.decoders import VideoDecoder

    (predicted,) = info["overall"]["predicted_video_paths"]
    frames = VideoDecoder(predicted)[:]
    assert frames.shape[0] >= 3 and tuple(frames.shape[1:]) == (3, 32, 64), frames.shape
