"""Any LeRobot v3 dataset trains with only its path given (issue 16, part 3): cameras at different
resolutions and aspect ratios, each fitted to the model's size on its own, and the model's views,
state and action sizes and camera keys taken from meta/info.json; settings that disagree with
the data are one-line config errors naming both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidact.cli import main
from vidact.config import ConfigError, load
from vidact.data.robot import RobotDataset

FRONT, WRIST = "observation.images.front", "observation.images.wrist"
FRONT_HW, WRIST_HW = (24, 40), (36, 28)  # a wide and a tall camera
FPS, LENGTH, STATE, ACTION = 15, 12, 14, 7
BORDER = 6  # bright columns at each side of the front camera: a center crop leaves them out


def front_frame(t: int) -> np.ndarray:
    frame = np.full((*FRONT_HW, 3), 10 * t, dtype=np.uint8)
    frame[:, :BORDER] = frame[:, -BORDER:] = 250
    return frame


@pytest.fixture(scope="module")
def two_camera_dataset(tmp_path_factory) -> Path:
    """Written by LeRobot's own writer: two cameras of different sizes, 14-d state, 7-d action, 15 fps."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vidact.data.codec import keep_scheduling

    root = tmp_path_factory.mktemp("anyds") / "bimanual"
    video = {"dtype": "video", "names": ["height", "width", "channels"]}
    features = {
        FRONT: {**video, "shape": (*FRONT_HW, 3)},
        WRIST: {**video, "shape": (*WRIST_HW, 3)},
        "observation.state": {"dtype": "float32", "shape": (STATE,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION,), "names": None},
    }
    ds = LeRobotDataset.create("test/bimanual", fps=FPS, features=features, root=root, use_videos=True)
    for episode in range(2):
        for t in range(LENGTH):
            ds.add_frame({FRONT: front_frame(t), WRIST: np.full((*WRIST_HW, 3), 200 - 10 * t, dtype=np.uint8),
                          "observation.state": np.arange(STATE, dtype=np.float32) + t + 100 * episode,
                          "action": np.linspace(-1, 1, ACTION, dtype=np.float32) * (t + 1),
                          "task": "fold the towel"})
        with keep_scheduling():  # LeRobot's AV1 encoder would leave pytest real-time
            ds.save_episode()
    with keep_scheduling():
        ds.finalize()
    return root


def _source(path: Path, extra: str = "") -> str:
    return f"data.sources=[{{kind: lerobot, path: '{path}'{extra}}}]"


def test_model_sizes_and_cameras_come_from_the_data(two_camera_dataset):
    cfg = load("debug_finetune_lerobot", [_source(two_camera_dataset)])
    assert (cfg.model.views, cfg.model.state_dim, cfg.model.action_dim) == (2, STATE, ACTION)
    assert cfg.data.sources[0].camera_keys == [FRONT, WRIST]
    one = load("debug_finetune_lerobot", [_source(two_camera_dataset, f", camera_keys: ['{WRIST}']")])
    assert one.model.views == 1 and one.data.sources[0].camera_keys == [WRIST]


@pytest.mark.parametrize("override, message", [
    ("model.state_dim=4", r"model.state_dim=4 \(override 'model.state_dim=4'\) but dataset .*bimanual has "
                          r"'observation.state' of 14 dims; set model.state_dim=14"),
    ("model.action_dim=2", r"model.action_dim=2 .* 'action' of 7 dims"),
    ("model.views=1", r"model.views=1 .* gives 2 camera\(s\) .*front.*wrist.*; choose 1 with data.sources\[0\].camera_keys"),
])
def test_a_setting_that_disagrees_with_the_data_names_both(two_camera_dataset, override, message):
    with pytest.raises(ConfigError, match=message):
        load("debug_finetune_lerobot", [_source(two_camera_dataset), override])


def test_a_fragment_setting_and_a_second_dataset_are_checked(two_camera_dataset, tmp_path):
    # sliding_square.yaml sets 1 view and 2-dim state/action: the error says which file.
    with pytest.raises(ConfigError, match=r"model.views=1 \(set in .*sliding_square.yaml\)"):
        load("debug_sliding_square", ["data.kind=lerobot", _source(two_camera_dataset)])
    # A second dataset must agree with what the first decided (only meta/info.json is read here).
    other = tmp_path / "other"
    (other / "meta").mkdir(parents=True)
    info = json.loads((two_camera_dataset / "meta" / "info.json").read_text())
    info["features"]["action"]["shape"] = [6]
    (other / "meta" / "info.json").write_text(json.dumps(info))
    sources = f"data.sources=[{{kind: lerobot, path: '{two_camera_dataset}'}}, {{kind: lerobot, path: '{other}'}}]"
    with pytest.raises(ConfigError, match=r"model.action_dim=7 \(from dataset .*bimanual\) but dataset .*other has "
                                          r"'action' of 6 dims"):
        load("debug_cotrain_mixture", [sources])
    with pytest.raises(ConfigError, match=r"camera_fit names \['observation.images.side'\]"):
        load("debug_finetune_lerobot", [_source(two_camera_dataset, ", camera_fit: {observation.images.side: resize}")])


@pytest.mark.parametrize("reader", ["vidact", "lerobot"])
def test_each_camera_is_fitted_on_its_own(two_camera_dataset, reader):
    cfg = load("debug_finetune_lerobot", [_source(two_camera_dataset)]).model
    resized = RobotDataset(two_camera_dataset, cfg, reader=reader)
    cropped = RobotDataset(two_camera_dataset, cfg, reader=reader, camera_fit={FRONT: "center_crop"})
    assert cropped.camera_fit == {FRONT: "center_crop", WRIST: "resize"}
    t = 5
    a, b = resized[t], cropped[t]
    assert a["obs_frames"].shape == (cfg.history, 2, 3, cfg.height, cfg.width)
    assert a["state"].shape == (cfg.history, STATE) and a["actions"].shape == (cfg.chunk_length, ACTION)
    front_resized, front_cropped = (x["obs_frames"][-1, 0].mean() * 255 for x in (a, b))
    wall = (2 * BORDER * 250 + (FRONT_HW[1] - 2 * BORDER) * 10 * t) / FRONT_HW[1]
    assert float(front_resized) == pytest.approx(wall, abs=6)  # the whole field of view, borders included
    assert float(front_cropped) == pytest.approx(10 * t, abs=6)  # the square middle only
    for x in (a, b):  # the tall wrist camera is resized either way
        assert float(x["obs_frames"][-1, 1].mean() * 255) == pytest.approx(200 - 10 * t, abs=3)


def test_fast_reader_matches_lerobot_with_mixed_camera_sizes(two_camera_dataset):
    cfg = load("debug_finetune_lerobot", [_source(two_camera_dataset)]).model
    fast = RobotDataset(two_camera_dataset, cfg, camera_fit={WRIST: "center_crop"})
    ref = RobotDataset(two_camera_dataset, cfg, reader="lerobot", camera_fit={WRIST: "center_crop"})
    for i in (0, 7, LENGTH + 3, len(fast) - 1):
        a, b = fast[i], ref[i]
        for k, v in a.items():
            assert torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k], (i, k)


@pytest.fixture(scope="module")
def trained_on_path_only(two_camera_dataset, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("anyds_run") / "run"
    assert main(["train", "debug_finetune_lerobot", _source(two_camera_dataset, f", camera_fit: {{{FRONT}: center_crop}}"),
                 "train.steps=2", "log.media_every=0", f"run_dir={run_dir}"]) == 0
    return run_dir


def test_vidact_train_with_only_the_path(trained_on_path_only):
    ckpt = torch.load(trained_on_path_only / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"]["model.action_out.weight"].shape[0] == ACTION
    assert ckpt["state_dict"]["model.state_proj.weight"].shape[1] == STATE
    assert ckpt["state_dict"]["model.view_emb"].shape[0] == 2
    saved = load(trained_on_path_only / "config.yaml")  # the resolved sizes, written down
    assert (saved.model.views, saved.model.state_dim, saved.model.action_dim) == (2, STATE, ACTION)


def test_vidact_train_mismatch_is_one_line(two_camera_dataset, tmp_path, capsys):
    assert main(["train", "debug_finetune_lerobot", _source(two_camera_dataset), "model.action_dim=4",
                 f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("vidact train: error: model.action_dim=4") and str(two_camera_dataset) in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bundle_acts_on_cameras_at_their_own_sizes(trained_on_path_only, tmp_path):
    from vidact.deploy.policy import Policy

    out = tmp_path / "bundle"
    assert main(["export", str(trained_on_path_only), str(out)]) == 0
    cameras = json.loads((out / "vidact_policy.json").read_text())["cameras"]
    assert cameras["keys"] == [FRONT, WRIST] and cameras["recorded_size"] == [list(FRONT_HW), list(WRIST_HW)]
    assert cameras["fit"] == {FRONT: "center_crop", WRIST: "resize"}
    policy = Policy.from_pretrained(out)
    assert policy.camera_fit == cameras["fit"]
    obs = {FRONT: front_frame(3), WRIST: np.full((*WRIST_HW, 3), 170, dtype=np.uint8),
           "observation.state": np.arange(STATE, dtype=np.float32) + 3, "task": "fold the towel"}
    chunk = policy.predict_chunk(obs)
    assert chunk.actions.shape == (policy.config.chunk_length, ACTION) and np.isfinite(chunk.actions).all()
    shutil.rmtree(out)
