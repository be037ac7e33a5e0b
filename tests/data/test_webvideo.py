"""Web video clips from real mp4 files (PyAV / ffmpeg encoded), including broken ones."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest
import torch

from vidact.data.webvideo import WebVideoDataset, read_manifest
from vidact.models.configuration import VidActConfig
from vidact.types import Batch, BatchSpec

GOOD = 3  # the first three manifest entries decode; the other four are broken


def cfg(**kw) -> VidActConfig:
    base = dict(height=24, width=24, history=2, future_frames=2, future_frame_stride=1, chunk_length=4)
    base.update(kw)
    return VidActConfig(**base)


def frame_numbers(frames: torch.Tensor) -> torch.Tensor:
    """Invert conftest.counting_frames: frame k is gray 8*k."""
    return (frames.mean(dim=(-3, -2, -1)) * 255 / 8).round()


@pytest.mark.parametrize("index,source_fps", [(0, 25.0), (1, 30000 / 1001), (2, 12.0)])
def test_clip_resampled_to_target_fps(video_dir, index, source_fps):
    ds = WebVideoDataset(read_manifest(video_dir / "manifest.jsonl"), cfg(), fps=6.0)
    s = ds.load(index)  # odd sizes (37x53, 121x77, 45x61), H.264 and AV1, 3 frame rates
    assert s["obs_frames"].shape == (2, 1, 3, 24, 24) and s["future_frames"].shape == (2, 1, 3, 24, 24)
    clip = torch.cat([s["obs_frames"], s["future_frames"]])[:, 0]
    k = frame_numbers(clip)
    # 4 frames 1/6 s apart: source frame numbers advance by source_fps / 6 each step.
    steps = k[1:] - k[:-1]
    assert (steps - source_fps / 6).abs().max() <= 1.0, k
    assert s["has_actions"] is False and s["action_is_pad"].all() and s["text"] == ["odd size", "ntsc rate",
                                                                                  "av1 clip"][index]


def test_broken_files_are_skipped_counted_and_named(video_dir, caplog):
    ds = WebVideoDataset.from_source(video_dir / "manifest.jsonl", cfg(), fps=6.0)
    with caplog.at_level(logging.WARNING, logger="vidact.data.webvideo"):
        samples = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 4
    for name in ("not_a_video.mp4", "truncated.mp4", "truncated_faststart.mp4", "missing.mp4"):
        assert any(name in r.getMessage() for r in caplog.records), name
    assert "4 unreadable so far" in caplog.records[-1].getMessage()
    # broken entries were replaced by readable ones (the next entries, wrapping around)
    assert [s["text"] for s in samples[GOOD:]] == ["odd size"] * 4
    batch = Batch.collate(samples)
    assert not batch.has_actions.any()
    BatchSpec(history=2, future=2, views=1, channels=3, height=24, width=24, state_dim=4, action_dim=4,
              chunk_length=4).check(batch, need_future=True)


def test_all_unreadable_says_so(video_dir, tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(video_dir / n)}) + "\n"
                                for n in ("not_a_video.mp4", "truncated.mp4", "missing.mp4")))
    ds = WebVideoDataset.from_source(manifest, cfg())
    with pytest.raises(RuntimeError, match="all 3 videos of 'webvideo' are unreadable"):
        ds[0]


def test_csv_manifest_with_start_end_and_short_video_padding(video_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,caption,start,end\n{video_dir / 'h264_odd.mp4'},window,0.4,0.6\n")
    ds = WebVideoDataset.from_source(manifest, cfg(future_frame_stride=2), fps=25.0)
    s = ds[0]
    k = frame_numbers(torch.cat([s["obs_frames"], s["future_frames"]])[:, 0])
    assert k[0] >= 10 and k.max() <= 14  # inside [0.4, 0.6] s at 25 fps
    # the window holds 5 frames, the clip needs 7 (4 frames x stride 2): the overflow is flagged
    assert s["future_is_pad"].tolist() == [False, True] and not s["obs_is_pad"].any()


def test_clip_start_is_seeded_and_changes_with_epoch(video_dir):
    a = WebVideoDataset.from_source(video_dir / "manifest.jsonl", cfg(), fps=6.0, seed=1)
    b = WebVideoDataset.from_source(video_dir / "manifest.jsonl", cfg(), fps=6.0, seed=1)
    assert torch.equal(a[0]["obs_frames"], b[0]["obs_frames"])
    starts = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        starts.add(frame_numbers(a[0]["obs_frames"][:, 0])[0].item())
    assert len(starts) > 1


def test_webdataset_shards(video_dir, tmp_path):
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, name, caption in (("0001", "h264_odd.mp4", "from txt"), ("0002", "av1.mp4", None)):
            tar.add(video_dir / name, arcname=f"{key}.mp4")
            data = caption.encode() if caption else json.dumps({"caption": "from json"}).encode()
            info = tarfile.TarInfo(f"{key}.{'txt' if caption else 'json'}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = WebVideoDataset.from_source(tmp_path, cfg(), fps=6.0)
    assert len(ds) == 2
    assert sorted(ds[i]["text"] for i in range(2)) == ["from json", "from txt"]
    assert ds.skipped == 0


def test_manifest_errors_name_the_problem(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"caption": "no path"}\n')
    with pytest.raises(ValueError, match="entry 1 has no 'path'"):
        read_manifest(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"m.jsonl:1: not a JSON object"):
        read_manifest(bad)
    with pytest.raises(ValueError, match="expected a .jsonl or .csv"):
        (tmp_path / "m.txt").write_text("x")
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "nope.jsonl")


def test_encoding_av1_leaves_the_process_scheduling_as_it_was(tmp_path):
    """libsvtav1 raises the encoding thread to SCHED_FIFO 99 where it may (root), which every later
    child would inherit; vidact's writers put the policy back."""
    import os

    import numpy as np

    from vidact.data.codec import keep_scheduling
    from vidact.data.webvideo import write_video

    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    write_video(tmp_path / "a.mp4", np.zeros((4, 64, 64, 3), np.uint8), fps=10, codec="libsvtav1")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
    try:  # the guard itself, where this user may raise a thread's priority
        with keep_scheduling():
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("not allowed to change the scheduling policy here (not root)")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


@pytest.fixture(scope="module")
def _real_time_module_fixture():
    """What an unwrapped LeRobot write in a module- or session-scoped fixture does to pytest: it runs
    before the per-test guard and leaves the process real-time."""
    import os

    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("not allowed to change the scheduling policy here (not root)")
    yield
    os.sched_setscheduler(0, *before)


def test_each_test_starts_at_normal_scheduling(_real_time_module_fixture):
    import os

    assert os.sched_getscheduler(0) not in (os.SCHED_FIFO, os.SCHED_RR)
