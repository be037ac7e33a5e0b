"""`vidact synth` through the CLI on a tiny MetaWorld model: first frames of new scenes in, imagined
episodes the judge accepts out, as a LeRobot dataset LeRobot's own class loads and `vidact train`
trains on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidact.cli import main

TASK = "button-press-topdown-v3"  # the metaworld_bundle fixture's task


@pytest.fixture(scope="module")
def starts(tmp_path_factory):
    """Three new MetaWorld scenes: one-frame episodes (the reset), as the synth help says to make them."""
    out = tmp_path_factory.mktemp("starts") / "starts"
    assert main(["data", "metaworld", "--tasks", TASK, "--episodes", "3", "--seed", "900", "--height", "32",
                 "--width", "32", "--max-steps", "1", "--keep-failed", "--out", str(out)]) == 0
    return out


def test_synth_writes_a_dataset_lerobot_loads_and_vidact_trains_on(judged_bundle, starts, trains_on, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "synthetic"
    # Threshold 0: the judge accepts the first imagined frame (a tiny judge's verdicts mean nothing).
    assert main(["synth", str(judged_bundle), "--start-frames", str(starts), "--episodes", "4", "--out", str(out),
                 "--threshold", "0", "--steps", "1", "--batch-size", "3", "--videos", "1", "--noise-scale", "0.5"]) == 0
    ds = LeRobotDataset("vidact/synthetic", root=out)
    assert ds.num_episodes == 4  # three starts, cycled with a fresh seed for the fourth
    meta = json.loads((out / "meta" / "vidact_synth.json").read_text())
    assert meta["accepted"] == 4 and meta["imagined"] == 6 and meta["frame_hold_steps"] == 2  # two batches of 3
    assert meta["noise_scale"] == 0.5
    assert [r["start"] for r in meta["rollouts"]] == ["episode 0", "episode 1", "episode 2"] * 2
    assert [r["written"] for r in meta["rollouts"]] == [True] * 4 + [False] * 2
    assert meta["rollouts"][3]["seed"] != meta["rollouts"][0]["seed"]
    assert (out / "previews" / "episode_000.mp4").stat().st_size > 0 and not (out / "previews" / "episode_001.mp4").exists()
    first, last = ds[0], ds[ds.meta.episodes[0]["dataset_to_index"] - 1]
    assert first["observation.image"].shape == (3, 32, 32) and first["action"].shape == (4,)
    assert bool(first["synthetic"]) and bool(last["next.success"]) and not bool(first["next.success"])
    assert first["task"] == "Press a button from the top"
    # The start state is the scene's real one.
    real = LeRobotDataset("vidact/starts", root=starts)[0]["observation.state"]
    np.testing.assert_allclose(first["observation.state"].numpy(), real.numpy(), rtol=1e-5)
    assert trains_on(out, tmp_path / "run")


def test_synth_keeps_rejected_rollouts_only_when_asked(judged_bundle, starts, tmp_path, capsys):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    args = ["synth", str(judged_bundle), "--start-frames", str(starts), "--episodes", "1", "--threshold", "1",
            "--max-steps", "6", "--max-attempts", "2", "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("vidact synth: error: the judge accepted none of 2 imagined rollouts"), err
    assert not (tmp_path / "none").exists()
    assert main([*args, "--out", str(tmp_path / "failed"), "--keep-failed"]) == 0
    ds = LeRobotDataset("vidact/failed", root=tmp_path / "failed")
    assert ds.num_episodes == 2 and ds.num_frames == 12  # whole 6-step rollouts, never flagged a success
    assert not any(bool(ds[i]["next.success"]) for i in range(ds.num_frames))


def test_synth_from_a_folder_of_images(judged_bundle, starts, tmp_path):
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from torchvision.io import write_png

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        frame = LeRobotDataset("vidact/starts", root=starts)[i]["observation.image"]
        write_png((frame * 255).round().to(torch.uint8), str(images / f"scene_{i}.png"))
    out = tmp_path / "from_images"
    assert main(["synth", str(judged_bundle), "--start-frames", str(images), "--instruction",
                 "Press a button from the top", "--fps", "80", "--episodes", "2", "--threshold", "0", "--steps", "1",
                 "--out", str(out)]) == 0
    ds = LeRobotDataset("vidact/from_images", root=out)
    assert ds.num_episodes == 2 and ds.fps == 80
    assert torch.isfinite(ds[0]["observation.state"]).all()  # read from the image by the judge


@pytest.mark.parametrize("which, words", [
    ("empty", "neither a LeRobot dataset"),
    ("no_judge", "has no judge"),
    ("images_no_instruction", "pass --instruction"),
    ("unknown_instruction", "no episode with instruction"),
    ("exists", "exists; pass --overwrite"),
    ("noise_scale", "noise_scale must be in [0, 10]"),
])
def test_synth_bad_input_is_one_line(judged_bundle, metaworld_bundle, starts, tmp_path, capsys, which, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    (tmp_path / "exists").mkdir()
    model = metaworld_bundle if which == "no_judge" else judged_bundle
    source = {"empty": tmp_path / "empty", "images_no_instruction": tmp_path / "images"}.get(which, starts)
    extra = {"unknown_instruction": ["--instruction", "Open a drawer"],
             "noise_scale": ["--noise-scale", "-1"]}.get(which, [])
    out = tmp_path / ("exists" if which == "exists" else "out")
    assert main(["synth", str(model), "--start-frames", str(source), "--episodes", "1", "--out", str(out),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact synth: error:") and words in err and "\n" not in err, err
