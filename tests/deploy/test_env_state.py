"""The auxiliary scene-state head: `vidact data metaworld --env-state` writes LeRobot's
observation.environment_state, `model.env_state_dim` trains a head to read it from the frames, and
the exported policy acts without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidact.cli import main


@pytest.fixture(scope="module")
def env_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("env_state") / "data"
    assert main(["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(data),
                 "--height", "32", "--width", "32", "--env-state"]) == 0
    return data


def test_env_state_is_the_object_and_the_goal(env_data):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.info import ENV_STATE_KEY
    from vidact.data.metaworld import ENV_STATE_NAMES, STATE_NAMES, ExpertRollout

    ds = LeRobotDataset("local/env_state", root=env_data)
    assert ds.meta.features[ENV_STATE_KEY]["names"] == ENV_STATE_NAMES
    assert ds.meta.features["observation.state"]["names"] == STATE_NAMES  # the policy's input is unchanged
    rollout = ExpertRollout("reach-v3", ["corner2"], 32, 32, env_state=True)
    try:
        obs = rollout.reset(0)  # the first episode's seed
        goal = np.asarray(rollout.env._target_pos, np.float32)
    finally:
        rollout.close()
    env = np.stack(ds.hf_dataset.with_format("numpy")[ENV_STATE_KEY])
    np.testing.assert_allclose(env[0, :3], obs[4:7], atol=1e-5)  # the object at the start
    np.testing.assert_allclose(env[:, 3:], np.broadcast_to(goal, (len(env), 3)), atol=1e-5)
    assert np.abs(goal).sum() > 0.1


def test_the_head_trains_the_frames_and_only_when_asked(env_data):
    """With only the scene-state loss on, the gradient reaches the observed frames' projection;
    with its weight 0 the loss is the other terms' alone."""
    from vidact.data.robot import RobotDataset
    from vidact.generative.loss import training_loss
    from vidact.generative.schedule import GenerativeConfig
    from vidact.models import VidAct, VidActConfig
    from vidact.tokenizers.config import FrameTokenizerConfig
    from vidact.types import Batch

    cfg = VidActConfig(height=32, width=32, history=2, future_frame_stride=2, chunk_length=4, env_state_dim=6,
                       frame_tokenizer=FrameTokenizerConfig(patch_size=8))
    ds = RobotDataset(env_data, cfg)
    batch = Batch.collate([ds[i] for i in range(0, len(ds), max(1, len(ds) // 4))][:4])
    assert batch.env_state.shape == (4, 6) and torch.isfinite(batch.env_state).all()
    torch.manual_seed(0)
    model = VidAct(cfg)
    only_env = GenerativeConfig(video_loss_weight=0.0, action_loss_weight=0.0, env_state_weight=1.0)
    out = training_loss(model, batch, only_env, torch.Generator().manual_seed(0))
    assert out.loss.item() > 0 and torch.allclose(out.loss.detach(), out.env_state_loss)
    out.loss.backward()
    assert model.obs_proj.weight.grad.abs().sum() > 0
    model.zero_grad()
    off = GenerativeConfig(video_loss_weight=0.0, action_loss_weight=0.0, env_state_weight=0.0)
    assert float(training_loss(model, batch, off, torch.Generator().manual_seed(0)).loss) == 0.0
    # A sample without a scene state (web video in a mixture: NaN) is left out of the loss.
    nan = batch.env_state.clone()
    nan[1:] = float("nan")
    one = training_loss(model, Batch(**{**batch.__dict__, "env_state": nan}), only_env,
                        torch.Generator().manual_seed(0))
    assert torch.isfinite(one.loss)


def test_read_from_the_encoder_the_head_trains_the_encoder_alone(env_data):
    """env_state_source=encoder: the head reads the observation encoder's tokens of the newest
    frame, so its gradient reaches the encoder and nothing that has seen the robot's state."""
    from vidact.data.robot import RobotDataset
    from vidact.generative.loss import training_loss
    from vidact.generative.schedule import GenerativeConfig
    from vidact.models import VidAct, VidActConfig
    from vidact.tokenizers.config import FrameTokenizerConfig, ObsEncoderConfig
    from vidact.types import Batch

    cfg = VidActConfig(height=32, width=32, history=2, future_frame_stride=2, chunk_length=4, env_state_dim=6,
                       frame_tokenizer=FrameTokenizerConfig(patch_size=8), env_state_source="encoder",
                       obs_encoder=ObsEncoderConfig(kind="vit", patch_size=8, layers=1, width=32))
    ds = RobotDataset(env_data, cfg)
    batch = Batch.collate([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = VidAct(cfg)
    only_env = GenerativeConfig(video_loss_weight=0.0, action_loss_weight=0.0, env_state_weight=1.0)
    training_loss(model, batch, only_env, torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.obs_encoder.layers.parameters())
    untouched = [model.state_proj, model.obs_proj, model.backbone]
    assert all(p.grad is None or not p.grad.any() for m in untouched for p in m.parameters())
    with pytest.raises(ValueError, match="env_state_source=encoder needs a trainable observation encoder"):
        VidActConfig(env_state_dim=6, env_state_source="encoder")


def test_the_heads_reading_reaches_the_policy_with_env_state_input(env_data):
    """env_state_input: the head's reading of each observed frame enters its step's state token;
    the actions depend on it, the action loss trains the input layer and not the head."""
    from vidact.data.robot import RobotDataset
    from vidact.generative.loss import training_loss
    from vidact.generative.schedule import GenerativeConfig
    from vidact.models import VidAct, VidActConfig
    from vidact.tokenizers.config import FrameTokenizerConfig, ObsEncoderConfig
    from vidact.types import Batch

    cfg = VidActConfig(height=32, width=32, history=2, future_frame_stride=2, chunk_length=4, env_state_dim=6,
                       frame_tokenizer=FrameTokenizerConfig(patch_size=8), env_state_source="encoder",
                       env_state_input=True, obs_encoder=ObsEncoderConfig(kind="vit", patch_size=8, layers=1, width=32))
    batch = Batch.collate([RobotDataset(env_data, cfg)[i] for i in range(4)])
    torch.manual_seed(0)
    model = VidAct(cfg)
    only_actions = GenerativeConfig(video_loss_weight=0.0, action_loss_weight=1.0, env_state_weight=0.0)
    for _ in range(3):  # zero-initialised layers (adaLN gates, the input) pass gradient from the 3rd step on
        model.zero_grad()
        training_loss(model, batch, only_actions, torch.Generator().manual_seed(0)).loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(0.1 * p.grad.sign())
    assert model.env_state_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in model.env_state_head.parameters())
    model.eval()
    with torch.no_grad():
        prefix = model.embed_prefix(batch)
        model.env_state_head.proj.bias.add_(1.0)  # the head reads another scene
        assert not torch.allclose(prefix.tokens, model.embed_prefix(batch).tokens)
    with pytest.raises(ValueError, match="env_state_input=true .* model.env_state_source=encoder"):
        VidActConfig(env_state_dim=6, env_state_input=True)


@pytest.mark.parametrize("overrides", [(), ("model.obs_encoder.kind=vit", "model.obs_encoder.patch_size=8",
                                            "model.obs_encoder.layers=1", "model.env_state_source=encoder"),
                                       ("model.obs_encoder.kind=vit", "model.obs_encoder.patch_size=8",
                                        "model.obs_encoder.layers=1", "model.env_state_source=encoder",
                                        "model.env_state_input=true")],
                         ids=["backbone", "encoder", "encoder_input"])
def test_trained_with_the_head_the_policy_acts_without_it(env_data, train_metaworld_tiny, tmp_path, overrides):
    run, bundle, out = tmp_path / "run", tmp_path / "bundle", tmp_path / "eval"
    assert train_metaworld_tiny(env_data, run, 2, "model.env_state_dim=6", *overrides) == 0
    assert main(["export", str(run), str(bundle)]) == 0
    assert json.loads((bundle / "config.json").read_text())["vidact"]["env_state_dim"] == 6
    assert main(["eval", str(bundle), "--task", "reach-v3", "--episodes", "1", "--max-steps", "2",
                 "--out", str(out), "--videos", "0", "--max-state-deviation", "1e9"]) == 0
    assert json.loads((out / "results.json").read_text())["episodes"] == 1


def test_a_dataset_without_the_target_is_refused(metaworld_bundle, train_metaworld_tiny, tmp_path, capsys):
    assert train_metaworld_tiny(metaworld_bundle.parent / "data", tmp_path / "run", 1, "model.env_state_dim=6") == 2
    err = capsys.readouterr().err
    assert "observation.environment_state" in err and "--env-state" in err and "Traceback" not in err


@pytest.mark.parametrize("task", ["push-v3", "drawer-open-v3"])
def test_an_episodes_first_frame_shows_its_own_goal(task):
    """MetaWorld moves the goal marker (push) and the objects placed through the model (the
    drawer's body) at reset, but the rendered ones only at the next physics step: the first frame
    (data and evaluation) must show this episode's scene, not the last one's."""
    import mujoco

    from vidact.data.metaworld import ExpertRollout

    rollout = ExpertRollout(task, ["corner2"], 64, 64)
    try:
        rollout.reset(0)
        rollout.reset(1)  # a second episode: its goal and objects are elsewhere
        first = rollout.render()[0]
        mujoco.mj_forward(rollout.env.model, rollout.env.data)
        assert np.array_equal(first, rollout.render()[0])
        if task == "push-v3":
            rollout.env.step(np.zeros(4, np.float32))
            site = mujoco.mj_name2id(rollout.env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            np.testing.assert_allclose(rollout.env.data.site_xpos[site], rollout.env._target_pos, atol=1e-6)
    finally:
        rollout.close()


READER = ["model.obs_encoder.kind=vit", "model.obs_encoder.patch_size=8", "model.obs_encoder.layers=1",
          "model.obs_encoder.width=32", "model.env_state_dim=6", "model.env_state_source=encoder"]


def test_the_scene_encoder_is_pretrained_alone_and_a_policy_starts_from_it(env_data, mw_model, tmp_path, capsys):
    """`vidact scene-encoder` trains the encoder and its head and nothing else; the weights load by
    name into the policy (`train.init_from`), which then reads the scene as the reader did."""
    from vidact.config import load
    from vidact.lit.init import init_weights
    from vidact.models import VidAct
    from vidact.scene_encoder import SceneReader, load_frames

    out = tmp_path / "reader"
    overrides = [*mw_model, *READER]
    assert main(["scene-encoder", "debug_sliding_square", *overrides, "--dataset", str(env_data), str(env_data),
                 "--heldout", str(env_data), "--steps", "30", "--batch-size", "8", "--lr", "3e-3", "--eval-every", "10",
                 "--out", str(out)]) == 0
    report = json.loads((out / "scene_encoder.json").read_text())
    printed = capsys.readouterr().out
    assert "(2 episodes, 1 view(s))" in printed  # both datasets' frames (here the same episode twice)
    losses = [float(line.split("loss ")[1].split()[0]) for line in printed.splitlines()
              if line.startswith("vidact scene-encoder: step")]
    assert losses[-1] < losses[0]  # it learns (one episode: its own frames)
    errors = report["heldout_first_frames"]["Reach a goal position"]
    assert errors["frames"] == 1 and len(errors["error_cm"]) == 6
    assert [point["step"] for point in report["curve"]] == [10, 20]  # the readings' curve, the end apart
    assert sorted(p.name for p in out.glob("step_*")) == ["step_10", "step_20"]  # the readers kept at those steps
    # Scored again without training, over every 5th frame too: the first frames' errors repeat.
    assert main(["scene-encoder", "debug_sliding_square", *overrides, "--heldout", str(env_data), "--heldout-every",
                 "5", "--score-only", "--out", str(out)]) == 0
    score = json.loads((out / "scene_encoder_score.json").read_text())
    assert score["heldout_first_frames"] == report["heldout_first_frames"]
    assert score["heldout_every_5th_frame"]["Reach a goal position"]["frames"] > 1
    running = score["heldout_every_5th_frame_goal_running_mean"]["Reach a goal position"]
    assert running["frames"] == score["heldout_every_5th_frame"]["Reach a goal position"]["frames"]
    assert running["goal_error_cm"] == score["heldout_every_5th_frame"]["Reach a goal position"]["error_cm"][3:]

    cfg = load("debug_sliding_square", [*overrides, "data.kind=lerobot",
                                        f"data.sources=[{{kind: lerobot, path: '{env_data}'}}]"])
    policy = VidAct(cfg.model)
    loaded = init_weights(policy, out / "step_10")
    assert not loaded.skipped and sorted(loaded.loaded) == sorted(SceneReader(cfg.model).state_dict())
    loaded = init_weights(policy, out)
    assert not loaded.skipped and sorted(loaded.loaded) == sorted(SceneReader(cfg.model).state_dict())
    assert all(n.startswith(("obs_encoder.", "env_state_head.")) for n in loaded.loaded)
    reader = SceneReader(cfg.model)
    reader.load_state_dict({k: v for k, v in policy.state_dict().items() if k in reader.state_dict()})
    frames = load_frames(str(env_data), cfg.model, 5)["frames"][:3].float() / 255  # [3,V,C,H,W]
    with torch.no_grad():
        from_policy = policy.env_state_head(policy.encode_obs(frames[:, None])[:, -1].flatten(1, 2))
        torch.testing.assert_close(from_policy, reader.eval()(frames))


def test_the_goal_read_as_a_running_mean_over_the_episode():
    """Readings 2 cm off the goal, alternately on either side: one frame is 2 cm off; the mean of the
    readings so far is 2, 0, 0.67, 0 cm off at the episode's four frames, each episode afresh."""
    from vidact.scene_encoder import running_goal_errors

    goal = np.array([0.1, 0.2, 0.3])
    readings = np.stack([np.r_[0.0, 0.0, 0.0, goal + 0.02 * (-1) ** t] for t in range(4)] * 2)
    data = {"target": torch.tensor(np.tile(np.r_[0.0, 0.0, 0.0, goal], (8, 1))), "task": np.array(["reach"] * 8),
            "episode": np.repeat([0, 1], 4)}
    row = running_goal_errors(readings, data)["reach"]
    assert row["frames"] == 8 and row["goal_error_cm"] == [2.0, 2.0, 2.0]
    assert row["goal_running_mean_error_cm"] == [0.67, 0.67, 0.67]  # (2 + 0 + 2/3 + 0) / 4 in each episode


def test_the_scene_encoder_needs_an_encoder_with_its_head(env_data, mw_model, tmp_path, capsys):
    args = ["scene-encoder", "debug_sliding_square", *mw_model, "--dataset", str(env_data), "--out", str(tmp_path)]
    assert main([*args, "model.obs_encoder.kind=vit", "model.obs_encoder.patch_size=8"]) == 2
    err = capsys.readouterr().err
    assert "model.env_state_dim" in err and "env_state_source=encoder" in err and "Traceback" not in err
    assert main([*args, *READER, "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "model.safetensors").exists()


def test_the_scene_state_head_tells_the_views_apart():
    """With two cameras the head reads each view's tokens on their own (an object's place in one
    picture and in the other is what locates it in 3-D), so swapping the views changes the reading;
    with one it has the shapes it always had."""
    from vidact.models.vidact import EnvStateHead

    torch.manual_seed(0)
    one = EnvStateHead(16, 6)
    assert {k: tuple(v.shape) for k, v in one.state_dict().items() if k.startswith(("norm", "proj"))} == {
        "norm.weight": (16,), "norm.bias": (16,), "proj.weight": (6, 16), "proj.bias": (6,)}
    two = EnvStateHead(16, 6, views=2)
    tokens = torch.randn(3, 2 * 5, 16)  # [B, V*n, D], view-major
    swapped = torch.cat([tokens[:, 5:], tokens[:, :5]], 1)
    assert not torch.allclose(two(tokens), two(swapped))
    assert torch.allclose(one(tokens), one(swapped))  # one view: a mean over all tokens, order-free
