"""`vidact imagine` through the CLI on a tiny MetaWorld model: videos, metrics, bad input."""

from __future__ import annotations

import json
import math

import pytest

from vidact.cli import main


def test_imagine_writes_videos_and_metrics(metaworld_bundle, tmp_path):
    from torchcodec.decoders import VideoDecoder

    data = metaworld_bundle.parent / "data"
    out = tmp_path / "imagined"
    assert main(["imagine", str(metaworld_bundle), "--dataset", str(data), "--horizon", "8", "--steps", "2",
                 "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["actions"] == "recorded" and report["horizon"] == 8
    (episode,) = report["episodes"]
    # Stride 2: four imagined frames, 2..8 steps ahead of the start (step 2, the first whole history).
    assert [s["ahead"] for s in episode["steps"]] == [2, 4, 6, 8] and episode["start"] == 2
    assert all(math.isfinite(v) for s in episode["steps"] for k, v in s.items() if "moving" not in k)
    video = VideoDecoder(str(out / episode["video"]))
    assert video.metadata.num_frames == 5  # the start frame, then each imagined step
    assert video.metadata.width == 3 * video.metadata.height  # real | imagined | error

    assert (out / "filmstrip.png").is_file()
    # vidact report shows it: the error table per step ahead beside copy-last, the filmstrip, the videos.
    run = metaworld_bundle.parent / "run"
    assert main(["report", str(run), str(out), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.md").read_text()
    assert "## Imagined futures (recorded actions, 1 episodes)" in page
    assert "| 8 |" in page and "filmstrip.png" in page and episode["video"] in page

    # A run directory works as well as a bundle, and --policy rolls the model's own actions.
    out2 = tmp_path / "policy"
    assert main(["imagine", str(run), "--dataset", str(data), "--horizon", "4",
                 "--steps", "1", "--policy", "--out", str(out2)]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["actions"] == "policy"


@pytest.mark.parametrize("args, words", [
    (["--horizon", "0"], "positive"),
    (["--horizon", "3"], "multiple of the model's frame stride"),
    (["--horizon", "4", "--episodes", "7"], "no episode(s) [7]"),
    (["--horizon", "4000"], "no episode reaches"),
])
def test_imagine_bad_input_is_one_line(metaworld_bundle, tmp_path, capsys, args, words):
    data = metaworld_bundle.parent / "data"
    assert main(["imagine", str(metaworld_bundle), "--dataset", str(data), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact imagine: error:") and words in err and "\n" not in err, err


def test_imagine_rejects_a_dataset_that_does_not_match_the_model(bundle, metaworld_bundle, tmp_path, capsys):
    # The sliding-square bundle (16x16 grey, 2-dim state) against MetaWorld data (4-dim state).
    data = metaworld_bundle.parent / "data"
    assert main(["imagine", str(bundle), "--dataset", str(data), "--horizon", "4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.state_dim=2" in err and "\n" not in err, err
    assert main(["imagine", str(bundle), "--dataset", str(tmp_path / "nothing"), "--horizon", "4",
                 "--out", str(tmp_path)]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err
