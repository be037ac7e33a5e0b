"""Run-directory checkpoints: atomic, keep-last-N plus best. The folder's layout and the search
``resume=auto`` does (``newest_checkpoint``) are in ``vidact.checkpoint_files``.

A checkpoint is written under a hidden temporary name, fsynced, then renamed into place: a save
killed half-way leaves a ``.step-*.tmp`` behind, never a corrupt ``step-*.ckpt``, and the previous
checkpoints are untouched. ``newest_checkpoint`` still checks what it picks (a disk can fill up,
files can be copied half-way): an unreadable newest checkpoint is reported with its path and the
one before it is used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from vidact.checkpoint_files import BEST, BEST_INFO, LAST, step_checkpoints, step_name


def _fsync_tree(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _replace(src: Path, dst: Path) -> None:
    """Atomic ``src -> dst``; a folder destination (DeepSpeed) is moved aside first."""
    if dst.is_dir() and not dst.is_symlink():
        aside = dst.with_name(f".{dst.name}.old")
        _remove(aside)
        os.replace(dst, aside)
        os.replace(src, dst)
        _remove(aside)
    else:
        os.replace(src, dst)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes an independent name for ``src``'s content, atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    _remove(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp, copy_function=os.link)
    else:
        os.link(src, tmp)
    _replace(tmp, dst)


class RunCheckpoints(Callback):
    """Saves ``step-N.ckpt`` every ``every`` optimizer steps (and when asked), keeps the last
    ``keep_last``, points ``last.ckpt`` at the newest and keeps ``best.ckpt`` by smoothed loss."""

    def __init__(self, checkpoint_dir: Path, every: int, keep_last: int):
        self.dir, self.every, self.keep_last = Path(checkpoint_dir), every, keep_last
        self.last_saved_step: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step > 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)  # the final state (a no-op when this step was just saved)

    def save(self, trainer) -> Path:
        """Write the trainer's state as ``step-<global_step>.ckpt`` (collective: call on every rank)."""
        step = trainer.global_step
        final = self.dir / step_name(step)
        if step == self.last_saved_step:
            return final
        tmp = self.dir / f".{final.name}.tmp"
        strategy = trainer.strategy
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            _remove(tmp)  # a leftover of a killed save
        strategy.barrier("vidact.checkpoint.prepare")
        trainer.save_checkpoint(tmp)  # ends with a barrier: every rank's shards are written
        if trainer.is_global_zero:
            _fsync_tree(tmp)
            _replace(tmp, final)
            _fsync_dir(self.dir)
            self._point_last(final)
            self._update_best(trainer, final, step)
            self._prune()
        strategy.barrier("vidact.checkpoint.done")
        self.last_saved_step = step
        return final

    def _point_last(self, final: Path) -> None:
        tmp = self.dir / f".{LAST}.tmp"
        _remove(tmp)
        os.symlink(final.name, tmp)
        _replace(tmp, self.dir / LAST)

    def _update_best(self, trainer, final: Path, step: int) -> None:
        loss = getattr(trainer.lightning_module, "loss_ema", None)
        if loss is None:
            return
        info_path = self.dir / BEST_INFO
        best = json.loads(info_path.read_text()) if info_path.is_file() else None
        if best is not None and best["loss_ema"] <= loss and (self.dir / BEST).exists():
            return
        _link_or_copy(final, self.dir / BEST)
        tmp = info_path.with_name(f".{BEST_INFO}.tmp")
        tmp.write_text(json.dumps({"step": step, "loss_ema": loss, "checkpoint": final.name}))
        os.replace(tmp, info_path)

    def _prune(self) -> None:
        for _, path in step_checkpoints(self.dir)[self.keep_last:]:
            _remove(path)
