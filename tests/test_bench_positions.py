"""bench/bench_positions.py: success split by where the task's object started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_positions.py"


def test_success_is_split_by_the_objects_start(tmp_path):
    """A known answer: every object left of x=0 failed, every one right of it succeeded."""
    results = tmp_path / "seed0" / "arm" / "eval" / "button-press-topdown-v3" / "results.json"
    results.parent.mkdir(parents=True)
    starts = [[-0.08, 0.80, 0.3], [-0.02, 0.85, 0.3], [0.01, 0.82, 0.3], [0.06, 0.88, 0.3], [0.09, 0.81, 0.3]]
    episodes = [{"seed": i, "success": s[0] > 0, "length": 50, "object_start": s} for i, s in enumerate(starts)]
    results.write_text(json.dumps({"task": "button-press-topdown-v3", "per_episode": episodes}))
    plot = tmp_path / "positions.png"
    out = subprocess.run([sys.executable, str(SCRIPT), str(results), "--bins", "0", "--plot", str(plot)],
                         capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if "seed0" in line)
    assert "[-inf, +0): 0/2" in row and "[+0, +inf): 3/3" in row
    assert Image.open(plot).size[0] > 200


def test_missing_results_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.json")], capture_output=True, text=True)
    assert proc.returncode != 0 and "results not found" in proc.stderr and "Traceback" not in proc.stderr
