"""`vidact judge` and planning through the CLI on a tiny MetaWorld bundle: the judge trains on the
generated data and travels with the bundle, `vidact eval --planner` runs, the Python Policy with
one candidate is the plain policy, and bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidact.cli import main

TASK = "button-press-topdown-v3"  # the metaworld_bundle fixture's task


def test_judge_is_trained_evaluated_and_exported(judged_bundle, metaworld_bundle, tmp_path):
    report = json.loads((judged_bundle / "judge" / "judge_eval.json").read_text())
    held = report[f"heldout:{metaworld_bundle.parent / 'data'}"]
    # Real frames, and frames imagined 4 steps ahead beside the real frames of the same steps.
    assert held["imagined"]["frames"] == held["real"]["frames"] > 0
    assert 0 <= held["real_all_frames"]["value_mae"] <= 1 and len(held["real_all_frames"]["state_mae"]) == 4
    assert report["heldout_pooled"]["imagined"]["frames"] == held["imagined"]["frames"]  # one held-out dataset
    # --train-on-imagined adds the frames the model imagines from the training windows.
    data = metaworld_bundle.parent / "data"
    assert main(["judge", str(judged_bundle), "--datasets", str(data), "--steps", "2", "--every", "1",
                 "--train-on-imagined", "4", "--imagine-horizon", "4", "--sampler-steps", "1",
                 "--out", str(tmp_path / "judge2")]) == 0
    both = json.loads((tmp_path / "judge2" / "judge_eval.json").read_text())
    assert both["train_on_imagined"] == 4 and both["train"]["frames"] > report["train"]["frames"]
    # --imagined-frames all: every imagined frame of each window (stride 2, horizon 4: two per window).
    assert main(["judge", str(judged_bundle), "--datasets", str(data), "--steps", "2", "--every", "1",
                 "--train-on-imagined", "4", "--imagine-horizon", "4", "--imagined-frames", "all", "--sampler-steps",
                 "1", "--out", str(tmp_path / "judge3")]) == 0
    every = json.loads((tmp_path / "judge3" / "judge_eval.json").read_text())
    windows = both["train"]["frames"] - report["train"]["frames"]
    assert every["imagined_frames"] == "all" and every["train"]["frames"] == report["train"]["frames"] + 2 * windows
    # A run directory's judge goes into the bundle `vidact export` writes.
    run = tmp_path / "run"
    shutil.copytree(metaworld_bundle.parent / "run", run)
    shutil.copytree(judged_bundle / "judge", run / "judge")
    assert main(["export", str(run), str(tmp_path / "bundle")]) == 0
    info = json.loads((tmp_path / "bundle" / "vidact_policy.json").read_text())
    assert info["components"]["judge"] == "judge" and (tmp_path / "bundle" / "judge" / "judge.json").is_file()


def test_every_imagined_frame_is_labelled_as_its_real_step(judged_bundle, metaworld_bundle):
    """imagined_data(all_frames=True): frame k of each window stands for step t0 + (k + 1) * stride,
    and carries that step's real frame, state and value (the judge learns each imagined frame as
    the real one it stands for)."""
    from vidact.data.robot import RobotDataset
    from vidact.worldmodel.imagine import episode_windows, load_model
    from vidact.worldmodel.judge import episode_labels, imagined_data

    model, sampler_cfg = load_model(judged_bundle)
    sampler_cfg.steps = 1
    ds = RobotDataset(str(metaworld_bundle.parent / "data"), model.config)
    s = model.config.future_frame_stride
    imagined, real = imagined_data(model, sampler_cfg, ds, 2 * s, 3, seed=0, gamma=0.9, all_frames=True)
    frames, states, values = [], [], []
    for ep in sorted(ds.episode_lengths):
        t0s, data = episode_windows(ds, [ep], 2 * s, every=3).t0, ds.episode(ep)
        value, _ = episode_labels(data["success"], 0.9)
        for k in range(2):
            steps = [t0 + (k + 1) * s for t0 in t0s]
            frames.append((data["frames"][steps][:, 0] * 255).round().to(torch.uint8))
            states.append(data["state"][steps].float())
            values.append(value[steps])
    assert len(imagined.frames) == len(real.frames) == sum(len(f) for f in frames) > 0
    assert torch.equal(real.frames, torch.cat(frames)) and torch.equal(real.state, torch.cat(states))
    assert torch.equal(real.value, torch.cat(values)) and torch.equal(imagined.value, real.value)


@pytest.mark.parametrize("planner", [["best_of_n", "--candidates", "3", "--imagine-steps", "1"],
                                     ["cem", "--candidates", "4", "--cem-iterations", "1"],
                                     ["best_of_n", "--candidates", "2", "--plan-horizon", "2", "--plan-score", "mean",
                                      "--noise-scale", "0", "--plan-noise-scale", "0.5"]])
def test_eval_plans_with_the_bundles_judge(judged_bundle, tmp_path, planner):
    out = tmp_path / "eval"
    assert main(["eval", str(judged_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "6", "--steps", "1",
                 "--videos", "0", "--out", str(out), "--planner", *planner]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["planner"]["kind"] == planner[0] and results["planner"]["candidates"] == int(planner[2])
    assert results["planner"]["imagine_steps"] == (1 if "--imagine-steps" in planner else None)
    assert results["planner"]["horizon"] == (2 if "--plan-horizon" in planner else 1)
    assert results["planner"]["score"] == ("mean" if "--plan-score" in planner else "last")
    assert results["planner"]["noise_scale"] == (0.5 if "--plan-noise-scale" in planner else None)
    assert results["mean_chunk_ms"] > 0 and results["per_episode"][0]["chunks"] >= 1


def test_eval_plans_with_another_models_imagination_and_judge(metaworld_bundle, judged_bundle, tmp_path):
    """A bundle without a judge plans with --plan-model: that world model imagines, its judge scores."""
    out = tmp_path / "eval"
    assert main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "6", "--steps", "1",
                 "--videos", "0", "--out", str(out), "--planner", "best_of_n", "--candidates", "2",
                 "--plan-model", str(judged_bundle), "--plan-margin", "0.01"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["planner"]["world_model"] == str(judged_bundle) and results["planner"]["margin"] == 0.01
    episode = results["per_episode"][0]
    assert episode["chunks"] >= 1 and len(episode["plan_scores"]) == episode["chunks"]  # each chunk's candidates
    assert all(len(scores) == 2 for scores in episode["plan_scores"])


def test_one_candidate_is_the_plain_policy(judged_bundle):
    from vidact.deploy.planner import PlannerConfig
    from vidact.deploy.policy import Policy

    plain = Policy.from_pretrained(judged_bundle, steps=2)
    planned = Policy.from_pretrained(judged_bundle, steps=2, planner=PlannerConfig("best_of_n", 1))
    assert planned.planner is not None and planned.judge is not None  # the bundle's own judge
    rng = np.random.default_rng(0)
    for _ in range(6):
        obs = {"observation.image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
               "observation.state": rng.normal(size=4).astype(np.float32) * 0.1, "task": plain.info.get("task", "")}
        obs["task"] = planned.judge.config.tasks[0]
        np.testing.assert_array_equal(plain.select_action(obs), planned.select_action(obs))
    assert planned.last_chunk.scores.shape == (1,)


@pytest.mark.parametrize("extra, words", [
    (["--planner", "best_of_n"], "has no judge to plan with"),
    (["--planner", "best_of_n", "--candidates", "0"], "--candidates must be >= 1"),
    (["--goal-image", "GOAL"], "--goal-image only applies with --planner"),
    (["--plan-horizon", "2"], "--plan-horizon only applies with --planner"),
    (["--plan-noise-scale", "1"], "--plan-noise-scale only applies with --planner"),
    (["--planner", "best_of_n", "--plan-horizon", "0", "--goal-image", "GOAL"], "--plan-horizon must be >= 1, got 0"),
    (["--planner", "best_of_n", "--goal-image", "GOAL"], "goal-image is [1, 3, 16, 16]"),
    (["--planner", "best_of_n", "--goal-image", "NOFILE"], "no such file"),
    (["--plan-model", "NOFILE"], "--plan-model only applies with --planner"),
    (["--plan-margin", "0.1"], "--plan-margin only applies with --planner"),
    (["--planner", "best_of_n", "--plan-model", "NOFILE"], "none.png does not exist"),
])
def test_planning_bad_input_is_one_line(metaworld_bundle, tmp_path, capsys, extra, words):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "goal.png")
    extra = [str(tmp_path / "goal.png") if e == "GOAL" else str(tmp_path / "none.png") if e == "NOFILE" else e
             for e in extra]
    assert main(["eval", str(metaworld_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "2",
                 "--out", str(tmp_path / "eval"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact eval: error:") and words in err and "\n" not in err, err


def test_a_judge_for_other_instructions_is_refused_in_one_line(judged_bundle, tmp_path, capsys):
    from vidact.worldmodel.judge import Judge, JudgeConfig

    Judge(JudgeConfig(channels=3, height=32, width=32, tasks=["stack the cups"], width_mult=4)).save(tmp_path / "j")
    assert main(["eval", str(judged_bundle), "--task", TASK, "--episodes", "1", "--max-steps", "2", "--steps", "1",
                 "--out", str(tmp_path / "eval"), "--planner", "best_of_n", "--judge", str(tmp_path / "j")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not trained on instruction(s)" in err and "stack the cups" in err and "\n" not in err, err


def test_judge_bad_input_is_one_line(metaworld_bundle, tmp_path, capsys):
    assert main(["judge", str(metaworld_bundle), "--datasets", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact judge: error:") and "does not exist" in err and "\n" not in err, err
    assert main(["judge", str(metaworld_bundle), "--datasets", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps and --every must be >= 1" in capsys.readouterr().err
    assert main(["judge", str(metaworld_bundle), "--datasets", str(tmp_path), "--imagined-frames", "all"]) == 2
    assert "--imagined-frames only applies with --train-on-imagined" in capsys.readouterr().err


def test_eval_inside_the_world_model_writes_results_and_videos(judged_bundle, metaworld_bundle, tmp_path):
    """--env world_model: episodes start from the dataset's real first frames, run in imagination,
    the judge deciding success; results.json and videos as the simulator evaluation writes them."""
    data, out = metaworld_bundle.parent / "data", tmp_path / "imagined"
    assert main(["eval", str(judged_bundle), "--env", "world_model", "--world-model", str(judged_bundle),
                 "--dataset", str(data), "--task", TASK, "--episodes", "3", "--batch-size", "2", "--max-steps", "8",
                 "--steps", "1", "--videos", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["env"] == "world_model" and results["episodes"] == 3 and results["seconds_per_episode"] > 0
    assert [r["start_episode"] for r in results["per_episode"]] == [0, 0, 0]  # one episode in the data, cycled
    assert all(r["length"] <= 8 and r["length"] % 2 == 0 for r in results["per_episode"])  # on the stride-2 grid
    for r in results["per_episode"]:  # the judge's reading of every imagined frame, the verdict its first crossing
        curve = r["done_curve"]
        assert 1 <= len(curve) <= 4 and all(0 <= p <= 1 for p in curve)
        assert r["success"] == any(p > 0.5 for p in curve)
    videos = [r for r in results["per_episode"] if "video" in r]
    assert len(videos) == 1 and Path(videos[0]["video"]).is_file()


@pytest.mark.parametrize("which, words", [
    ("no_judge", "has no judge to decide success"),
    ("mismatch", "the policy and the world model differ (channels 1 vs 3; image size 16x16 vs 32x32"),
    ("no_dataset", "needs --world-model RUN"),
])
def test_eval_inside_the_world_model_bad_input_is_one_line(judged_bundle, metaworld_bundle, bundle, tmp_path, capsys,
                                                          which, words):
    data = metaworld_bundle.parent / "data"
    policy, world = {"no_judge": (judged_bundle, metaworld_bundle), "mismatch": (bundle, judged_bundle),
                     "no_dataset": (judged_bundle, judged_bundle)}[which]
    extra = [] if which == "no_dataset" else ["--dataset", str(data)]
    assert main(["eval", str(policy), "--env", "world_model", "--world-model", str(world), *extra, "--episodes", "1",
                 "--max-steps", "2", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact eval: error:") and words in err and "\n" not in err, err
