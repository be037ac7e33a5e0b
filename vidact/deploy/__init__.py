"""Run an exported bundle: no Lightning, DeepSpeed or omegaconf (a test checks this in a subprocess).

    from vidact.deploy import Policy
    policy = Policy.from_pretrained("bundle/")          # mode="policy_fast" by default
    action = policy.select_action({"observation.image": hwc_uint8, "observation.state": s, "task": "..."})
"""

from vidact.deploy.executors import OpenLoop, RealTimeChunking, TemporalEnsemble, build_executor
from vidact.deploy.policy import Chunk, ObservationChecks, ObservationError, Policy, UnsafeActionError

__all__ = ["Policy", "Chunk", "ObservationChecks", "ObservationError", "UnsafeActionError", "OpenLoop",
           "TemporalEnsemble", "RealTimeChunking", "build_executor"]
