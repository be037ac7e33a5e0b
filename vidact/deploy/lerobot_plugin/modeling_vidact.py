"""``VidActPolicy``: LeRobot's ``PreTrainedPolicy`` around ``vidact.deploy.Policy``.

The network sits at ``self.model`` so the bundle's ``model.*`` safetensors keys load as they are.
LeRobot hands ``select_action`` a batch ``{"observation.image": [B,C,H,W] float, "observation.state":
[B,S], "task": [str]*B}`` at the env's resolution (480x480 for MetaWorld); ``vidact.deploy.Policy``
resizes, keeps the history, samples a chunk and executes it open loop.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

from vidact.deploy.lerobot_plugin.configuration_vidact import VidActConfig
from vidact.deploy.policy import ObservationChecks, Policy
from vidact.export.package import POLICY_INFO_NAME
from vidact.generative.sample import SamplerConfig
from vidact.models import VidAct
from vidact.models import VidActConfig as NetworkConfig


class VidActPolicy(PreTrainedPolicy):
    config_class = VidActConfig
    name = "vidact"

    def __init__(self, config: VidActConfig, **kwargs):
        super().__init__(config)
        self.model = VidAct(NetworkConfig.from_dict(config.vidact))
        cameras = [k for k, ft in config.input_features.items() if ft.type.value == "VISUAL"]
        self.info = {"cameras": {"keys": cameras or ["observation.image"]}}
        self._deploy: Policy | None = None

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *args, **kwargs):
        policy = super().from_pretrained(pretrained_name_or_path, *args, **kwargs)
        info_path = Path(pretrained_name_or_path) / POLICY_INFO_NAME
        if info_path.is_file():  # action bounds, recorded camera sizes
            policy.info = json.loads(info_path.read_text())
        policy._deploy = None
        return policy

    @property
    def deploy(self) -> Policy:
        if self._deploy is None:
            self._deploy = Policy(self.model, SamplerConfig(**self.config.sampler), self.info, self.config.mode,
                                  n_action_steps=self.config.n_action_steps,
                                  checks=ObservationChecks(max_state_deviation=self.config.max_state_deviation))
        return self._deploy

    def get_optim_params(self) -> dict:
        return self.parameters()

    def reset(self) -> None:
        if self._deploy is not None:
            self._deploy.reset()

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict | None]:
        raise NotImplementedError("train vidact models with `vidact train`; this wrapper is for inference")

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        chunk = self.deploy.predict_chunk(self._observation(batch))
        return torch.as_tensor(chunk.actions)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        return torch.as_tensor(self.deploy.select_action(self._observation(batch)), device=batch_device(batch))

    def _observation(self, batch: dict) -> dict:
        keys = [*self.deploy.camera_keys, self.deploy.state_key, "task"]
        return {k: (v.float().cpu() if isinstance(v, Tensor) else v) for k, v in batch.items() if k in keys}


def batch_device(batch: dict) -> torch.device:
    for value in batch.values():
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")
