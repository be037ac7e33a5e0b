"""MetaWorld scripted-expert demonstrations, written with LeRobot's own dataset writer.

Conventions follow LeRobot's MetaWorld env (``lerobot/envs/metaworld.py``, what ``lerobot-eval
--env.type=metaworld`` runs) so a policy trained on this data can be evaluated there:
- camera ``corner2`` moved to (0.75, 0.075, 0.7), image flipped on both axes;
- ``observation.state`` = the first 4 raw observation dims (hand xyz, gripper opening);
  ``--state privileged`` adds the first object's and the goal's xyz (10 dims), which no camera
  policy gets: a diagnostic that tells reading the scene from pixels apart from the rest;
  ``--position-noise M`` shifts those six positions by one Gaussian offset per episode and
  dimension (std M metres, drawn from the episode's seed): the error a perception module that
  reads each scene to a few centimetres would make, so the diagnostic can ask how precise the
  readings must be;
- ``--env-state`` also writes ``observation.environment_state`` (LeRobot's name for privileged
  scene state), the same object and goal xyz, beside the agent state: a training-time target the
  policy never receives as input (``model.env_state_dim``: an auxiliary head learns to read it
  from the frames);
- the instruction is LeRobot's ``TASK_DESCRIPTIONS[task]``; an episode ends at first success;
- the first camera is stored as ``observation.image`` (the key LeRobot maps the env's pixels to),
  further cameras as ``observation.images.<camera>``.

Two renderings (``--camera``):
- ``vidact`` (default): a ``mujoco.Renderer`` at the dataset's size with shadows, reflections and
  skybox off, ~10x faster on CPU (EGL: ~18 ms a 96x96 frame against ~170 ms). Same camera, pose
  and layout as LeRobot's env, but other lighting and a black background: a policy trained on it
  is evaluated with ``vidact eval``, which renders the same way.
- ``lerobot``: the image LeRobot's ``MetaworldEnv`` hands a policy under ``lerobot-eval`` (its own
  env class and renderer: 480x480, default lighting), downscaled to the dataset's size with the
  resize the policy applies to that 480x480 image (``fit_frames``, antialiased bilinear), so the
  training frames are the policy's evaluation inputs up to the video codec. A frame costs a
  480x480 render. A bundle trained on it scores alike under ``lerobot-eval`` and ``vidact eval``
  (which renders this way for such bundles).

Task lists: ``--tasks`` names them, ``--benchmark MT10`` (MT25, MT50) takes MetaWorld's own list
(``metaworld.env_dict``); either way one dataset holds every task, each episode with its task's
instruction, and ``meta/vidact_generation.json`` records per task the episodes tried and kept and
the expert's successes.

Reproducibility: MetaWorld's ``reset(seed=...)`` ignores its seed and draws object positions
from the global numpy RNG unless ``seeded_rand_vec`` is set, so each episode seeds the env's
own generator with ``seed + episode``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidact.data.codec import keep_scheduling, video_codec
from vidact.data.info import ENV_STATE_KEY

log = logging.getLogger(__name__)

FPS = 80  # LeRobot's MetaworldEnv config runs at 80 fps
CORNER2_POSITION = (0.75, 0.075, 0.7)  # LeRobot's moved corner2 camera (https://arxiv.org/pdf/2206.14244)
PRIMARY_IMAGE_KEY = "observation.image"
WITHHELD_DIR = "withheld_actions"  # the action-free episodes' true actions, beside their videos
CAMERA_MODES = ("vidact", "lerobot")
LEROBOT_IMAGE_SIZE = 480  # LeRobot's MetaworldEnv observation_height/width
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
# ``--state``: what observation.state holds. agent: LeRobot's agent_pos; privileged: + the first
# object's and the goal's positions (MetaWorld's obs[4:7] and, fully observable, obs[36:39]).
STATE_KINDS = {"agent": STATE_NAMES,
               "privileged": STATE_NAMES + ["object_x", "object_y", "object_z", "goal_x", "goal_y", "goal_z"]}
ENV_STATE_NAMES = STATE_KINDS["privileged"][len(STATE_NAMES):]
POSITIONS = slice(len(STATE_NAMES), len(STATE_KINDS["privileged"]))  # object and goal xyz in the privileged state
NOISE_STREAM = 15  # the position offsets' own random stream beside the episode's seed
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]
# MetaWorld's multi-task benchmarks -> the env dicts its benchmark classes (metaworld.MT10, ...) train
# on. Read from the dicts: constructing metaworld.MT10() also samples 50 layouts per task (~25 s).
BENCHMARKS = {"MT10": "MT10_V3", "MT25": "MT25_V3", "MT50": "MT50_V3"}


class TaskListError(ValueError):
    """A task list that cannot be resolved (one line, for the command line)."""


def benchmark_tasks(name: str) -> list[str]:
    """The tasks of MetaWorld's benchmark ``name`` (MT10, MT25, MT50; any case), in MetaWorld's order."""
    import metaworld.env_dict

    key = BENCHMARKS.get(name.upper())
    if key is None:
        raise TaskListError(f"--benchmark: unknown MetaWorld benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return list(getattr(metaworld.env_dict, key))


def check_tasks(tasks: list[str]) -> None:
    """Raise ``TaskListError`` naming the tasks MetaWorld (as LeRobot describes it) does not know."""
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    unknown = [t for t in tasks if t not in TASK_DESCRIPTIONS]
    if unknown or not tasks:
        raise TaskListError(f"--tasks: unknown MetaWorld task(s) {unknown or '(none given)'}; known tasks "
                            f"include {sorted(TASK_DESCRIPTIONS)[:6]} ... ({len(TASK_DESCRIPTIONS)} in all)")
    if len(set(tasks)) < len(tasks):
        raise TaskListError(f"--tasks: a task is named twice in {tasks}")


def resolve_tasks(tasks: list[str] | None, benchmark: str | None) -> list[str]:
    """The task list of ``--tasks`` or ``--benchmark`` (exactly one of them)."""
    if tasks and benchmark:
        raise TaskListError(f"give --tasks or --benchmark, not both (--benchmark {benchmark} is a task list)")
    if not tasks and not benchmark:
        raise TaskListError(f"give --tasks (MetaWorld task names) or --benchmark ({', '.join(BENCHMARKS)})")
    resolved = benchmark_tasks(benchmark) if benchmark else list(tasks)
    check_tasks(resolved)
    return resolved


@dataclass
class MetaWorldGenConfig:
    tasks: list[str]
    episodes: int  # successful episodes per task (or recorded ones with keep_failed)
    out: str
    cameras: list[str] = field(default_factory=lambda: ["corner2"])
    camera: str = "vidact"  # rendering: vidact (fast) or lerobot (what lerobot-eval shows a policy)
    state: str = "agent"  # one of STATE_KINDS
    env_state: bool = False  # also write ENV_STATE_KEY (the object's and the goal's xyz)
    position_noise: float = 0.0  # metres: std of the per-episode offsets on the privileged positions
    height: int = 96
    width: int = 96
    seed: int = 0
    max_steps: int = 400  # LeRobot's MetaworldEnv episode_length
    keep_failed: bool = False
    # Keep recording this many steps past the first success (the expert keeps acting): longer
    # held-out episodes for world-model rollouts (LeRobot's convention, 0, ends at first success).
    steps_after_success: int = 0
    max_attempts_factor: int = 3  # give up on a task after episodes * factor failed rollouts
    video_out: str | None = None  # also write action-free mp4s + manifest.jsonl here
    # Episodes per task recorded beyond ``episodes`` as action-free videos only (the few-demos +
    # many-videos setting of issue 14): mp4s + manifest in video_out, their withheld actions in
    # ``withheld_out`` (default VIDEO_OUT/withheld_actions; to measure `vidact label`, not to train on).
    # With it, the demos in ``out`` are not written to video_out.
    action_free: int = 0
    withheld_out: str | None = None
    vcodec: str | None = None  # default: libsvtav1, h264 for frames under 32 pixels (vidact.data.codec)
    overwrite: bool = False
    # Position of tasks[0] in the whole task list (a part written by generate_parallel): seeds are
    # those of the one-process run.
    task_number_offset: int = 0
    manifest_name: str = "manifest.jsonl"  # of the action-free videos in video_out
    benchmark: str | None = None  # the MetaWorld benchmark `tasks` came from (recorded; names the dataset)

    def __post_init__(self) -> None:
        check_tasks(self.tasks)
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"--height/--width must be >= 8, got {self.height}x{self.width}")
        self.vcodec = video_codec(self.height, self.width, self.vcodec)
        if self.action_free < 0:
            raise ValueError(f"--action-free must be >= 0, got {self.action_free}")
        if self.action_free and not self.video_out:
            raise ValueError("--action-free needs --video-out (where the action-free videos go)")
        if self.action_free and self.withheld_out is None:
            self.withheld_out = str(Path(self.video_out) / WITHHELD_DIR)
        if self.steps_after_success < 0:
            raise ValueError(f"--steps-after-success must be >= 0, got {self.steps_after_success}")
        if not self.cameras:
            raise ValueError("--cameras: at least one camera is needed")
        if self.camera not in CAMERA_MODES:
            raise ValueError(f"--camera must be one of {CAMERA_MODES}, got {self.camera!r}")
        if self.state not in STATE_KINDS:
            raise ValueError(f"--state must be one of {list(STATE_KINDS)}, got {self.state!r}")
        if not (self.position_noise >= 0 and math.isfinite(self.position_noise)):
            raise ValueError(f"--position-noise must be a finite number of metres >= 0, got {self.position_noise}")
        if self.position_noise and self.state != "privileged":
            raise ValueError(f"--position-noise shifts the object and goal positions of --state privileged; "
                             f"got --state {self.state}")
        if self.camera == "lerobot" and self.cameras != ["corner2"]:
            raise ValueError(f"--camera lerobot renders the one camera lerobot-eval shows (corner2); "
                             f"got --cameras {self.cameras}")


def episode_seed(seed: int, task_number: int, attempt: int) -> int:
    """The simulator seed of a task's ``attempt``-th episode (with ``--keep-failed`` every attempt is
    kept, so episode k of task i has seed ``episode_seed(seed, i, k)``). Seeds are disjoint across
    tasks so two tasks never share an initial layout draw."""
    return seed + 100_000 * task_number + attempt


def metaworld_state(obs: np.ndarray, kind: str = "agent") -> np.ndarray:
    """observation.state of ``kind`` (STATE_KINDS) from MetaWorld's raw observation vector."""
    if kind == "privileged":
        return np.concatenate([obs[:7], obs[36:39]]).astype(np.float32)
    return obs[:4].astype(np.float32)


def position_offset(seed: int, noise: float) -> np.ndarray:
    """The episode of ``seed``'s offsets on the privileged object and goal xyz: N(0, ``noise``) per
    dimension, one draw per episode (a perception module's error is mostly per scene, not per step)."""
    if not noise:
        return np.zeros(len(ENV_STATE_NAMES), np.float32)
    return np.random.default_rng([seed, NOISE_STREAM]).normal(0.0, noise, len(ENV_STATE_NAMES)).astype(np.float32)


def metaworld_env_state(obs: np.ndarray) -> np.ndarray:
    """ENV_STATE_KEY from MetaWorld's raw (fully observable) observation: object and goal xyz."""
    return np.concatenate([obs[4:7], obs[36:39]]).astype(np.float32)


def image_key(camera_index: int, camera: str) -> str:
    return PRIMARY_IMAGE_KEY if camera_index == 0 else f"observation.images.{camera}"


class ExpertRollout:
    """One MetaWorld task with its scripted expert and an offscreen renderer (``camera``: see the
    module docstring)."""

    def __init__(self, task: str, cameras: list[str], height: int, width: int, camera: str = "vidact",
                 state: str = "agent", env_state: bool = False, position_noise: float = 0.0):
        import metaworld
        import mujoco
        from lerobot.envs.metaworld import TASK_DESCRIPTIONS, TASK_POLICY_MAPPING

        self.task, self.description = task, TASK_DESCRIPTIONS[task]
        self.policy = TASK_POLICY_MAPPING[task]()
        self.size, self.state, self.env_state = (height, width), state, env_state
        self.position_noise, self.offset = position_noise, position_offset(0, 0.0)
        self.lerobot_env = None
        if camera == "lerobot":
            from lerobot.envs.metaworld import MetaworldEnv

            # LeRobot builds its MetaWorld env lazily in _ensure_env (moved corner2, seeded layouts);
            # building it here the same way makes the scene, the renderer and the images LeRobot's.
            self.lerobot_env = MetaworldEnv(task, obs_type="pixels_agent_pos")  # corner2, as lerobot-eval
            self.lerobot_env._ensure_env()
            self.env, self.cameras, self.renderer = self.lerobot_env._env, list(cameras), None
            self._observe_goal()
            return
        mt1 = metaworld.MT1(task, seed=42)  # LeRobot's choice; the per-episode seed randomizes positions
        self.env = mt1.train_classes[task]()
        self.env.set_task(mt1.train_tasks[0])
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self._observe_goal()
        names = [mujoco.mj_id2name(self.env.model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(self.env.model.ncam)]
        missing = [c for c in cameras if c not in names]
        if missing:
            raise ValueError(f"--cameras: {missing} not in this MetaWorld scene's cameras {names}")
        self.camera_ids = [names.index(c) for c in cameras]
        self.cameras = cameras
        if "corner2" in names:
            self.env.model.cam_pos[names.index("corner2")] = CORNER2_POSITION
        self.renderer = mujoco.Renderer(self.env.model, height, width)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            self.renderer.scene.flags[flag] = False

    def _observe_goal(self) -> None:
        """The privileged and environment states read the goal, which MetaWorld zeroes unless fully
        observable."""
        if self.state == "privileged" or self.env_state:
            self.env._partially_observable = False

    def reset(self, seed: int) -> np.ndarray:
        """Start the episode of ``seed`` (the layout LeRobot's env draws for the same seed); returns
        MetaWorld's raw observation vector."""
        self.offset = position_offset(seed, self.position_noise)
        self.env.seed(seed)
        if self.lerobot_env is not None:  # exactly LeRobot's MetaworldEnv.reset
            return self.env.reset(seed=seed)[0]
        obs = self.env.reset()[0]
        # MetaWorld moves the goal marker (a site) in the model at reset but leaves the data's site
        # positions as they were until the first physics step: without this, every episode's first
        # frame shows the previous episode's goal. A forward pass computes positions only (the
        # physics and the observation are unchanged).
        import mujoco

        mujoco.mj_forward(self.env.model, self.env.data)
        return obs

    def observed_state(self, obs: np.ndarray) -> np.ndarray:
        """observation.state of this rollout's kind, with the episode's position offsets
        (``position_noise``) on the privileged positions."""
        state = metaworld_state(obs, self.state)
        if self.state == "privileged":
            state[POSITIONS] += self.offset
        return state

    def render(self) -> list[np.ndarray]:
        if self.lerobot_env is not None:
            return [self._lerobot_image()]
        images = []
        for name, cam in zip(self.cameras, self.camera_ids):
            self.renderer.update_scene(self.env.data, camera=cam)
            image = self.renderer.render()
            # LeRobot flips corner2 on both axes (its raw image is upside down and mirrored).
            images.append(np.ascontiguousarray(np.flip(image, (0, 1)) if name == "corner2" else image))
        return images

    def _lerobot_image(self) -> np.ndarray:
        """LeRobot's observation image (480x480, flipped as LeRobot does), resized to ``size`` the
        way the policy resizes it."""
        image = np.ascontiguousarray(self.lerobot_env.render())
        if image.shape[:2] == self.size:
            return image
        import torch

        from vidact.data.transforms import fit_frames, frame_to_uint8

        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        return frame_to_uint8(fit_frames(x, *self.size, mode="resize")[0])

    def run(self, seed: int, max_steps: int, steps_after_success: int = 0) -> dict:
        """Roll the expert out until first success (and ``steps_after_success`` more) or
        ``max_steps``; returns per-step arrays."""
        obs = self.reset(seed)
        frames: list[list[np.ndarray]] = []
        states, env_states, actions, rewards, successes = [], [], [], [], []
        for _ in range(max_steps):
            frames.append(self.render())
            # The expert's gains can exceed the action space; the env clips, so record what it executes.
            action = np.clip(self.policy.get_action(obs), -1.0, 1.0).astype(np.float32)
            states.append(self.observed_state(obs))
            env_states.append(metaworld_env_state(obs))
            actions.append(action)
            obs, reward, _, truncated, info = self.env.step(action)
            rewards.append(float(reward))
            successes.append(bool(info.get("success", 0.0)))
            done_for = len(successes) - 1 - successes.index(True) if any(successes) else -1
            if done_for >= steps_after_success or truncated:
                break
        out = {"frames": frames, "state": states, "action": actions, "reward": rewards, "success": successes}
        if self.env_state:
            out["env_state"] = env_states
        return out

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
        self.env.close()


def dataset_features(cameras: list[str], height: int, width: int, state: str = "agent",
                     env_state: bool = False) -> dict:
    features = {
        image_key(i, cam): {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
        for i, cam in enumerate(cameras)
    }
    names = STATE_KINDS[state]
    features["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    if env_state:
        features[ENV_STATE_KEY] = {"dtype": "float32", "shape": (len(ENV_STATE_NAMES),), "names": ENV_STATE_NAMES}
    features["action"] = {"dtype": "float32", "shape": (4,), "names": ACTION_NAMES}
    features["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    features["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
    return features


def create_dataset(out: Path, repo: str, cameras: list[str], height: int, width: int, vcodec: str | None = None,
                   overwrite: bool = False, flag: str = "--out", state: str = "agent", env_state: bool = False):
    """An empty LeRobot dataset at ``out`` with the features generated MetaWorld data has; ``vcodec``
    None: ``codec.video_codec``'s choice for the size."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{flag} {out} already exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    return LeRobotDataset.create(repo_id=repo, fps=FPS, features=dataset_features(cameras, height, width, state, env_state),
                                 root=out,
                                 robot_type="sawyer", use_videos=True,
                                 rgb_encoder=RGBEncoderConfig(vcodec=video_codec(height, width, vcodec)))


def generate(cfg: MetaWorldGenConfig) -> dict:
    """Write the dataset to ``cfg.out``; returns a summary (episodes kept / tried per task)."""
    out = Path(cfg.out)
    dataset = create_dataset(out, repo_id(cfg), cfg.cameras, cfg.height, cfg.width, cfg.vcodec, cfg.overwrite,
                             state=cfg.state, env_state=cfg.env_state)
    video_writer = ActionFreeVideoWriter(Path(cfg.video_out), cfg.manifest_name) if cfg.video_out else None
    withheld = (create_dataset(Path(cfg.withheld_out), repo_id(cfg) + "_withheld", cfg.cameras, cfg.height,
                               cfg.width, cfg.vcodec, overwrite=True, state=cfg.state, env_state=cfg.env_state)
                if cfg.action_free else None)
    summary: dict[str, dict[str, int]] = {}  # per task: episodes kept, tried, and the expert's successes
    desc = cfg.tasks[0] if len(cfg.tasks) == 1 else "metaworld episodes"
    per_task = cfg.episodes + cfg.action_free
    progress = tqdm(total=per_task * len(cfg.tasks), desc=desc, unit="ep")
    for task_number, task in enumerate(cfg.tasks, start=cfg.task_number_offset):
        rollout = ExpertRollout(task, cfg.cameras, cfg.height, cfg.width, cfg.camera, cfg.state, cfg.env_state,
                                cfg.position_noise)
        kept = tried = successes = 0
        try:
            while kept < per_task:
                if tried >= per_task * cfg.max_attempts_factor:
                    raise RuntimeError(f"task {task}: only {kept}/{per_task} successful episodes in {tried} "
                                       f"attempts (max_steps={cfg.max_steps}); raise --max-steps or use --keep-failed")
                seed = episode_seed(cfg.seed, task_number, tried)
                episode = rollout.run(seed, cfg.max_steps, cfg.steps_after_success)
                tried += 1
                success = any(episode["success"])
                successes += success
                if not success and not cfg.keep_failed:
                    log.info("task %s seed %d failed after %d steps; not kept", task, seed, len(episode["action"]))
                    continue
                demo = kept < cfg.episodes  # the first ones are demos; with action_free, the rest are videos
                write_episode(dataset if demo else withheld, cfg.cameras, rollout.description, episode)
                if video_writer is not None and (not demo or not cfg.action_free):
                    video_writer.write(episode["frames"], rollout.description, f"{task}_seed{seed}")
                kept += 1
                progress.update(1)
        finally:
            rollout.close()
        summary[task] = {"kept": min(kept, cfg.episodes), "tried": tried, "expert_successes": successes}
        if cfg.action_free:
            summary[task]["action_free"] = kept - cfg.episodes
    progress.close()
    with keep_scheduling():
        dataset.finalize()
        if withheld is not None:
            withheld.finalize()
    if video_writer is not None:
        video_writer.close()
    (out / "meta" / "vidact_generation.json").write_text(json.dumps(
        {"generator": "vidact data metaworld", "config": vars(cfg), "summary": summary}, indent=2, default=str))
    return summary


def generate_parallel(cfg: MetaWorldGenConfig, workers: int) -> dict:
    """``generate`` with the tasks spread over ``workers`` processes: each task is written as its own
    part under ``OUT.parts/`` (with the seeds of a one-process run), then LeRobot's
    ``aggregate_datasets`` joins the parts in task order into ``cfg.out``. An interrupted run
    resumes: a finished part made with the same settings is kept."""
    import dataclasses
    import multiprocessing

    from concurrent.futures import ProcessPoolExecutor
    from lerobot.datasets import aggregate_datasets

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it")
    parts_root = out.with_name(out.name + ".parts")
    parts = [dataclasses.replace(cfg, tasks=[task], out=str(parts_root / f"{i:03d}_{task}"), task_number_offset=i,
                                 overwrite=True, manifest_name=f"manifest.{i:03d}.jsonl", benchmark=None,
                                 withheld_out=str(parts_root / f"{i:03d}_{task}_{WITHHELD_DIR}")
                                 if cfg.action_free else None)
             for i, task in enumerate(cfg.tasks)]
    todo = [part for part in parts if not _finished(part)]
    if len(todo) < len(parts):
        log.info("resuming: %d of %d tasks already generated in %s", len(parts) - len(todo), len(parts), parts_root)
    # spawn: a forked MuJoCo/EGL context is not safe to render from.
    with ProcessPoolExecutor(min(workers, len(todo)) or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(generate, todo))
    if out.exists():
        shutil.rmtree(out)
    aggregate_datasets([f"local/part{i}" for i in range(len(parts))], repo_id(cfg),
                       roots=[Path(part.out) for part in parts], aggr_root=out)
    if cfg.action_free:
        withheld = Path(cfg.withheld_out)
        if withheld.exists():
            shutil.rmtree(withheld)
        aggregate_datasets([f"local/withheld{i}" for i in range(len(parts))], repo_id(cfg) + "_withheld",
                           roots=[Path(part.withheld_out) for part in parts], aggr_root=withheld)
    summary = {}
    for part in parts:
        summary.update(json.loads((Path(part.out) / "meta" / "vidact_generation.json").read_text())["summary"])
    if cfg.video_out:  # one manifest, in task order
        video_out = Path(cfg.video_out)
        lines = [(video_out / part.manifest_name).read_text() for part in parts]
        (video_out / cfg.manifest_name).write_text("".join(lines))
        for part in parts:
            (video_out / part.manifest_name).unlink()
    (out / "meta" / "vidact_generation.json").write_text(json.dumps(
        {"generator": "vidact data metaworld", "config": vars(cfg), "workers": workers, "summary": summary},
        indent=2, default=str))
    shutil.rmtree(parts_root)
    return summary


def repo_id(cfg: MetaWorldGenConfig) -> str:
    return f"vidact/metaworld_{cfg.benchmark or '_'.join(cfg.tasks)}"[:96]


def _finished(part: MetaWorldGenConfig) -> bool:
    """A part that ``generate`` completed with these settings."""
    meta = Path(part.out) / "meta" / "vidact_generation.json"
    if not meta.is_file():
        return False
    return json.loads(meta.read_text())["config"] == json.loads(json.dumps(vars(part), default=str))


def write_episode(dataset, cameras: list[str], description: str, episode: dict) -> None:
    """One episode (``ExpertRollout.run``'s per-step lists) into ``dataset``; ``next.success`` is
    MetaWorld's per-step success flag (an episode succeeded if any step has it)."""
    for t in range(len(episode["action"])):
        frame = {image_key(i, cam): episode["frames"][t][i] for i, cam in enumerate(cameras)}
        frame["observation.state"] = episode["state"][t]
        if "env_state" in episode:
            frame[ENV_STATE_KEY] = episode["env_state"][t]
        frame["action"] = episode["action"][t]
        frame["next.reward"] = np.array([episode["reward"][t]], dtype=np.float32)
        frame["next.success"] = np.array([episode["success"][t]], dtype=bool)
        frame["task"] = description
        dataset.add_frame(frame)
    with keep_scheduling():
        dataset.save_episode()


class ActionFreeVideoWriter:
    """Writes each episode's primary camera as an H.264 mp4 plus a ``manifest.jsonl`` entry, the
    web-video format :mod:`vidact.data.webvideo` reads (for video-pretraining experiments)."""

    def __init__(self, root: Path, manifest_name: str = "manifest.jsonl"):
        from vidact.data.webvideo import write_video  # the one mp4 writer vidact has

        self.root, self._write_video = root, write_video
        root.mkdir(parents=True, exist_ok=True)
        self.manifest = open(root / manifest_name, "w")

    def write(self, frames: list[list[np.ndarray]], caption: str, name: str) -> None:
        path = self.root / f"{name}.mp4"
        self._write_video(path, np.stack([views[0] for views in frames]), fps=FPS)
        self.manifest.write(json.dumps({"path": path.name, "caption": caption}) + "\n")

    def close(self) -> None:
        self.manifest.close()
