"""Pre/post-processors for ``vidact`` policies: rename + device only (normalization is inside the
network's buffers, so LeRobot's NormalizerProcessorStep would apply it twice)."""

from __future__ import annotations

from lerobot.processor import DeviceProcessorStep, PolicyProcessorPipeline, RenameObservationsProcessorStep
from lerobot.processor.converters import (batch_to_transition, policy_action_to_transition,
                                          transition_to_batch, transition_to_policy_action)
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME


def make_vidact_pre_post_processors(config, dataset_stats=None):
    device = config.device or "cpu"
    pre = PolicyProcessorPipeline(steps=[RenameObservationsProcessorStep(rename_map={}),
                                         DeviceProcessorStep(device=device)],
                                  name=POLICY_PREPROCESSOR_DEFAULT_NAME, to_transition=batch_to_transition,
                                  to_output=transition_to_batch)
    post = PolicyProcessorPipeline(steps=[DeviceProcessorStep(device="cpu")], name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
                                   to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    return pre, post


def save_processors(config, directory) -> None:
    """Write ``policy_preprocessor.json`` / ``policy_postprocessor.json`` (what lerobot-eval loads)."""
    pre, post = make_vidact_pre_post_processors(config)
    pre.save_pretrained(directory)
    post.save_pretrained(directory)
