"""`vidact drive`: a bundle driving a LeRobot `Robot` (the simulated metaworld_sim here; real robot
types are built through LeRobot's config registry and fail clearly without hardware)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from vidact.cli import main
from vidact.deploy.drive import DriveError, ObservationMap, action_keys, make_robot, robot_config

TASK = "button-press-topdown-v3"
ENV = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidact.cli", "drive", *args], capture_output=True, text=True,
                          env=ENV, timeout=120)


def test_drive_metaworld_sim_through_the_cli(metaworld_bundle, tmp_path):
    video, summary_path = tmp_path / "drive.mp4", tmp_path / "summary.json"
    out = run_cli(str(metaworld_bundle), "--robot.type=metaworld_sim", f"--robot.task={TASK}", "--steps", "30",
                  "--fps", "20", "--record", str(video), "--json", str(summary_path), "--threads", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    # The mapping is printed before the robot moves; the summary at the end.
    assert "observation.image <- corner2" in out.stdout
    assert "observation.state <- [hand_x, hand_y, hand_z, gripper]" in out.stdout
    assert "metaworld_sim: 30 steps in" in out.stdout and "Hz of 20 Hz target" in out.stdout
    assert "latency mean" in out.stdout and f"{TASK}: success" in out.stdout
    s = json.loads(summary_path.read_text())
    assert s["steps"] == 30 and s["target_hz"] == 20 and not s["interrupted"]
    assert 0 < s["achieved_hz"] <= 20 * 1.05  # never faster than the target
    assert 0 <= s["late_steps"] <= 30 and s["chunks"] >= 30 // 4  # K=4, open loop executes n_action_steps <= 4
    assert s["chunk_latency_max_s"] >= s["chunk_latency_mean_s"] > 0
    assert isinstance(s["success"], bool) and s["actions"] == ["delta_x", "delta_y", "delta_z", "gripper"]
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 30 and frames[0].shape == (32, 32, 3)  # the bundle's recorded camera size
    assert frames[0].std() > 0  # a rendered scene, not a blank frame


def test_drive_async_executor_through_the_cli(metaworld_bundle, tmp_path):
    """--executor async: chunks computed in a background thread while the simulated arm moves."""
    summary_path = tmp_path / "summary.json"
    out = run_cli(str(metaworld_bundle), "--robot.type=metaworld_sim", f"--robot.task={TASK}", "--steps", "24",
                  "--fps", "20", "--executor", "async", "--execution-horizon", "2", "--overlap", "1",
                  "--json", str(summary_path), "--threads", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "AsyncChunking" in out.stdout and "waited for a chunk" in out.stdout
    s = json.loads(summary_path.read_text())
    assert s["steps"] == 24 and s["executor"] == "AsyncChunking" and s["executor_waits"] >= 0
    # the first chunk, then at least one computed in the background and switched in (how many more
    # depends on the machine's load: a request goes out 2 steps after the last one took over)
    assert s["chunks"] >= 2 and s["chunk_latency_max_s"] >= s["chunk_latency_mean_s"] > 0


def test_metaworld_sim_is_a_lerobot_robot():
    from lerobot.robots import Robot, RobotConfig, make_robot_from_config

    from vidact.deploy.sim_robot import MetaWorldSim, MetaWorldSimConfig

    config = robot_config(["--robot.type=metaworld_sim", f"--robot.task={TASK}", "--robot.height=24",
                           "--robot.width=40", "--robot.seed=7"])
    assert isinstance(config, MetaWorldSimConfig) and isinstance(config, RobotConfig)
    assert (config.type, config.height, config.width, config.seed) == ("metaworld_sim", 24, 40, 7)
    robot = make_robot_from_config(config)  # LeRobot's own factory finds the class
    assert isinstance(robot, MetaWorldSim) and isinstance(robot, Robot)
    assert robot.observation_features == {"hand_x": float, "hand_y": float, "hand_z": float, "gripper": float,
                                          "corner2": (24, 40, 3)}
    assert robot.action_features == {"delta_x": float, "delta_y": float, "delta_z": float, "gripper": float}
    assert not robot.is_connected and robot.is_calibrated
    with pytest.raises(RuntimeError, match="not connected"):
        robot.get_observation()
    with robot:  # Robot.__enter__ / __exit__ connect and disconnect
        assert robot.is_connected
        obs = robot.get_observation()
        assert set(obs) == set(robot.observation_features)
        assert obs["corner2"].shape == (24, 40, 3) and obs["corner2"].dtype == np.uint8
        assert all(isinstance(obs[k], float) for k in ("hand_x", "hand_y", "hand_z", "gripper"))
        sent = robot.send_action({"delta_x": 3.0, "delta_y": -3.0, "delta_z": 0.5, "gripper": 0.0})
        assert sent == {"delta_x": 1.0, "delta_y": -1.0, "delta_z": 0.5, "gripper": 0.0}  # clipped to [-1, 1]
        assert robot.get_observation()["hand_x"] != obs["hand_x"]  # the arm moved
        with pytest.raises(KeyError, match="gripper"):
            robot.send_action({"delta_x": 0.0, "delta_y": 0.0, "delta_z": 0.0})
    assert not robot.is_connected


class _Policy:  # what ObservationMap reads from a Policy
    def __init__(self, camera_keys, state_dim=4, action_dim=4):
        from types import SimpleNamespace

        self.camera_keys, self.state_key = camera_keys, "observation.state"
        self.config = SimpleNamespace(state_dim=state_dim, action_dim=action_dim)


FEATURES = {"hand_x": float, "hand_y": float, "hand_z": float, "gripper": float, "corner2": (32, 32, 3)}


def test_observation_mapping_is_explicit_and_mismatches_name_the_key():
    m = ObservationMap.build(_Policy(["observation.image"]), FEATURES, "press")
    assert m.cameras == {"observation.image": "corner2"} and m.state == ["hand_x", "hand_y", "hand_z", "gripper"]
    obs = {"hand_x": 1.0, "hand_y": 2.0, "hand_z": 3.0, "gripper": 4.0, "corner2": np.zeros((32, 32, 3), np.uint8)}
    out = m(obs)
    assert out["observation.state"].tolist() == [1, 2, 3, 4] and out["task"] == "press"
    assert out["observation.image"].shape == (32, 32, 3)
    # A key the robot's features promised but its observation lacks.
    with pytest.raises(DriveError, match=r"missing \['hand_z'\]"):
        m({k: v for k, v in obs.items() if k != "hand_z"})
    # Policy cameras by name: observation.images.wrist needs a robot camera 'wrist'.
    with pytest.raises(DriveError, match=r"policy camera 'observation.images.wrist'.*--camera"):
        ObservationMap.build(_Policy(["observation.images.top", "observation.images.wrist"]),
                             {**FEATURES, "top": (8, 8, 3)}, "")
    m = ObservationMap.build(_Policy(["observation.images.top", "observation.images.wrist"]),
                             {**FEATURES, "top": (8, 8, 3)}, "", camera_map={"observation.images.wrist": "corner2"})
    assert m.cameras == {"observation.images.top": "top", "observation.images.wrist": "corner2"}
    with pytest.raises(DriveError, match="no camera 'front'"):
        ObservationMap.build(_Policy(["observation.image"]), FEATURES, "", camera_map={"observation.image": "front"})
    with pytest.raises(DriveError, match="6 dims but the robot has 4 scalar"):
        ObservationMap.build(_Policy(["observation.image"], state_dim=6), FEATURES, "")
    with pytest.raises(DriveError, match=r"--state-keys \['elbow'\]"):
        ObservationMap.build(_Policy(["observation.image"], state_dim=2), FEATURES, "", state_keys=["hand_x", "elbow"])
    with pytest.raises(DriveError, match="policy actions have 6 dims but the robot takes 4"):
        action_keys(_Policy([], action_dim=6), {"a": float, "b": float, "c": float, "d": float})


def test_real_robot_config_builds_and_a_missing_port_is_a_clear_error(metaworld_bundle):
    config = robot_config(["--robot.type=so100_follower", "--robot.port=/dev/ttyUSB0", "--robot.id=arm"])
    assert (config.type, config.port, config.id) == ("so100_follower", "/dev/ttyUSB0", "arm")
    with pytest.raises(DriveError, match="port /nonexistent does not exist"):
        make_robot(robot_config(["--robot.type=so100_follower", "--robot.port=/nonexistent"]))
    # A port that exists but is no robot: without the Feetech SDK (not installed here) the message
    # names the missing package; with it, connecting fails with a message.
    import importlib.util

    from vidact.deploy.drive import connect

    devnull = robot_config(["--robot.type=so100_follower", "--robot.port=/dev/null"])
    if importlib.util.find_spec("scservo_sdk") is None:
        with pytest.raises(DriveError, match="needs .*(scservo_sdk|feetech-servo-sdk)"):
            make_robot(devnull)
    else:
        with pytest.raises(DriveError, match="could not connect"):
            connect(make_robot(devnull))
    with pytest.raises(DriveError, match="unknown robot type 'nope'"):
        robot_config(["--robot.type=nope"])
    with pytest.raises(DriveError, match=r"unknown option\(s\) \['--robot.bogus'\]"):
        robot_config(["--robot.type=metaworld_sim", "--robot.bogus=1"])
    with pytest.raises(DriveError, match="Missing required field.*port"):
        robot_config(["--robot.type=so100_follower"])
    assert main(["drive", str(metaworld_bundle), "--steps", "1"]) == 2  # no --robot.type: a message
    # Through the CLI's entry point in a fresh process: one line on stderr, no traceback; and the
    # drive path (plus the sim robot) leaves the training stack unloaded.
    code = ("import sys; from vidact.cli import main; "
            f"rc = main(['drive', {str(metaworld_bundle)!r}, '--robot.type=so100_follower', "
            "'--robot.port=/nonexistent', '--steps', '1']); import vidact.deploy.sim_robot; "
            "print('heavy:' + ','.join(m for m in ('lightning', 'pytorch_lightning', 'deepspeed', 'omegaconf') "
            "if m in sys.modules)); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "vidact drive: error: so100_follower: port /nonexistent does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.strip().endswith("heavy:")


def test_ctrl_c_stops_disconnects_and_still_writes_the_summary(metaworld_bundle, tmp_path):
    import signal
    import time

    video = tmp_path / "interrupted.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vidact.cli", "drive", str(metaworld_bundle),
                             "--robot.type=metaworld_sim", "--seconds", "60", "--fps", "20", "--threads", "1",
                             "--record", str(video)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV,
                            # A shell's background job (CI run with `&`) inherits SIGINT ignored, and
                            # Python then installs no KeyboardInterrupt handler: give the child a terminal's.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = ""
        while "vidact drive: metaworld_sim at" not in line:  # connected, the loop is starting
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "(interrupted)" in stdout and "Traceback" not in stderr and "disconnect failed" not in stdout
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 1


# ---------------------------------------------------------------------- refused observations (issue 16)


class ScriptedRobot:
    """A LeRobot-shaped robot (16x16 grey camera 'cam', state 'x', 'y') whose state at step i is
    ``states[i]``; it records every action it is sent."""

    name = "scripted"

    def __init__(self, states, read_delay_s: float = 0.0):
        self.states, self.read_delay_s = list(states), read_delay_s
        self.observation_features = {"x": float, "y": float, "cam": (16, 16, 1)}
        self.action_features = {"ax": float, "ay": float}
        self.reads, self.sent = 0, []

    def get_observation(self):
        import time

        time.sleep(self.read_delay_s)
        x, y = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return {"x": x, "y": y, "cam": np.full((16, 16, 1), 100, np.uint8)}

    def send_action(self, action):
        self.sent.append((self.reads - 1, action))
        return action


def drive_scripted(bundle, states, max_bad=0, read_delay_s=0.0, checks=None):
    from vidact.deploy.drive import drive
    from vidact.deploy.policy import Policy

    policy = Policy.from_pretrained(bundle, checks=checks)
    robot = ScriptedRobot(states, read_delay_s)
    obs_map = ObservationMap.build(policy, robot.observation_features, "move left")
    summary = drive(policy, robot, obs_map, ["ax", "ay"], fps=200, steps=len(states), log_every=0,
                    max_bad_observations=max_bad)
    return robot, summary


NAN = (float("nan"), 0.0)


def test_a_refused_observation_stops_before_anything_is_sent(bundle):
    robot, s = drive_scripted(bundle, [(0.5, 0.5)] * 3 + [NAN] + [(0.5, 0.5)] * 3)
    assert [step for step, _ in robot.sent] == [0, 1, 2]  # nothing from the NaN step on
    assert robot.reads == 4 and s["steps"] == 3 and s["refused_observations"] == 1 and s["held_steps"] == 0
    assert s["stopped"].startswith("observation refused at step 3:") and "NaN" in s["stopped"]
    assert all(np.isfinite(list(a.values())).all() for _, a in robot.sent)


def test_max_bad_observations_holds_then_stops(bundle):
    # Two bad steps in a row are ridden out (nothing sent, the robot holds); three stop the loop.
    states = [(0.5, 0.5), NAN, NAN, (0.5, 0.5), (0.5, 0.5), NAN, NAN, NAN, (0.5, 0.5)]
    robot, s = drive_scripted(bundle, states, max_bad=2)
    assert [step for step, _ in robot.sent] == [0, 3, 4]
    assert s["held_steps"] == 4 and s["refused_observations"] == 5 and s["stopped"].startswith("observation "
                                                                                                "refused at step 7")
    robot, s = drive_scripted(bundle, states[:5], max_bad=2)
    assert s["stopped"] is None and s["steps"] == 5 and s["held_steps"] == 2 and len(robot.sent) == 3


def test_stale_observations_are_refused(bundle):
    from vidact.deploy.policy import ObservationChecks

    robot, s = drive_scripted(bundle, [(0.5, 0.5)] * 2, read_delay_s=0.05, checks=ObservationChecks(max_age_s=0.02))
    assert robot.sent == [] and "s old; the limit is 0.02 s" in s["stopped"]
    robot, s = drive_scripted(bundle, [(0.5, 0.5)] * 2, read_delay_s=0.0, checks=ObservationChecks(max_age_s=1.0))
    assert len(robot.sent) == 2 and s["stopped"] is None


def test_unsafe_actions_stop_the_loop(bundle):
    import torch

    from vidact.deploy.drive import drive
    from vidact.deploy.policy import Policy

    policy = Policy.from_pretrained(bundle)
    with torch.no_grad():
        policy.model.action_out.bias.fill_(float("inf"))
    robot = ScriptedRobot([(0.5, 0.5)] * 3)
    s = drive(policy, robot, ObservationMap.build(policy, robot.observation_features, ""), ["ax", "ay"], fps=200,
              steps=3, log_every=0)
    assert robot.sent == [] and "NaN or infinite actions" in s["stopped"]


def test_drive_cli_stops_and_disconnects_on_a_refused_observation(metaworld_bundle, tmp_path):
    # A deviation limit no real state meets: the first observation is refused; exit 1, one line, no traceback.
    summary_path = tmp_path / "summary.json"
    out = run_cli(str(metaworld_bundle), "--robot.type=metaworld_sim", "--steps", "5", "--fps", "20",
                  "--threads", "1", "--max-state-deviation", "0.001", "--json", str(summary_path))
    assert out.returncode == 1, out.stderr[-3000:]
    assert "vidact drive: error: stopped: observation refused at step 0: observation 'observation.state'" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "disconnect failed" not in out.stdout and "refused observations: 1 (0 held)" in out.stdout
    s = json.loads(summary_path.read_text())
    assert s["steps"] == 0 and s["refused_observations"] == 1 and s["stopped"].startswith("observation refused")
