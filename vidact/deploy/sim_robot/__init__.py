"""Simulated robots behind LeRobot's ``Robot`` interface, for ``vidact drive`` without hardware.

``metaworld_sim``: a MetaWorld task (``--robot.type=metaworld_sim --robot.task=...``). Importing
this package registers the type in LeRobot's ``RobotConfig`` registry; LeRobot's own
``make_robot_from_config`` then finds ``MetaWorldSim`` here (its plugin lookup: the config's
module ``sim_robot.metaworld_sim`` -> the parent package ``sim_robot`` -> ``MetaWorldSim``).
"""

from vidact.deploy.sim_robot.metaworld_sim import MetaWorldSim, MetaWorldSimConfig

__all__ = ["MetaWorldSim", "MetaWorldSimConfig"]
