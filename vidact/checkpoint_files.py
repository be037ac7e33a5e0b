"""A run's checkpoint folder: its names and the one search for its newest good checkpoint, used
by ``resume=auto`` (``vidact.lit.checkpoints``, which writes the folder) and by every reader of a
run directory (``vidact.export.consolidate``: ``vidact export``, ``train.init_from``, ``vidact
imagine``). No Lightning here, so readers need not import it.

    run_dir/checkpoints/
      step-00000500.ckpt   one per save (a file, or a folder of shards under DeepSpeed)
      last.ckpt            symlink to the newest step checkpoint
      best.ckpt            the checkpoint with the lowest smoothed train loss (hard link or copy)
      best.json            its step and loss
      .step-00000600.ckpt.tmp   a save cut short (never read)
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
BEST_INFO = "best.json"
STEP_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")


class CheckpointWarning(UserWarning):
    """A checkpoint in the run directory could not be read and was passed over."""


def step_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def step_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step checkpoints, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return sorted(found, reverse=True)


def checkpoint_candidates(checkpoint_dir: Path) -> list[Path]:
    """The folder's checkpoints, newest first, unchecked:

    1. ``last.ckpt`` when it is a file or folder of its own (runs from before step checkpoints,
       Lightning's ``ModelCheckpoint(save_last=True)``); as a symlink it names a step checkpoint;
    2. ``step-N.ckpt``, largest N first: the step in the name, not the file's time (copying or
       syncing a run changes times);
    3. any other ``*.ckpt`` (checkpoints named some other way), newest file first.

    ``best.ckpt`` is a second name for one of the step checkpoints and hidden files are saves cut
    short: neither is a candidate.
    """
    if not checkpoint_dir.is_dir():
        return []
    last = checkpoint_dir / LAST
    own_last = [last] if last.exists() and not last.is_symlink() else []
    steps = [p for _, p in step_checkpoints(checkpoint_dir)]
    listed = {*own_last, *steps, last, checkpoint_dir / BEST}
    others = [p for p in checkpoint_dir.glob("*.ckpt") if p not in listed and not p.name.startswith(".")]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return own_last + steps + others


def check_readable(path: Path) -> None:
    """Raise if ``path`` is not a complete checkpoint (a Lightning file or a DeepSpeed folder)."""
    if path.is_dir():  # DeepSpeed: <path>/checkpoint/{[zero_pp_rank_R_]mp_rank_00_model_states.pt, *_optim_states.pt}
        files = sorted(path.rglob("*.pt"))
        # ZeRO-2 writes one mp_rank_00_model_states.pt, ZeRO-3 one zero_pp_rank_R_mp_rank_00_model_states.pt per rank.
        if not any(f.name.endswith("model_states.pt") for f in files):
            raise ValueError("no model-states file in the DeepSpeed checkpoint folder")
        for f in files:
            torch.load(f, map_location="cpu", weights_only=False, mmap=True)
        return
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise ValueError("not a Lightning checkpoint (no state_dict / global_step)")


def newest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The first of :func:`checkpoint_candidates` that reads back (a disk can fill up, a file be
    copied half-way); warns (``CheckpointWarning``) about each one passed over. None when none does."""
    for path in checkpoint_candidates(checkpoint_dir):
        try:
            check_readable(path)
            return path
        except Exception as e:  # noqa: BLE001 - any failure to read means "not this one"
            warnings.warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); "
                          "trying the previous one", CheckpointWarning, stacklevel=2)
    return None
