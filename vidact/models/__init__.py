"""The network: plain ``nn.Module``s. Importing this never imports Lightning, DeepSpeed or omegaconf."""

from vidact.models.configuration import FLAVORS, VidActConfig
from vidact.models.layout import AttentionRule, Group, TokenLayout
from vidact.models.vidact import Prediction, Prefix, VidAct, describe

__all__ = ["FLAVORS", "VidActConfig", "VidAct", "Prefix", "Prediction", "describe", "Group", "TokenLayout",
           "AttentionRule"]
