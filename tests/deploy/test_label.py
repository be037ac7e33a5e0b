"""`vidact label` through the CLI on a tiny MetaWorld model: action-free videos in, a LeRobot
dataset with inferred actions out, which LeRobot's own class loads and `vidact train` trains on."""

from __future__ import annotations

import json

import pytest

from vidact.cli import main

TASK = "button-press-topdown-v3"  # the metaworld_bundle fixture's task


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two expert episodes as action-free mp4s + manifest, and the same episodes with their actions."""
    root = tmp_path_factory.mktemp("videos")
    assert main(["data", "metaworld", "--tasks", TASK, "--episodes", "2", "--seed", "300", "--height", "32",
                 "--width", "32", "--out", str(root / "data"), "--video-out", str(root / "videos")]) == 0
    return root


def test_label_writes_a_dataset_lerobot_loads_and_vidact_trains_on(judged_bundle, videos, trains_on, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "labelled"
    assert main(["label", str(judged_bundle), "--videos", str(videos / "videos" / "manifest.jsonl"), "--out", str(out),
                 "--labeller", "model", "--true-actions", str(videos / "data"), "--steps", "1"]) == 0
    ds, true = LeRobotDataset("vidact/labelled", root=out), LeRobotDataset("vidact/true", root=videos / "data")
    assert ds.num_episodes == 2 and ds.num_frames == true.num_frames
    item = ds[0]
    assert item["observation.image"].shape == (3, 32, 32) and item["action"].shape == (4,)
    assert item["observation.state"].shape == (4,) and item["task"] == true[0]["task"]
    meta = json.loads((out / "meta" / "vidact_labels.json").read_text())
    assert len(meta["episodes"]) == 2 and meta["labeller"] == "model" and meta["sampler_steps"] == 1
    assert 0 < meta["label_mae"] == pytest.approx(sum(e["label_mae"] for e in meta["episodes"]) / 2)
    assert meta["mean_action_mae"] > 0
    assert trains_on(out, tmp_path / "run")
    assert main(["label", str(judged_bundle), "--videos", str(videos / "videos"), "--out", str(out), "--labeller",
                 "model", "--instruction", true[0]["task"]]) == 2  # exists: refused without --overwrite


@pytest.mark.parametrize("which, words", [
    ("empty", "no video files"),
    ("missing", "does not exist"),
    ("no_judge", "has no judge with a state head"),
    ("no_caption", "has no caption; pass --instruction"),
])
def test_label_bad_input_is_one_line(judged_bundle, metaworld_bundle, videos, tmp_path, capsys, which, words):
    (tmp_path / "empty").mkdir()
    model = metaworld_bundle if which == "no_judge" else judged_bundle
    source = {"empty": tmp_path / "empty", "missing": tmp_path / "none.jsonl",
              "no_judge": videos / "videos" / "manifest.jsonl", "no_caption": videos / "videos"}[which]
    assert main(["label", str(model), "--videos", str(source), "--out", str(tmp_path / "out"), "--labeller", "model",
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact label: error:") and words in err and "\n" not in err, err


def test_label_says_when_it_resamples_a_video(judged_bundle, videos, tmp_path, capsys):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "half_rate"
    assert main(["label", str(judged_bundle), "--videos", str(videos / "videos" / "manifest.jsonl"), "--out", str(out),
                 "--fps", "40", "--labeller", "model", "--steps", "1"]) == 0
    said = capsys.readouterr().out
    assert said.count("resampled from 80 to 40 fps") == 2 and "resized" not in said, said
    full = LeRobotDataset("vidact/true", root=videos / "data")
    half = LeRobotDataset("vidact/half", root=out)
    assert half.fps == 40 and abs(half.num_frames - full.num_frames / 2) <= 2


def test_state_labeller_writes_a_dataset_with_its_fit(judged_bundle, videos, tmp_path):
    """--labeller state: the judge's read states, turned into actions by a network fitted on the demos
    (here the videos' own episodes). The written actions are the saved network applied to the
    written states, whatever the tiny judge's accuracy."""
    import numpy as np
    import pandas as pd
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.state_idm import StateInverseDynamics

    out = tmp_path / "state_labelled"
    assert main(["label", str(judged_bundle), "--videos", str(videos / "videos" / "manifest.jsonl"), "--out", str(out),
                 "--labeller", "state", "--demos", str(videos / "data"), "--idm-steps", "50",
                 "--true-actions", str(videos / "data")]) == 0
    ds = LeRobotDataset("vidact/state_labelled", root=out)
    assert ds.num_episodes == 2 and ds[0]["action"].shape == (4,)
    meta = json.loads((out / "meta" / "vidact_labels.json").read_text())
    assert meta["labeller"] == "state" and meta["fps"] == 80 and "sampler_steps" not in meta
    assert meta["state_idm"]["heldout"]["heldout_episodes"] == 1 and meta["state_idm"]["idm_steps"] == 50
    idm = StateInverseDynamics.from_saved(torch.load(out / "meta" / "state_idm.pt"))
    frames = pd.concat(pd.read_parquet(f) for f in sorted(out.glob("data/*/*.parquet"))).sort_values("index")
    for ep in range(2):
        rows = frames[frames.episode_index == ep]
        state, action = (torch.from_numpy(np.stack(rows[k].values)) for k in ("observation.state", "action"))
        assert len(rows) > 16 and torch.allclose(idm.infer(state), action, atol=1e-5)


@pytest.mark.parametrize("extra, words", [
    ([], "--labeller state (the default) needs --demos"),  # no --labeller: the state labeller
    (["--demos", "DATA", "--fps", "40"], "differs from the demos' control rate 80"),
    (["--demos", "MISSING"], "does not exist"),
    (["--demos", "DATA", "--state-noise", "-1"], "--state-noise must be >= 0"),
    (["--demos", "DATA", "--steps", "2"], "--steps belong(s) to --labeller model"),
])
def test_state_labeller_bad_input_is_one_line_and_keeps_the_old_dataset(judged_bundle, videos, tmp_path, capsys, extra,
                                                                        words):
    extra = [{"DATA": str(videos / "data"), "MISSING": str(tmp_path / "none")}.get(a, a) for a in extra]
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier dataset")
    assert main(["label", str(judged_bundle), "--videos", str(videos / "videos" / "manifest.jsonl"), "--out",
                 str(out), "--overwrite", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact label: error:") and words in err and "\n" not in err, err
    assert (out / "earlier.txt").is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_a_failure_while_labelling_keeps_the_old_dataset(judged_bundle, videos, tmp_path, capsys):
    """A video that cannot be read half way through: nothing of the new dataset lands in --out."""
    manifest = tmp_path / "manifest.jsonl"
    first = json.loads((videos / "videos" / "manifest.jsonl").read_text().splitlines()[0])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    entries = [dict(first, path=str(videos / "videos" / first["path"])), dict(first, path=str(broken))]
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier dataset")
    assert main(["label", str(judged_bundle), "--videos", str(manifest), "--out", str(out), "--overwrite",
                 "--labeller", "model", "--steps", "1"]) == 2
    assert "not a readable video" in capsys.readouterr().err
    assert (out / "earlier.txt").is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
