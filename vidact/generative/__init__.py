"""The generative process (flow matching), kept apart from the network."""

from vidact.generative.loss import LossOutput, training_loss
from vidact.generative.sample import Sampler, SampleOutput, SamplerConfig
from vidact.generative.schedule import MODE_ROLES, GenerativeConfig, Mode, Role

__all__ = ["training_loss", "LossOutput", "Sampler", "SamplerConfig", "SampleOutput", "GenerativeConfig", "Mode",
           "Role", "MODE_ROLES"]
