"""`vidact data metaworld` and `vidact data inspect` on real MetaWorld + MuJoCo + LeRobot's writer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vidact.data.commands import inspect_dataset, main


def test_generated_dataset_follows_lerobot_metaworld_conventions(metaworld_dataset):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    ds = LeRobotDataset("local/button", root=metaworld_dataset)
    assert ds.meta.total_episodes == 2 and ds.fps == 80
    assert set(ds.meta.camera_keys) == {"observation.image", "observation.images.topview"}
    assert ds.meta.features["observation.image"]["shape"] == (32, 32, 3)
    assert list(ds.meta.tasks.index) == [TASK_DESCRIPTIONS["button-press-topdown-v3"]]
    episodes = ds.meta.episodes
    for ep in range(2):
        last = episodes[ep]["dataset_to_index"] - 1
        item = ds[last]
        assert bool(item["next.success"].item())  # only successful episodes are kept, ending at success
        assert not ds[episodes[ep]["dataset_from_index"]]["next.success"].item()
    actions = np.stack(ds.hf_dataset.with_format("numpy")["action"])
    assert np.abs(actions).max() <= 1.0  # clipped to the action space the env executes
    frame = ds[0]["observation.image"]  # [C,H,W] float: a rendered scene, not a blank image
    assert frame.shape == (3, 32, 32) and frame.std() > 0.02
    videos = (metaworld_dataset.parent / "videos" / "manifest.jsonl").read_text().splitlines()
    assert len(videos) == 2 and json.loads(videos[0])["caption"] == TASK_DESCRIPTIONS["button-press-topdown-v3"]


def test_generation_is_seeded_and_reproducible(metaworld_dataset, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "again"
    assert main(["metaworld", "--tasks", "button-press-topdown-v3", "--episodes", "1", "--out", str(out),
                 "--height", "32", "--width", "32", "--seed", "3"]) == 0
    first = LeRobotDataset("local/a", root=metaworld_dataset, episodes=[0]).hf_dataset.with_format("numpy")
    again = LeRobotDataset("local/b", root=out).hf_dataset.with_format("numpy")
    np.testing.assert_array_equal(np.stack(first["action"]), np.stack(again["action"]))
    np.testing.assert_array_equal(np.stack(first["observation.state"]), np.stack(again["observation.state"]))


def test_steps_after_success_extends_the_same_episode(metaworld_dataset, tmp_path):
    """--steps-after-success N: the expert goes on N steps past its first success (long held-out
    episodes for world-model rollouts); the episode up to the success is the one recorded without it."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "longer"
    assert main(["metaworld", "--tasks", "button-press-topdown-v3", "--episodes", "1", "--out", str(out),
                 "--height", "32", "--width", "32", "--seed", "3", "--steps-after-success", "5"]) == 0
    short = LeRobotDataset("local/a", root=metaworld_dataset, episodes=[0]).hf_dataset.with_format("numpy")
    longer = LeRobotDataset("local/b", root=out).hf_dataset.with_format("numpy")
    n = len(short["action"])
    assert len(longer["action"]) == n + 5
    np.testing.assert_array_equal(np.stack(longer["action"])[:n], np.stack(short["action"]))
    success = np.stack(longer["next.success"]).ravel()
    assert not success[: n - 1].any() and success[n - 1]


def test_lerobot_camera_records_what_lerobot_eval_shows_the_policy(tmp_path):
    """--camera lerobot: the recorded frame is LeRobot's env observation for the same seed (what
    lerobot-eval hands a policy), resized as the policy resizes it, up to the video codec; the
    fast default rendering is visibly another image (other lighting, black sky)."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.envs.metaworld import MetaworldEnv

    from vidact.data.transforms import fit_frames

    def first_frame(camera: str) -> torch.Tensor:
        out = tmp_path / camera
        assert main(["metaworld", "--tasks", "button-press-topdown-v3", "--episodes", "1", "--out", str(out),
                     "--height", "48", "--width", "48", "--seed", "3", "--max-steps", "4", "--keep-failed",
                     "--camera", camera]) == 0
        return LeRobotDataset("local/c", root=out)[0]["observation.image"]

    env = MetaworldEnv("button-press-topdown-v3", obs_type="pixels_agent_pos")
    try:
        pixels = env.reset(seed=3)[0]["pixels"]  # 480x480 uint8, as lerobot-eval renders it
    finally:
        env.close()
    assert pixels.shape == (480, 480, 3)
    seen = fit_frames(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255, 48, 48, "resize")[0]
    lerobot_error = (first_frame("lerobot") - seen).abs().mean().item()
    vidact_error = (first_frame("vidact") - seen).abs().mean().item()
    assert lerobot_error < 8 / 255, lerobot_error  # measured 3.7/255: the video codec (AV1, crf 30)
    assert vidact_error > 20 / 255, vidact_error
    assert main(["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(tmp_path / "x"),
                 "--camera", "lerobot", "--cameras", "corner2", "topview"]) == 2


def test_frames_too_small_for_av1_are_written_with_h264(tmp_path, capsys):
    """libsvtav1 dies (SIGFPE, nothing written) under 32 pixels: the default codec is then h264, whose
    videos LeRobot reads back; libsvtav1 asked for explicitly is a one-line error before any work."""
    import json

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "small"
    assert main(["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(out), "--height", "16",
                 "--width", "16", "--seed", "3", "--max-steps", "3", "--keep-failed"]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.image"]["info"]["video.codec"] == "h264"
    assert LeRobotDataset("local/small", root=out)[2]["observation.image"].shape == (3, 16, 16)
    capsys.readouterr()
    assert main(["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(tmp_path / "av1"), "--height",
                 "24", "--width", "24", "--vcodec", "libsvtav1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--vcodec libsvtav1 cannot encode 24x24 frames" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "av1").exists()


def test_parallel_generation_writes_the_one_process_dataset(tmp_path):
    """--workers 2: one process per task, joined by LeRobot's aggregate_datasets, gives the episodes
    (seeds, actions, states, tasks, order) of a one-process run, and one video manifest; with
    --action-free, the extra episodes are videos only, their actions withheld beside them."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    def generate(workers: int) -> LeRobotDataset:
        out = tmp_path / f"w{workers}"
        assert main(["metaworld", "--tasks", "button-press-topdown-v3", "reach-v3", "--episodes", "1",
                     "--out", str(out), "--height", "32", "--width", "32", "--seed", "3", "--workers", str(workers),
                     "--video-out", str(tmp_path / f"videos{workers}"), "--action-free", "1"]) == 0
        return LeRobotDataset("local/p", root=out)

    one, two = generate(1), generate(2)
    assert two.meta.total_episodes == 2 and not (tmp_path / "w2.parts").exists()
    assert list(two.meta.tasks.index) == list(one.meta.tasks.index)
    a, b = (ds.hf_dataset.with_format("numpy") for ds in (one, two))
    for key in ("action", "observation.state", "episode_index", "task_index"):
        np.testing.assert_array_equal(np.stack(a[key]), np.stack(b[key]))
    last = two.meta.episodes[1]["dataset_to_index"] - 1
    assert two[last]["observation.image"].shape == (3, 32, 32) and two[last]["next.success"].item()
    assert (tmp_path / "videos2" / "manifest.jsonl").read_text() == (tmp_path / "videos1" / "manifest.jsonl").read_text()
    manifest = [json.loads(line) for line in (tmp_path / "videos2" / "manifest.jsonl").read_text().splitlines()]
    assert [m["path"] for m in manifest] == ["button-press-topdown-v3_seed4.mp4", "reach-v3_seed100004.mp4"]
    held = [LeRobotDataset("local/h", root=tmp_path / f"videos{w}" / "withheld_actions") for w in (1, 2)]
    assert held[1].meta.total_episodes == 2
    np.testing.assert_array_equal(np.stack(held[0].hf_dataset.with_format("numpy")["action"]),
                                  np.stack(held[1].hf_dataset.with_format("numpy")["action"]))
    assert not np.array_equal(np.stack(held[1].hf_dataset.with_format("numpy")["action"])[:5], np.stack(b["action"])[:5])
    assert json.loads((tmp_path / "w2" / "meta" / "vidact_generation.json").read_text())["summary"] == \
        json.loads((tmp_path / "w1" / "meta" / "vidact_generation.json").read_text())["summary"]


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["metaworld", "--tasks", "no-such-task-v3", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown MetaWorld task(s) ['no-such-task-v3']" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert main(["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(tmp_path / "exists")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--action-free", "2", "--out",
                 str(tmp_path / "y")]) == 2
    assert "--action-free needs --video-out" in capsys.readouterr().err


# MetaWorld's MT10 (Yu et al. 2019, "Meta-World", Table of MT10 tasks), in the package's v3 names.
MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


def test_benchmark_task_lists_are_metaworlds():
    import metaworld.env_dict
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    from vidact.data.metaworld import benchmark_tasks, resolve_tasks

    assert benchmark_tasks("MT10") == MT10 == resolve_tasks(None, "mt10")
    mt50 = benchmark_tasks("MT50")
    assert len(set(mt50)) == 50 and mt50 == list(metaworld.env_dict.ALL_V3_ENVIRONMENTS)
    assert all(t.endswith("-v3") and t in TASK_DESCRIPTIONS for t in mt50) and set(MT10) < set(mt50)
    assert resolve_tasks(["reach-v3", "push-v3"], None) == ["reach-v3", "push-v3"]


@pytest.mark.parametrize("args,message", [
    (["--benchmark", "MT11"], "--benchmark: unknown MetaWorld benchmark 'MT11'; known: MT10, MT25, MT50"),
    (["--benchmark", "MT10", "--tasks", "reach-v3"], "give --tasks or --benchmark, not both"),
    ([], "give --tasks (MetaWorld task names) or --benchmark (MT10, MT25, MT50)"),
    (["--tasks", "reach-v3", "reach-v3"], "a task is named twice"),
    (["--tasks", "reach-v3", "push-v3", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["--tasks", "reach-v3", "--height", "15", "--width", "16"], "15x16 frames: under 32 pixels only h264"),
    (["--tasks", "reach-v3", "--height", "16", "--width", "16", "--vcodec", "auto"], "--vcodec auto cannot encode"),
])
def test_task_list_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["metaworld", *args, "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidact data metaworld: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_benchmark_writes_every_task_with_its_instruction(tmp_path, capsys):
    """--benchmark MT10: one dataset, MetaWorld's ten tasks in order, each with LeRobot's instruction;
    the expert's success per task is printed and kept in meta/vidact_generation.json."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    out = tmp_path / "mt10"
    # Two-step episodes kept although unfinished: the task list and bookkeeping, not the expert, are tested.
    assert main(["metaworld", "--benchmark", "MT10", "--episodes", "1", "--max-steps", "2", "--keep-failed",
                 "--workers", "1", "--height", "32", "--width", "32", "--out", str(out)]) == 0
    meta = LeRobotDatasetMetadata("local/mt10", root=out)
    assert meta.total_episodes == 10 and list(meta.tasks.index) == [TASK_DESCRIPTIONS[t] for t in MT10]
    generation = json.loads((out / "meta" / "vidact_generation.json").read_text())
    assert generation["config"]["benchmark"] == "MT10" and generation["config"]["tasks"] == MT10
    assert generation["summary"] == {t: {"kept": 1, "tried": 1, "expert_successes": 0} for t in MT10}
    printed = capsys.readouterr().out
    assert "peg-insert-side-v3       expert succeeded in 0 of 1 episodes tried, kept 1" in printed


def test_inspect_summary(metaworld_dataset, capsys):
    assert main(["inspect", str(metaworld_dataset)]) == 0
    out = capsys.readouterr().out
    assert "episodes 2" in out and "fps 80" in out and "Press a button from the top" in out
    assert "observation.images.topview" in out and "q99" in out
    s = inspect_dataset(metaworld_dataset)
    assert s["frames"] == sum([s["episode_length"]["min"], s["episode_length"]["max"]])


@pytest.mark.parametrize("damage,message", [
    ("no_info", "meta/info.json is missing"),
    ("bad_json", "is not valid JSON"),
    ("frames", "info.json says"),
    ("no_video", "missing video files"),
    ("no_data", "no parquet files under data/"),
])
def test_inspect_malformed_exits_nonzero(metaworld_dataset, tmp_path, capsys, damage, message):
    root = tmp_path / "broken"
    shutil.copytree(metaworld_dataset, root)
    info = root / "meta" / "info.json"
    if damage == "no_info":
        info.unlink()
    elif damage == "bad_json":
        info.write_text("{ not json")
    elif damage == "frames":
        data = json.loads(info.read_text())
        data["total_frames"] += 5
        info.write_text(json.dumps(data))
    elif damage == "no_video":
        shutil.rmtree(root / "videos" / "observation.images.topview")
    elif damage == "no_data":
        shutil.rmtree(root / "data")
    assert main(["inspect", str(root)]) == 1
    err = capsys.readouterr().err
    assert "malformed dataset" in err and message in err
