import json
import subprocess
import sys

from PIL import Image

from vidact.report import read_metrics, write_report


def test_report_from_a_real_training_run(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "vidact.cli", "train", "debug_sliding_square", f"run_dir={run}",
                          "train.steps=3", "train.log_every=1", "train.batch_size=4", "log.wandb=disabled"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    series = read_metrics(run)
    assert [s for s, _ in series["train/loss"]] == [0, 1, 2]

    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({  # the summary `vidact eval` writes (vidact/deploy/sim.py)
        "task": "drawer-open-v3", "successes": 7, "episodes": 10, "success_rate": 0.7, "wilson95": [0.397, 0.892],
        "mean_episode_length": 88.0, "mode": "policy", "per_episode": [{"video": str(ev / "episode_000.mp4")}]}))
    report = write_report(run, [ev], tmp_path / "report")
    text = report.read_text()
    assert "| drawer-open-v3 | 7/10 (70%) | [40%, 89%] | 88 | policy |" in text
    assert "[episode_000.mp4](../eval/episode_000.mp4)" in text  # relative: the folder can be moved
    assert "![training curves](training_curves.png)" in text
    img = Image.open(tmp_path / "report" / "training_curves.png")
    assert img.size == (720, 360) and len(set(img.getdata())) > 2  # something was drawn
