"""Importing this registers the ``vidact`` policy type with LeRobot (see vidact.deploy.lerobot_plugin)."""

from vidact.deploy.lerobot_plugin import VidActConfig  # noqa: F401  (registration side effect)
