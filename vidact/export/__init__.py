"""Checkpoint -> policy bundle. ``consolidate`` turns any training checkpoint into one state dict;
``package`` writes it in LeRobot's ``pretrained_model/`` layout for ``vidact.deploy``."""
