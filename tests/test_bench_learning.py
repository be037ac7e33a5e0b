"""bench/bench_learning.py: what it hands LeRobot's baselines."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_learning.py"


def test_lerobot_baselines_never_see_the_simulators_positions(tmp_path):
    """bench_learning's ACT / diffusion: on data with observation.environment_state (the reader arm's
    labels) their inputs are the camera and the state only, as the evaluation gives them; on data
    without it, LeRobot's own defaults."""
    spec = importlib.util.spec_from_file_location("bench_learning", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    features = {"observation.image": {"dtype": "video", "shape": [96, 80, 3]},
                "observation.state": {"dtype": "float32", "shape": [4]},
                "action": {"dtype": "float32", "shape": [4]}}
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"features": features}))
    assert bench.lerobot_inputs(str(tmp_path)) == []
    features["observation.environment_state"] = {"dtype": "float32", "shape": [6]}
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"features": features}))
    [flag] = bench.lerobot_inputs(str(tmp_path))
    assert flag.startswith("--policy.input_features=")
    assert json.loads(flag.split("=", 1)[1]) == {"observation.image": {"type": "VISUAL", "shape": [3, 96, 80]},
                                                 "observation.state": {"type": "STATE", "shape": [4]}}
