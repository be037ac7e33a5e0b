"""Robot windows from LeRobot v3.0 datasets written by LeRobot's own writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vidact.data.normalize import compute_stats, dataset_stats, load_stats, save_stats
from vidact.data.robot import RobotDataset, delta_timestamps, lerobot_worker_init_fn
from vidact.errors import ConfigError
from vidact.models.configuration import VidActConfig
from vidact.tokenizers.action import Normalizer
from vidact.types import Batch, BatchSpec

CAMS = ["observation.images.a", "observation.images.b"]


def synth_cfg(**kw) -> VidActConfig:
    base = dict(height=32, width=32, views=2, history=2, future_frames=2, future_frame_stride=3, chunk_length=5,
                state_dim=3, action_dim=2)
    base.update(kw)
    return VidActConfig(**base)


def test_delta_timestamps_follow_model_config():
    cfg = synth_cfg(history=3, future_frames=2, future_frame_stride=4, chunk_length=3)
    dt = delta_timestamps(cfg, fps=10, camera_keys=["cam"], state_key="s", action_key="a")
    assert dt["cam"] == pytest.approx([-0.8, -0.4, 0.0, 0.4, 0.8])
    assert dt["s"] == pytest.approx([-0.8, -0.4, 0.0])
    assert dt["a"] == pytest.approx([0.0, 0.1, 0.2])


def test_windows_values_and_pad_masks(synthetic_dataset, synth_spec):
    cfg = synth_cfg()
    ds = RobotDataset(synthetic_dataset, cfg, camera_keys=CAMS)
    assert len(ds) == sum(synth_spec["lengths"])
    s = ds[0]  # first frame of episode 0: history runs past the start
    assert s["obs_is_pad"].tolist() == [True, False]
    assert s["state"][:, 1].tolist() == [0.0, 0.0]  # padded history repeats the edge frame
    assert s["actions"][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert not s["action_is_pad"].any() and s["has_actions"] is True
    assert s["text"] == "pick the red block"
    last = ds[synth_spec["lengths"][0] - 2]  # two frames before episode 0 ends
    assert last["action_is_pad"].tolist() == [False, False, True, True, True]
    assert last["actions"][:, 0].tolist() == [18, 19, 19, 19, 19]  # never crosses into episode 1
    assert last["future_is_pad"].tolist() == [True, True]
    s = ds[synth_spec["lengths"][0] + 10]  # episode 1, frame 10
    assert s["text"] == "open the drawer"
    assert s["state"][:, 1].tolist() == [7.0, 10.0]  # history spaced future_frame_stride apart
    # Camera a shows brightness 10*t, camera b 250-10*t: views stay in order, frames at the right times.
    means = s["future_frames"].mean(dim=(2, 3, 4)) * 255  # [Tf, V]
    assert means[:, 0] == pytest.approx([130, 160], abs=3)
    assert means[:, 1] == pytest.approx([120, 90], abs=3)
    assert s["obs_frames"].shape == (2, 2, 3, 32, 32)  # resized from 30x42


def test_fast_reader_matches_lerobot_getitem(synthetic_dataset):
    cfg = synth_cfg()
    fast = RobotDataset(synthetic_dataset, cfg, camera_keys=CAMS)
    ref = RobotDataset(synthetic_dataset, cfg, camera_keys=CAMS, reader="lerobot")
    for i in range(len(fast)):
        a, b = fast[i], ref[i]
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[k]), (i, k)
            else:
                assert v == b[k], (i, k)


def test_episode_subset(synthetic_dataset, synth_spec):
    ds = RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS, episodes=[1])
    assert len(ds) == synth_spec["lengths"][1]
    assert ds[0]["state"][-1, 0].item() == 1.0 and ds[0]["obs_is_pad"].tolist() == [True, False]


@pytest.mark.parametrize("reader", ["vidact", "lerobot"])
def test_first_steps_keeps_each_episodes_start_windows(synthetic_dataset, synth_spec, reader):
    full = RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS, reader=reader)
    starts = RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS, reader=reader, first_steps=3)
    first = synth_spec["lengths"][0]
    rows = [0, 1, 2, first, first + 1, first + 2]
    assert len(starts) == 3 * len(synth_spec["lengths"]) and starts.window_episodes.tolist()[:6] == [0, 0, 0, 1, 1, 1]
    for i, row in enumerate(rows):
        a, b = starts[i], full[row]
        assert all(torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k] for k, v in a.items()), (i, row)


def test_first_steps_is_checked():
    from vidact.data.config import SourceConfig

    with pytest.raises(ValueError, match="first_steps=0"):
        SourceConfig(path="x", first_steps=0).validate("data.sources[1]")


@pytest.mark.parametrize("reader", ["vidact", "lerobot"])
def test_dataloader_with_workers_after_main_process_decoded(synthetic_dataset, reader):
    cfg = synth_cfg()
    ds = RobotDataset(synthetic_dataset, cfg, camera_keys=CAMS, reader=reader)
    ds[3]  # decode in the parent first: the situation that breaks LeRobot's global decoder cache
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=Batch.collate, worker_init_fn=ds.worker_init_fn,
                        multiprocessing_context="fork")
    batches = list(loader)
    assert sum(b.batch_size for b in batches) == len(ds)
    BatchSpec(history=2, future=2, views=2, channels=3, height=32, width=32, state_dim=3, action_dim=2,
              chunk_length=5).check(batches[0], need_future=True, need_actions=True)
    assert batches[0].has_actions.all() and batches[0].source == ["synth"] * 4


def test_metaworld_dataset_loads_as_model_batches(metaworld_dataset):
    cfg = VidActConfig(height=32, width=32, views=2, history=2, future_frames=1, chunk_length=8)
    ds = RobotDataset(metaworld_dataset, cfg)
    assert ds.camera_keys == ["observation.image", "observation.images.topview"]
    batch = Batch.collate([ds[i] for i in range(0, len(ds), max(1, len(ds) // 4))])
    BatchSpec(history=2, future=1, views=2, channels=3, height=32, width=32, state_dim=4, action_dim=4,
              chunk_length=8).check(batch, need_future=True, need_actions=True)
    assert set(batch.text) == {"Press a button from the top"}


def test_config_mismatches_name_the_problem(synthetic_dataset, tmp_path):
    with pytest.raises(ConfigError, match="model.views=1 but dataset .* gives 2 camera"):
        RobotDataset(synthetic_dataset, synth_cfg(views=1))
    with pytest.raises(ConfigError, match="model.state_dim=4 but dataset .* 'observation.state' of 3 dims"):
        RobotDataset(synthetic_dataset, synth_cfg(state_dim=4), camera_keys=CAMS)
    with pytest.raises(ConfigError, match="no feature.*observation.images.c"):
        RobotDataset(synthetic_dataset, synth_cfg(views=1), camera_keys=["observation.images.c"])
    with pytest.raises(ConfigError, match="camera_fit names .*observation.images.c"):
        RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS, camera_fit={"observation.images.c": "resize"})
    with pytest.raises(FileNotFoundError, match="meta/info.json is missing"):
        RobotDataset(tmp_path, synth_cfg())
    with pytest.raises(ValueError, match="data.reader"):
        RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS, reader="fast")


def test_stats_exact_constant_dim_and_roundtrip(synthetic_dataset, synth_spec, tmp_path):
    ds = RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS)
    stats = dataset_stats(ds)
    frames = np.concatenate([np.arange(n) for n in synth_spec["lengths"]]).astype(float)
    assert stats["state"]["mean"][1] == pytest.approx(frames.mean())
    assert stats["state"]["q99"][1] == pytest.approx(np.quantile(frames, 0.99))
    assert stats["state"]["std"][2] == 0.0  # the constant dimension, kept exact
    assert stats["action"]["max"][0] == sum(synth_spec["lengths"]) - 1
    lerobot = dataset_stats(ds, "lerobot")  # LeRobot's stats.json, as its writer computed it
    assert lerobot["state"]["mean"][1] == pytest.approx(frames.mean(), rel=1e-4)
    path = save_stats(stats, tmp_path / "run" / "stats.json")
    assert load_stats(path) == stats
    for mode in ("mean_std", "quantile"):  # the constant dimension must not divide by zero
        norm = Normalizer(3, 2, mode)
        norm.set_stats(load_stats(path))
        x = norm.normalize("state", torch.tensor([[0.0, 5.0, 0.0]]))
        assert torch.isfinite(x).all() and x[0, 2] == 0


def test_compute_stats_rejects_empty():
    with pytest.raises(ValueError, match="non-empty"):
        compute_stats(np.zeros((0, 3)))


def test_lerobot_worker_init_gives_fresh_cache():
    from lerobot.datasets import video_utils

    before = video_utils._default_decoder_cache
    lerobot_worker_init_fn(0)
    assert video_utils._default_decoder_cache is not before


def test_fps_is_from_dataset(synthetic_dataset, synth_spec):
    ds = RobotDataset(synthetic_dataset, synth_cfg(), camera_keys=CAMS)
    assert ds.fps == synth_spec["fps"]
