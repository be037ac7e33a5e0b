"""The model as a world model: autoregressive rollouts (``vidact imagine``), frame metrics and a
state probe that reads the arm's position from imagined frames."""

from vidact.worldmodel.rollout import RolloutError, RolloutOutput, RolloutStart, rollout

__all__ = ["rollout", "RolloutStart", "RolloutOutput", "RolloutError"]
