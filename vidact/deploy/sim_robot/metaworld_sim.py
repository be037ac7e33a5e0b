"""``metaworld_sim``: one MetaWorld task as a LeRobot ``Robot``.

The scene is the one ``vidact data metaworld`` records and ``vidact eval`` evaluates in
(``vidact.data.metaworld.ExpertRollout``: moved ``corner2`` camera flipped on both axes,
shadows/reflections/skybox off), so a bundle trained on that data sees the same pixels.

- observation: one float per state dim (``hand_x, hand_y, hand_z, gripper``: the first 4 raw
  MetaWorld obs dims, ``observation.state`` of the training data) and one ``(H, W, 3)`` uint8
  image per camera, keyed by the MetaWorld camera name (``corner2``);
- action: ``delta_x, delta_y, delta_z, gripper`` in [-1, 1] (clipped, as the env does).

``get_observation`` renders the current state; ``send_action`` steps the physics once. An
episode that runs past MetaWorld's path limit is reset with the next seed (``episode`` counts
them); ``success`` / ``first_success_step`` record whether and when the task was solved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lerobot.robots import Robot, RobotConfig

from vidact.data.metaworld import ACTION_NAMES, STATE_NAMES
from vidact.deploy.sim import EVAL_SEED_BASE


@RobotConfig.register_subclass("metaworld_sim")
@dataclass(kw_only=True)
class MetaWorldSimConfig(RobotConfig):
    task: str = "button-press-topdown-v3"
    # First episode's seed (object positions); the default is in `vidact eval`'s held-out range.
    seed: int = EVAL_SEED_BASE
    cameras: list[str] = field(default_factory=lambda: ["corner2"])
    # Image size; None: the bundle's recorded camera size under `vidact drive`, else 64.
    height: int | None = None
    width: int | None = None

    def __post_init__(self):  # RobotConfig's check is for LeRobot camera configs; these are camera names
        if not self.cameras:
            raise ValueError("metaworld_sim: give at least one camera (e.g. --robot.cameras='[corner2]')")
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and value < 1:
                raise ValueError(f"metaworld_sim: {name} must be >= 1, got {value}")


class MetaWorldSim(Robot):
    config_class = MetaWorldSimConfig
    name = "metaworld_sim"

    def __init__(self, config: MetaWorldSimConfig):
        super().__init__(config)
        self.config = config
        self.height, self.width = config.height or 64, config.width or 64
        self.rollout = None  # vidact.data.metaworld.ExpertRollout while connected
        self.description = ""
        self._obs: np.ndarray | None = None
        self.episode = 0
        self.steps = 0  # physics steps since connect
        self.success = False
        self.first_success_step: int | None = None

    # ------------------------------------------------------------------ features

    @property
    def observation_features(self) -> dict:
        return {**{name: float for name in STATE_NAMES},
                **{cam: (self.height, self.width, 3) for cam in self.config.cameras}}

    @property
    def action_features(self) -> dict:
        return {name: float for name in ACTION_NAMES}

    # ------------------------------------------------------------------ connection

    @property
    def is_connected(self) -> bool:
        return self.rollout is not None

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise RuntimeError(f"{self} is already connected")
        from vidact.data.metaworld import ExpertRollout

        self.rollout = ExpertRollout(self.config.task, list(self.config.cameras), self.height, self.width)
        self.description = self.rollout.description
        self.episode, self.steps, self.success, self.first_success_step = 0, 0, False, None
        self._reset_episode()

    def _reset_episode(self) -> None:
        env = self.rollout.env
        env.seed(self.config.seed + self.episode)
        self._obs, _ = env.reset()

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def disconnect(self) -> None:
        if not self.is_connected:
            raise RuntimeError(f"{self} is not connected")
        self.rollout.close()
        self.rollout = None

    # ------------------------------------------------------------------ I/O

    def _require_connection(self) -> None:
        if not self.is_connected:
            raise RuntimeError(f"{self} is not connected; call connect() first")

    def get_observation(self) -> dict[str, Any]:
        self._require_connection()
        obs: dict[str, Any] = {name: float(v) for name, v in zip(STATE_NAMES, self._obs[:4])}
        obs.update(zip(self.config.cameras, self.rollout.render()))
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self._require_connection()
        missing = [k for k in ACTION_NAMES if k not in action]
        if missing:
            raise KeyError(f"metaworld_sim: action is missing {missing}; expected keys {ACTION_NAMES}")
        vec = np.clip(np.asarray([float(action[k]) for k in ACTION_NAMES], np.float32), -1.0, 1.0)
        self._obs, _, _, truncated, info = self.rollout.env.step(vec)
        self.steps += 1
        if info.get("success", 0.0) and not self.success:
            self.success, self.first_success_step = True, self.steps
        if truncated:  # past MetaWorld's path limit: the env refuses further steps
            self.episode += 1
            self._reset_episode()
        return dict(zip(ACTION_NAMES, vec.tolist()))
