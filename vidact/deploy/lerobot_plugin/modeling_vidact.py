"""``VidActPolicy``: LeRobot's ``PreTrainedPolicy`` around ``vidact.deploy.Policy``.

The network sits at ``self.model`` so the bundle's ``model.*`` safetensors keys load as they are.
LeRobot hands ``select_action`` a batch ``{"observation.image": [B,C,H,W] float, "observation.state":
[B,S], "task": [str]*B}`` at the env's resolution (480x480 for MetaWorld); ``vidact.deploy.Policy``
resizes, keeps the history, samples a chunk and executes it open loop.

With ``--policy.save_predicted_video=true`` (mode ``policy``) each new chunk's imagined frames are
left in ``last_predicted_latents`` for lerobot-eval, which writes them as ``pred_episode_N.mp4``
through ``decode_predicted_latents`` (LeRobot's hook for world-model policies). The "latents" are
pixels: the frames covering the executed steps, each held for its stride of control steps, so the
imagined video runs in step with the rollout; the batch's environments side by side.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

from vidact.bundle import POLICY_INFO_NAME, PRIMARY_IMAGE_KEY, network_config, read_info
from vidact.deploy.lerobot_plugin.configuration_vidact import VidActConfig
from vidact.deploy.policy import ObservationChecks, Policy
from vidact.generative.sample import SamplerConfig
from vidact.models import VidAct
from vidact.models import VidActConfig as NetworkConfig


class VidActPolicy(PreTrainedPolicy):
    config_class = VidActConfig
    name = "vidact"

    def __init__(self, config: VidActConfig, **kwargs):
        super().__init__(config)
        cameras = [k for k, ft in config.input_features.items() if ft.type.value == "VISUAL"]
        self.info = {"cameras": {"keys": cameras or [PRIMARY_IMAGE_KEY]}}
        bundle = Path(config.pretrained_path) if config.pretrained_path else None
        if bundle is not None and (bundle / POLICY_INFO_NAME).is_file():
            # A bundle: its text encoder / VAE configs and tokenizer are inside it, the weights in
            # model.safetensors (loaded next by LeRobot); nothing of the training machine is read.
            self.info = read_info(bundle)
            self.model = VidAct(network_config(bundle, config.vidact, self.info), component_weights=False)
        else:
            self.model = VidAct(NetworkConfig.from_dict(config.vidact))
        self._deploy: Policy | None = None
        self.last_predicted_latents: Tensor | None = None  # [B,C,F,H,W] in [0,1]; lerobot-eval takes them
        self._seen_chunk = None

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *args, config: VidActConfig | None = None, **kwargs):
        # lerobot-eval sets config.pretrained_path; a direct from_pretrained(path) may not.
        if config is None:
            config = VidActConfig.from_pretrained(pretrained_name_or_path)
        if not config.pretrained_path:
            config.pretrained_path = Path(pretrained_name_or_path)
        policy = super().from_pretrained(pretrained_name_or_path, *args, config=config, **kwargs)
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
        self.last_predicted_latents, self._seen_chunk = None, None

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict | None]:
        raise NotImplementedError("train vidact models with `vidact train`; this wrapper is for inference")

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        chunk = self.deploy.predict_chunk(self._observation(batch))
        return torch.as_tensor(chunk.actions)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        action = self.deploy.select_action(self._observation(batch))
        if self.config.save_predicted_video:
            self._keep_imagined_frames()
        return torch.as_tensor(action, device=batch_device(batch))

    def _keep_imagined_frames(self) -> None:
        chunk = self.deploy.last_chunk
        if chunk is None or chunk is self._seen_chunk or chunk.future_frames is None:
            return
        self._seen_chunk = chunk
        frames = torch.from_numpy(chunk.future_frames)  # [Tf,V,C,H,W] or [B,Tf,V,C,H,W]
        frames = frames if frames.dim() == 6 else frames[None]
        stride = self.model.config.future_frame_stride
        n = max(1, min(frames.shape[1], self.deploy.n_action_steps // stride))
        frames = torch.cat(frames[:, :n].unbind(2), dim=-1)  # views side by side: [B,n,C,H,V*W]
        frames = frames.repeat_interleave(stride, dim=1)  # one frame per control step
        self.last_predicted_latents = frames.permute(0, 2, 1, 3, 4)

    @staticmethod
    def decode_predicted_latents(latents: Tensor) -> Tensor:
        """[B,C,F,H,W] in [0,1] -> [F,H,B*W,3] uint8, the batch's environments side by side."""
        video = torch.cat(latents.unbind(0), dim=-1)  # [C,F,H,B*W]
        if video.shape[0] == 1:
            video = video.expand(3, -1, -1, -1)
        return (video[:3].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().to(torch.uint8)

    def _observation(self, batch: dict) -> dict:
        keys = [*self.deploy.camera_keys, self.deploy.state_key, "task"]
        return {k: (v.float().cpu() if isinstance(v, Tensor) else v) for k, v in batch.items() if k in keys}


def batch_device(batch: dict) -> torch.device:
    for value in batch.values():
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")
