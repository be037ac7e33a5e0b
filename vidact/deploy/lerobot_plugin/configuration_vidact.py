"""The ``vidact`` entry of LeRobot's policy-config registry (what ``config.json``'s ``"type"`` names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig


@PreTrainedConfig.register_subclass("vidact")
@dataclass
class VidActConfig(PreTrainedConfig):
    """Mirrors the bundle's ``config.json`` (written by ``vidact.export.package.lerobot_config``)."""

    vidact: dict[str, Any] = field(default_factory=dict)  # vidact.models.VidActConfig.to_dict()
    sampler: dict[str, Any] = field(default_factory=dict)  # vidact.generative.sample.SamplerConfig
    mode: str = "policy_fast"
    n_action_steps: int = 8
    # Observation safety (vidact.deploy.policy.ObservationChecks): a state dimension further than this
    # from the training centre, in training standard deviations, is refused; null turns it off
    # (e.g. `lerobot-eval --policy.max_state_deviation=null`).
    max_state_deviation: float | None = 10.0
    # lerobot-eval writes the imagined future frames (mode `policy`) as videos/pred_episode_N.mp4
    # beside its rollout videos (its world-model hook: last_predicted_latents / decode_predicted_latents).
    save_predicted_video: bool = False
    # Normalization happens inside the network (its buffers); LeRobot's processors must not redo it.
    normalization_mapping: dict[str, NormalizationMode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("policy", "policy_fast"):
            raise ValueError(f"vidact policy mode must be 'policy' or 'policy_fast', got {self.mode!r}")
        if self.save_predicted_video and self.mode != "policy":
            raise ValueError("save_predicted_video needs mode 'policy' (policy_fast imagines no frames)")

    @property
    def observation_delta_indices(self) -> None:
        return None  # the policy keeps its own observation history

    @property
    def action_delta_indices(self) -> None:
        return None

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=3e-4)  # training happens in `vidact train`; LeRobot asks for a preset anyway

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("a vidact policy needs at least one VISUAL input feature")
