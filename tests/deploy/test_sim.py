"""`vidact eval`: closed-loop MetaWorld rollouts of an exported bundle, on held-out seeds."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from vidact.cli import main
from vidact.deploy import Policy
from vidact.deploy.sim import EVAL_SEED_BASE, MetaWorldEval, evaluate, training_seed_ranges, wilson_interval

TASK = "button-press-topdown-v3"


def test_wilson_interval_known_values():
    assert wilson_interval(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(20, 20)[1] == pytest.approx(1.0) and wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)


def test_metaworld_bundle_carries_stats_bounds_and_camera(metaworld_bundle):
    info = json.loads((metaworld_bundle / "vidact_policy.json").read_text())
    assert info["normalization"]["has_stats"] is True
    assert info["cameras"] == {"keys": ["observation.image"], "recorded_size": [[32, 32]], "model_size": [32, 32],
                               "fit": {"observation.image": "resize"}, "rendering": "vidact"}
    bounds = info["action"]["bounds"]
    assert len(bounds["low"]) == 4 and all(lo <= hi for lo, hi in zip(bounds["low"], bounds["high"]))


def test_eval_one_short_episode_policy_mode(metaworld_bundle, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", str(metaworld_bundle), "--env", "metaworld", "--task", TASK, "--episodes", "1",
               "--max-steps", "12", "--out", str(out), "--mode", "policy"])
    assert rc == 0
    assert "Wilson 95% CI" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 1 and results["mode"] == "policy"
    assert results["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE]
    assert 1 <= results["mean_episode_length"] <= 12
    lo, hi = results["wilson95"]
    assert 0 <= lo <= results["success_rate"] <= hi <= 1
    video = results["per_episode"][0]["video"]
    with av.open(video) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (64, 32)  # camera | imagined future, side by side
    # where the task's object started (the seed's layout) and where the hand ended, per episode
    rollout = MetaWorldEval(TASK, ["observation.image"], 32, 32)
    try:
        start = rollout.reset(EVAL_SEED_BASE)[4:7]
    finally:
        rollout.close()
    episode = results["per_episode"][0]
    assert episode["object_start"] == pytest.approx(start.tolist(), abs=1e-4)
    assert len(episode["hand_end"]) == 3 and all(np.isfinite(episode["hand_end"]))


def test_eval_refuses_training_seeds(metaworld_bundle, tmp_path):
    policy = Policy.from_pretrained(metaworld_bundle)
    datasets = policy.info["source"]["datasets"]
    assert training_seed_ranges(datasets) == [(0, 100_001)]
    with pytest.raises(ValueError, match="overlap the training data"):
        evaluate(policy, TASK, 1, tmp_path, seed=0, max_steps=2, dataset_paths=datasets)


def test_policy_history_is_strided_and_padded(metaworld_bundle):
    """history=2, stride 2: the model sees steps t-2 and t; before step 2 the old one is padded."""
    from vidact.deploy import ObservationChecks

    # States 0..3 are tens of training standard deviations away: the deviation check is off here.
    policy = Policy.from_pretrained(metaworld_bundle, checks=ObservationChecks(max_state_deviation=None))
    seen = []

    class Seen(Exception):
        pass

    def record(batch, mode, seed=None):
        seen.append(batch)
        raise Seen

    policy.sampler.sample = record
    for value in range(4):
        obs = {"observation.image": np.full((32, 32, 3), 10 * value, np.uint8),
               "observation.state": np.full(4, float(value)), "task": "press"}
        with pytest.raises(Seen):
            policy.predict_chunk(obs)
    assert [b.state[0, :, 0].tolist() for b in seen] == [[0, 0], [0, 1], [0, 2], [1, 3]]
    assert [b.obs_is_pad[0].tolist() for b in seen] == [[True, False], [True, False], [False, False], [False, False]]


def test_eval_with_real_time_chunking_and_delay(metaworld_bundle, tmp_path):
    out = tmp_path / "rtc"
    rc = main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "6",
               "--out", str(out), "--executor", "rtc", "--execution-horizon", "2", "--delay", "1",
               "--overlap", "1", "--videos", "0"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["executor"] == "RealTimeChunking" and "video" not in results["per_episode"][0]


def test_eval_stops_with_one_line_on_a_refused_observation(metaworld_bundle, tmp_path, capsys):
    # A deviation limit no real state meets: the first observation is refused.
    rc = main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "3",
               "--out", str(tmp_path / "refused"), "--max-state-deviation", "0.001"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"vidact eval: error: seed {EVAL_SEED_BASE}, step 1: observation "
                                      "'observation.state' dim"), err
    assert "(limit 0.001: --max-state-deviation)" in err and len(err.strip().splitlines()) == 1


def test_eval_of_a_lerobot_rendered_bundle_renders_as_lerobot_eval(metaworld_bundle, tmp_path):
    """A bundle whose data came from `vidact data metaworld --camera lerobot` is shown LeRobot's own
    480x480 env image, as under lerobot-eval, with the layout lerobot-eval draws for the seed."""
    import shutil

    from lerobot.envs.metaworld import MetaworldEnv

    bundle = tmp_path / "bundle"
    shutil.copytree(metaworld_bundle, bundle)
    info = json.loads((bundle / "vidact_policy.json").read_text())
    info["cameras"]["rendering"] = "lerobot"
    (bundle / "vidact_policy.json").write_text(json.dumps(info))
    policy = Policy.from_pretrained(bundle)
    results = evaluate(policy, TASK, 1, tmp_path / "eval", max_steps=2, videos=0)
    assert results["rendering"] == "lerobot" and results["camera_size"] == [480, 480]

    from vidact.deploy.sim import MetaWorldEval

    ours = MetaWorldEval(TASK, ["observation.image"], 480, 480, "lerobot")
    theirs = MetaworldEnv(TASK, obs_type="pixels_agent_pos")
    try:
        state = ours.reset(EVAL_SEED_BASE + 7)[:4]
        observation = theirs.reset(seed=EVAL_SEED_BASE + 7)[0]
        np.testing.assert_array_equal(state, observation["agent_pos"])
        np.testing.assert_array_equal(ours.rollout.render()[0], observation["pixels"])
    finally:
        ours.close()
        theirs.close()


def test_eval_saves_its_rollouts_as_a_lerobot_dataset(metaworld_bundle, tmp_path):
    """--save-dataset: every rollout goes into a dataset LeRobot's own class loads, with the
    generated data's features, the executed (clipped) actions and the outcome per episode."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, data = tmp_path / "eval", tmp_path / "rollouts"
    assert main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "2", "--max-steps", "6",
                 "--out", str(out), "--save-dataset", str(data), "--videos", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    ds = LeRobotDataset("vidact/rollouts", root=data)
    assert ds.num_episodes == 2 and ds.num_frames == sum(r["length"] for r in results["per_episode"])
    item = ds[ds.num_frames - 1]
    assert item["observation.image"].shape == (3, 32, 32) and item["action"].shape == (4,)
    assert item["action"].abs().max() <= 1.0 and "next.success" in item
    meta = json.loads((data / "meta" / "vidact_rollouts.json").read_text())
    assert [e["seed"] for e in meta["episodes"]] == [r["seed"] for r in results["per_episode"]]
    assert [e["success"] for e in meta["episodes"]] == [r["success"] for r in results["per_episode"]]
    assert main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "2",
                 "--out", str(out), "--save-dataset", str(data)]) == 2  # exists, no --overwrite: refused


def test_eval_on_the_training_scenes(metaworld_bundle, tmp_path, capsys):
    """--training-scenes: the scenes the demos came from (the held-out check would refuse them),
    said on stdout; misuse is a one-line error."""
    out = tmp_path / "eval"
    assert main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "2", "--max-steps", "2",
                 "--out", str(out), "--videos", "0", "--training-scenes"]) == 0
    assert "not held out" in capsys.readouterr().out
    assert [e["seed"] for e in json.loads((out / "results.json").read_text())["per_episode"]] == [0, 1]
    for extra, message in [(["--task", TASK, "--seed", "5"], "drop --seed"),
                           (["--task", "push-v3"], "with task 'push-v3'"),
                           (["--tasks", TASK, "push-v3"], "one --task")]:
        assert main(["eval", str(metaworld_bundle), *extra, "--episodes", "1", "--out", str(out),
                     "--training-scenes"]) == 2
        assert message in capsys.readouterr().err


def test_privileged_state_is_generated_and_evaluated_alike(train_metaworld_tiny, tmp_path):
    """`vidact data metaworld --state privileged`: observation.state also holds the object's and the
    goal's xyz, shifted with --position-noise by one offset per episode drawn from its seed; a bundle
    trained on it is shown the same 10 values, with the same kind of offsets, by `vidact eval`."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.metaworld import STATE_KINDS, ExpertRollout, position_offset

    noise = 0.03
    data, run, bundle = tmp_path / "data", tmp_path / "run", tmp_path / "bundle"
    assert main(["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(data),
                 "--height", "32", "--width", "32", "--state", "privileged", "--position-noise", str(noise)]) == 0
    ds = LeRobotDataset("local/privileged", root=data)
    assert ds.meta.features["observation.state"]["names"] == STATE_KINDS["privileged"]

    def true_positions(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rollout = ExpertRollout("reach-v3", ["corner2"], 32, 32, state="privileged")
        try:
            obs = rollout.reset(seed)
            return obs[4:7].astype(np.float32), np.asarray(rollout.env._target_pos, np.float32)
        finally:
            rollout.close()

    obj, goal = true_positions(0)  # the first episode's seed
    offset = position_offset(0, noise)
    assert 0 < np.abs(offset).max() < 5 * noise
    states = np.stack(ds.hf_dataset.with_format("numpy")["observation.state"])
    np.testing.assert_allclose(states[:, 7:], np.broadcast_to(goal + offset[3:], (len(states), 3)), atol=1e-5)
    np.testing.assert_allclose(states[0, 4:7], obj + offset[:3], atol=1e-5)
    assert np.abs(goal).sum() > 0.1  # the goal, not MetaWorld's zeroed partial observation

    assert train_metaworld_tiny(data, run, 1, "model.state_dim=10") == 0
    assert main(["export", str(run), str(bundle)]) == 0
    state_info = json.loads((bundle / "vidact_policy.json").read_text())["state"]
    assert state_info["metaworld"] == "privileged" and state_info["position_noise"] == noise
    out, rollouts = tmp_path / "eval", tmp_path / "rollouts"
    # One demo: the object and the goal never moved in training, so the state guard is off.
    assert main(["eval", str(bundle), "--task", "reach-v3", "--episodes", "1", "--max-steps", "2",
                 "--out", str(out), "--videos", "0", "--max-state-deviation", "1e9",
                 "--save-dataset", str(rollouts)]) == 0
    assert json.loads((out / "results.json").read_text())["episodes"] == 1
    shown = np.stack(LeRobotDataset("local/rollouts", root=rollouts).hf_dataset.with_format("numpy")["observation.state"])
    obj, goal = true_positions(EVAL_SEED_BASE)
    np.testing.assert_allclose(shown[0, 4:], np.concatenate([obj, goal]) + position_offset(EVAL_SEED_BASE, noise),
                               atol=1e-5)


def test_position_noise_needs_the_privileged_state(tmp_path, capsys):
    assert main(["data", "metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(tmp_path / "d"),
                 "--position-noise", "0.02"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--position-noise" in err and "--state agent" in err and len(err.splitlines()) == 1
