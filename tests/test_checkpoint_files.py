"""One newest-checkpoint search for resume=auto and every reader of a run directory (issue 16,
part 5): the order by step number, last.ckpt as a symlink or a file, best.ckpt and saves cut short."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from vidact.checkpoint_files import (BEST, LAST, CheckpointWarning, checkpoint_candidates, newest_checkpoint,
                                     step_name)
from vidact.export.consolidate import find_checkpoint


def _save(path: Path, step: int, mtime: float) -> Path:
    torch.save({"state_dict": {"model.w": torch.full((2,), float(step))}, "global_step": step}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_newest_is_the_largest_readable_step_not_the_newest_file(tmp_path):
    run = tmp_path / "run"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    now = time.time()
    step_200 = _save(folder / step_name(200), 200, now - 300)
    step_100 = _save(folder / step_name(100), 100, now - 10)  # copied back later: a newer file, an older step
    os.symlink(step_200.name, folder / LAST)
    os.link(step_100, folder / BEST)
    other = _save(folder / "epoch=0-step=50.ckpt", 50, now)  # named some other way: after the step files
    (folder / f".{step_name(300)}.tmp").write_bytes(b"half a save")  # a save killed half-way
    interrupted = folder / step_name(300)  # the largest step, but a write cut short
    interrupted.write_bytes(step_200.read_bytes()[:500])

    assert checkpoint_candidates(folder) == [interrupted, step_200, step_100, other]
    with pytest.warns(CheckpointWarning, match=f"{step_name(300)} is unreadable"):
        assert newest_checkpoint(folder) == step_200
    with pytest.warns(CheckpointWarning):
        assert find_checkpoint(run) == step_200  # vidact export / init_from read the one resume=auto takes

    # A last.ckpt of its own (a file, not the symlink the run writes) comes first.
    (folder / LAST).unlink()
    own_last = _save(folder / LAST, 400, now - 1000)
    interrupted.unlink()
    assert newest_checkpoint(folder) == own_last == find_checkpoint(run)


def test_nothing_readable(tmp_path):
    assert newest_checkpoint(tmp_path / "missing") is None
    (tmp_path / step_name(1)).write_bytes(b"not a checkpoint")
    with pytest.warns(CheckpointWarning):
        assert newest_checkpoint(tmp_path) is None
    with pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError, match="could be read"):
        find_checkpoint(tmp_path)
