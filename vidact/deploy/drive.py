"""``vidact drive BUNDLE --robot.type=NAME [--robot.KEY=VALUE ...]``: drive a LeRobot ``Robot``.

The robot is built through LeRobot's own config registry (``RobotConfig``, a draccus
``ChoiceRegistry``) and factory (``make_robot_from_config``), so every robot type LeRobot ships
(``so100_follower``, ``so101_follower``, ``koch_follower``, ...) and every installed
``lerobot_robot_*`` plugin works, with the same ``--robot.KEY=VALUE`` options as
``lerobot-record``; ``metaworld_sim`` (``vidact.deploy.sim_robot``) is a simulated one.

Each control step (at ``--fps``, LeRobot's record-loop timing: sleep out the rest of the period,
a step that overruns it is counted late and the next starts at once):

    robot.get_observation()  ->  ObservationMap  ->  Policy.select_action (chunk executor)
                             ->  {action key: value}  ->  robot.send_action()

Observation mapping (``ObservationMap``, printed at start):
- each policy camera key (``observation.image``, ``observation.images.<name>``) takes the robot
  camera ``<name>``; ``observation.image`` takes the robot's only camera when it has one;
  ``--camera POLICY_KEY=ROBOT_KEY`` overrides;
- ``observation.state`` is the robot's scalar observation features in their declared order
  (LeRobot's dataset convention, ``hw_to_dataset_features``), or ``--state-keys a,b,c``;
- actions go out as the robot's ``action_features`` in their declared order (or
  ``--action-keys``), already clipped to the bundle's bounds by the policy.
A count or name mismatch is an error naming the key, before the robot moves. For
``metaworld_sim`` the cameras, their mapping and the image size default to what ``vidact eval``
renders for the bundle (``observation.image`` <- ``corner2``, at the recorded size).

With the default executors the loop is synchronous: the robot holds its last command while a
chunk is inferred (that step is counted late when inference takes longer than the period). With
``--executor async`` the next chunk is computed in a background thread while the current one is
executed (``vidact.deploy.executors.AsyncChunking``); the summary counts the steps that still had to
wait for it (``executor_waits``). Ctrl-C stops the loop; the robot
is always disconnected, the video and the summary are still written.

Refused observations (issue 16; ``vidact.deploy.policy.ObservationChecks``: NaN/inf, a state far
from the training statistics, an observation older than ``--max-observation-age`` measured from
the start of its read): nothing is sent that step, so the robot holds its last command; after
more than ``--max-bad-observations`` in a row (default 0: the first) the loop stops, the robot is
disconnected and ``vidact drive`` exits 1 with the reason. Non-finite actions from the model are
never sent either: the loop stops at once. A refused step leaves the policy's history unchanged;
held steps count toward ``--steps``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

ROBOT_PREFIX = "--robot."
# Robot types whose config lives in a module not named after the type.
LEROBOT_ROBOT_MODULES = {"so100_follower": "so_follower", "so101_follower": "so_follower",
                         "hope_jr_arm": "hope_jr", "hope_jr_hand": "hope_jr", "lekiwi_client": "lekiwi"}
SIM_ROBOTS = {"metaworld_sim": "vidact.deploy.sim_robot"}
CAMERA_CONFIG_MODULES = ("lerobot.cameras.opencv", "lerobot.cameras.realsense", "lerobot.cameras.zmq",
                         "lerobot.cameras.reachy2_camera")


class DriveError(ValueError):
    """A set-up or mapping problem, reported as one message (no traceback)."""


# ---------------------------------------------------------------------- robot config


def _register_robot_type(name: str) -> None:
    """Import the module that registers ``name`` in LeRobot's ``RobotConfig`` registry."""
    import importlib
    import importlib.util
    import pkgutil

    from lerobot.robots import RobotConfig

    for module in CAMERA_CONFIG_MODULES:  # so --robot.cameras='{front: {type: opencv, ...}}' parses
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if name in RobotConfig.get_known_choices():
        return
    if name in SIM_ROBOTS:
        importlib.import_module(SIM_ROBOTS[name])
        return
    module = f"lerobot.robots.{LEROBOT_ROBOT_MODULES.get(name, name)}"
    if importlib.util.find_spec(module) is not None:
        importlib.import_module(module)
    if name in RobotConfig.get_known_choices():
        return
    # Unknown name: everything LeRobot ships, plus third-party lerobot_robot_* plugins.
    import lerobot.robots
    from lerobot.utils.import_utils import register_third_party_plugins

    for info in pkgutil.iter_modules(lerobot.robots.__path__):
        if info.ispkg:
            try:
                importlib.import_module(f"lerobot.robots.{info.name}")
            except ImportError:
                pass
    for module in SIM_ROBOTS.values():
        importlib.import_module(module)
    register_third_party_plugins()


def robot_config(robot_args: list[str]):
    """``["--robot.type=so100_follower", "--robot.port=/dev/ttyUSB0", ...]`` -> a LeRobot ``RobotConfig``."""
    import draccus
    from lerobot.robots import RobotConfig

    bad = [a for a in robot_args if not a.startswith(ROBOT_PREFIX) or "=" not in a]
    if bad:
        raise DriveError(f"robot options are written --robot.KEY=VALUE (with '='), got {bad}")
    values = dict(a[len(ROBOT_PREFIX):].split("=", 1) for a in robot_args)
    name = values.get("type")
    if not name:
        raise DriveError("give the robot type, e.g. --robot.type=so100_follower or --robot.type=metaworld_sim")
    _register_robot_type(name)
    known = sorted(RobotConfig.get_known_choices())
    if name not in known:
        raise DriveError(f"unknown robot type {name!r}; known types: {known}")
    cls = RobotConfig.get_choice_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted({k.split(".", 1)[0] for k in values} - fields - {"type"})
    if unknown:
        raise DriveError(f"{name}: unknown option(s) {[ROBOT_PREFIX + k for k in unknown]}; "
                         f"its options are {sorted(fields)}")

    wrapper = dataclasses.make_dataclass("DriveArgs", [("robot", RobotConfig)])  # a real type, not a string

    try:
        return draccus.parse(wrapper, args=list(robot_args)).robot
    except draccus.utils.DecodingError as e:
        raise DriveError(f"{name}: {e}") from None
    except SystemExit as e:  # draccus' argparse already printed the reason
        raise DriveError(f"{name}: could not parse the robot options {robot_args}") from e


def check_port(config) -> None:
    """A serial robot whose port does not exist: say so before LeRobot tries to open it."""
    port = getattr(config, "port", None)
    if isinstance(port, str) and port.startswith("/") and not Path(port).exists():
        raise DriveError(f"{config.type}: port {port} does not exist; is the robot plugged in and powered? "
                         "(`lerobot-find-port` lists the serial ports)")


def make_robot(config):
    from lerobot.robots import make_robot_from_config

    check_port(config)
    try:
        return make_robot_from_config(config)
    except ModuleNotFoundError as e:
        raise DriveError(f"{config.type}: needs the Python package {e.name!r}, which is not installed (LeRobot's "
                         "extras, e.g. pip install 'lerobot[feetech]' for SO-100/SO-101)") from None
    except ImportError as e:  # LeRobot >= 0.5 checks its extras itself and says which one to install
        raise DriveError(f"{config.type}: needs a package that is not installed: {e}") from None
    except Exception as e:
        raise DriveError(f"{config.type}: could not create the robot: {type(e).__name__}: {e}") from None


def connect(robot) -> None:
    try:
        robot.connect()
    except Exception as e:
        raise DriveError(f"{robot.name}: could not connect: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------- observation / action mapping


def _is_camera(feature: Any) -> bool:
    return isinstance(feature, tuple) and len(feature) == 3


@dataclass
class ObservationMap:
    """Robot observation dict -> the policy's observation dict."""

    cameras: dict[str, str]  # policy camera key -> robot observation key
    state_key: str  # the policy's state key (observation.state)
    state: list[str]  # robot observation keys, in the policy's state order
    task: str

    @classmethod
    def build(cls, policy, observation_features: Mapping[str, Any], task: str,
              camera_map: Mapping[str, str] | None = None, state_keys: list[str] | None = None) -> "ObservationMap":
        robot_cams = [k for k, v in observation_features.items() if _is_camera(v)]
        camera_map = dict(camera_map or {})
        stray = sorted(set(camera_map) - set(policy.camera_keys))
        if stray:
            raise DriveError(f"--camera {stray}: not a camera of this policy; its cameras are {policy.camera_keys}")
        cameras = {}
        for key in policy.camera_keys:
            if key in camera_map:
                source = camera_map[key]
                if source not in robot_cams:
                    raise DriveError(f"--camera {key}={source}: the robot has no camera {source!r}; "
                                     f"its cameras are {robot_cams}")
            else:
                name = key.rsplit(".", 1)[-1]
                if name in robot_cams:
                    source = name
                elif key == "observation.image" and len(robot_cams) == 1:
                    source = robot_cams[0]
                else:
                    raise DriveError(f"policy camera {key!r}: the robot has no camera {name!r} (its cameras are "
                                     f"{robot_cams}); map one with --camera {key}=ROBOT_CAMERA")
            cameras[key] = source
        dim = policy.config.state_dim
        if state_keys is None:
            state_keys = [k for k, v in observation_features.items() if not _is_camera(v)]
            if len(state_keys) != dim:
                raise DriveError(f"policy state '{policy.state_key}' has {dim} dims but the robot has "
                                 f"{len(state_keys)} scalar observations {state_keys}; choose them with "
                                 "--state-keys a,b,c")
        else:
            missing = [k for k in state_keys if k not in observation_features]
            if missing:
                raise DriveError(f"--state-keys {missing}: not observations of the robot; it has "
                                 f"{list(observation_features)}")
            if len(state_keys) != dim:
                raise DriveError(f"--state-keys: {len(state_keys)} keys for a {dim}-dim policy state")
        return cls(cameras, policy.state_key, list(state_keys), task)

    def __call__(self, robot_obs: Mapping[str, Any], capture_time: float | None = None) -> dict[str, Any]:
        """``capture_time``: ``time.time()`` when the read started, for the policy's age check."""
        from vidact.deploy.policy import CAPTURE_TIME_KEY, ObservationError

        missing = [k for k in (*self.cameras.values(), *self.state) if k not in robot_obs]
        if missing:
            raise DriveError(f"robot observation is missing {missing} (mapped to {self.describe()}); "
                             f"it has {list(robot_obs)}")
        out: dict[str, Any] = {key: np.asarray(robot_obs[src]) for key, src in self.cameras.items()}
        try:
            out[self.state_key] = np.asarray([float(robot_obs[k]) for k in self.state], np.float32)
        except (TypeError, ValueError):
            bad = {k: robot_obs[k] for k in self.state if not isinstance(robot_obs[k], (int, float, np.number))}
            raise ObservationError(f"robot observation {bad} is not a number") from None
        out["task"] = self.task
        if capture_time is not None:
            out[CAPTURE_TIME_KEY] = capture_time
        return out

    def describe(self) -> str:
        cams = ", ".join(f"{k} <- {v}" for k, v in self.cameras.items())
        return f"{cams}, {self.state_key} <- [{', '.join(self.state)}]"


def action_keys(policy, action_features: Mapping[str, Any], keys: list[str] | None = None) -> list[str]:
    dim = policy.config.action_dim
    if keys is None:
        keys = list(action_features)
        if len(keys) != dim:
            raise DriveError(f"policy actions have {dim} dims but the robot takes {len(keys)} {keys}; "
                             "choose them with --action-keys a,b,c")
        return keys
    missing = [k for k in keys if k not in action_features]
    if missing:
        raise DriveError(f"--action-keys {missing}: not actions of the robot; it takes {list(action_features)}")
    if len(keys) != dim:
        raise DriveError(f"--action-keys: {len(keys)} keys for {dim}-dim policy actions")
    return list(keys)


# ---------------------------------------------------------------------- control loop


def _sleep_until(deadline: float) -> None:
    """Sleep most of the way, spin the last 2 ms (time.sleep alone overshoots by ~1 ms)."""
    remaining = deadline - time.perf_counter()
    if remaining > 0.002:
        time.sleep(remaining - 0.002)
    while time.perf_counter() < deadline:
        pass


def drive(policy, robot, obs_map: ObservationMap, act_keys: list[str], fps: float, steps: int | None = None,
          seconds: float | None = None, record_key: str | None = None, stop_on_success: bool = False,
          log_every: float = 5.0, max_bad_observations: int = 0) -> dict:
    """Run the control loop on a connected robot; returns the summary (``frames`` when recording).
    ``summary["stopped"]`` is the reason when a refused observation or unsafe actions ended it."""
    from vidact.deploy.policy import ObservationError, UnsafeActionError

    if fps <= 0:
        raise DriveError(f"--fps must be > 0, got {fps}")
    if steps is None and seconds is None:
        raise DriveError("give --steps N or --seconds S (Ctrl-C also stops)")
    if max_bad_observations < 0:
        raise DriveError(f"--max-bad-observations must be >= 0, got {max_bad_observations}")
    period = 1.0 / fps
    policy.reset()
    frames, latencies, step_times = [], [], []
    n = late = held = refused = bad_in_a_row = 0
    seen = policy.last_chunk  # the last chunk counted in latencies
    interrupted, stopped = False, None
    start = time.perf_counter()
    last_log = start
    try:
        while (steps is None or n < steps) and (seconds is None or time.perf_counter() - start < seconds):
            tick = time.perf_counter()
            captured = time.time()
            raw = robot.get_observation()
            try:
                action = np.asarray(policy.select_action(obs_map(raw, captured)), np.float32).reshape(-1)
            except ObservationError as e:
                refused += 1
                bad_in_a_row += 1
                if bad_in_a_row > max_bad_observations:
                    stopped = f"observation refused at step {n}: {e}"
                    break
                print(f"step {n}: observation refused ({bad_in_a_row} in a row, {max_bad_observations} tolerated), "
                      f"holding: {e}", flush=True)
                held += 1  # nothing sent: the robot holds its last command for this period
                n += 1
                _sleep_until(tick + period)
                continue
            except UnsafeActionError as e:
                stopped = f"step {n}: {e}"
                break
            bad_in_a_row = 0
            if policy.last_chunk is not None and policy.last_chunk is not seen:  # async: set by another thread
                seen = policy.last_chunk
                latencies.append(seen.latency_s)
            robot.send_action({k: float(v) for k, v in zip(act_keys, action)})
            if record_key is not None:
                frames.append(np.asarray(raw[record_key]))
            n += 1
            elapsed = time.perf_counter() - tick
            step_times.append(elapsed)
            if elapsed > period:
                late += 1
            else:
                _sleep_until(tick + period)
            if stop_on_success and getattr(robot, "success", False):
                break
            if log_every and time.perf_counter() - last_log > log_every:
                last_log = time.perf_counter()
                print(f"step {n}: {n / (last_log - start):.1f} Hz, {late} late", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    total = time.perf_counter() - start
    summary = {
        "robot": robot.name, "steps": n, "seconds": total, "target_hz": fps,
        "achieved_hz": n / total if total > 0 else 0.0, "late_steps": late, "interrupted": interrupted,
        "chunks": len(latencies),
        "chunk_latency_mean_s": float(np.mean(latencies)) if latencies else None,
        "chunk_latency_max_s": float(np.max(latencies)) if latencies else None,
        "step_time_max_s": float(np.max(step_times)) if step_times else None,
        "executor": type(policy.executor).__name__, "mode": policy.mode.value,
        # async: steps on which the current chunk ran out before the next one was computed
        "executor_waits": getattr(policy.executor, "waits", None),
        "mapping": obs_map.describe(), "actions": act_keys,
        "refused_observations": refused, "held_steps": held, "stopped": stopped,
    }
    if hasattr(robot, "success"):  # simulated robots know whether the task was solved
        summary.update(success=bool(robot.success), first_success_step=getattr(robot, "first_success_step", None),
                       task=getattr(robot.config, "task", None))
    summary["frames"] = frames
    return summary


def format_summary(s: dict) -> str:
    lines = [f"vidact drive: {s['robot']}: {s['steps']} steps in {s['seconds']:.1f} s, achieved "
             f"{s['achieved_hz']:.1f} Hz of {s['target_hz']:g} Hz target, {s['late_steps']} late steps"
             + (" (interrupted)" if s["interrupted"] else ""),
             f"  chunks: {s['chunks']}, latency mean {(s['chunk_latency_mean_s'] or 0) * 1e3:.0f} ms, max "
             f"{(s['chunk_latency_max_s'] or 0) * 1e3:.0f} ms ({s['executor']}, {s['mode']})"
             + (f", waited for a chunk {s['executor_waits']} times" if s.get("executor_waits") is not None else "")]
    if s.get("refused_observations"):
        lines.append(f"  refused observations: {s['refused_observations']} ({s['held_steps']} held)")
    if "success" in s:
        when = f" at step {s['first_success_step']}" if s["success"] else ""
        lines.append(f"  {s['task']}: success {'yes' if s['success'] else 'no'}{when}")
    if s.get("video"):
        lines.append(f"  video: {s['video']}")
    return "\n".join(lines)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise DriveError(f"{flag} takes POLICY_KEY=ROBOT_KEY, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def _keys(text: str | None) -> list[str] | None:
    return [k.strip() for k in text.split(",") if k.strip()] if text else None


def main(args) -> int:
    from vidact.deploy.planner import planner_kwargs
    from vidact.deploy.policy import ObservationChecks, Policy
    from vidact.deploy.sim import set_threads

    if args.fps <= 0:
        raise DriveError(f"--fps must be > 0, got {args.fps}")
    if args.steps is None and args.seconds is None:
        raise DriveError("give --steps N or --seconds S (Ctrl-C also stops)")
    if args.delay != "auto" and not str(args.delay).isdigit():
        raise DriveError(f"--delay takes a number of control steps or 'auto', got {args.delay!r}")
    set_threads(args.threads)
    config = robot_config(args.robot_args)
    check_port(config)  # before the bundle loads: a missing port is the likeliest real-robot error
    executor_kwargs = {"rtc": {"execution_horizon": args.execution_horizon, "overlap": args.overlap,
                               "delay": None if args.delay == "auto" else int(args.delay), "fps": args.fps},
                       "async": {"execution_horizon": args.execution_horizon, "overlap": args.overlap},
                       "temporal_ensemble": {"coeff": args.ensemble_coeff}}.get(args.executor, {})
    kwargs = {"n_action_steps": args.n_action_steps} if args.n_action_steps else {}
    kwargs.update(planner_kwargs(args))
    if args.max_bad_observations < 0:
        raise DriveError(f"--max-bad-observations must be >= 0, got {args.max_bad_observations}")
    policy = Policy.from_pretrained(args.bundle, mode=args.mode, steps=args.sampler_steps, device=args.device,
                                    noise_scale=args.noise_scale, executor=args.executor, compiled=args.compile,
                                    executor_kwargs=executor_kwargs, checks=ObservationChecks.from_args(args), **kwargs)
    camera_map = _pairs(args.camera, "--camera")
    if config.type == "metaworld_sim":  # render what `vidact eval` renders for this bundle
        from vidact.deploy.sim import camera_name

        cams = policy.info.get("cameras", {})
        size = (cams.get("recorded_size") or [cams.get("model_size") or [policy.config.height, policy.config.width]])[0]
        if config.height is None:
            config.height, config.width = int(size[0]), int(config.width or size[1])
        if not any(a.startswith(ROBOT_PREFIX + "cameras=") for a in args.robot_args):
            config.cameras = [camera_name(k) for k in policy.camera_keys]
            camera_map = {**{k: camera_name(k) for k in policy.camera_keys}, **camera_map}
    robot = make_robot(config)
    obs_map = ObservationMap.build(policy, robot.observation_features, args.task or "", camera_map,
                                   _keys(args.state_keys))
    act_keys = action_keys(policy, robot.action_features, _keys(args.action_keys))
    record_key = None
    if args.record:
        record_key = args.record_camera or next(iter(obs_map.cameras.values()))
        if record_key not in robot.observation_features:
            raise DriveError(f"--record-camera {record_key!r}: not an observation of the robot")
    connect(robot)
    try:
        if not args.task:
            obs_map.task = getattr(robot, "description", "") or ""
        print(f"vidact drive: {config.type} at {args.fps:g} Hz; {obs_map.describe()}; actions -> "
              f"[{', '.join(act_keys)}]; task {obs_map.task!r}", flush=True)
        summary = drive(policy, robot, obs_map, act_keys, args.fps, steps=args.steps, seconds=args.seconds,
                        record_key=record_key, stop_on_success=args.stop_on_success,
                        max_bad_observations=args.max_bad_observations)
    finally:
        policy.executor.close()  # an inference still running in the background (--executor async)
        try:
            robot.disconnect()
        except Exception as e:  # report, but keep the summary
            print(f"vidact drive: warning: disconnect failed: {type(e).__name__}: {e}", flush=True)
    frames = summary.pop("frames")
    if args.record and frames:
        from vidact.data.webvideo import write_video

        summary["video"] = str(write_video(args.record, np.stack(frames), fps=args.fps))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(format_summary(summary), flush=True)
    if summary["stopped"]:  # the robot was stopped and disconnected; say why on one line
        print(f"vidact drive: error: stopped: {summary['stopped']}", file=sys.stderr, flush=True)
        return 1
    return 130 if summary["interrupted"] else 0
