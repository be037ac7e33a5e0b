"""Checkpoint-and-stop on SIGTERM / SIGUSR1 / SIGINT (Ctrl-C), and the SLURM requeue hook.

A signal only sets a flag (a second one kills the process the default way, so a hung run can
still be stopped). At the next step boundary every rank learns whether *any* rank got
one (an all-reduce: ``srun`` signals every task, a plain ``kill`` reaches only one process), they
all write the checkpoint together and stop. :func:`vidact.train.train` then raises
:class:`TrainingInterrupted`; on SIGUSR1 under SLURM rank 0 first calls the requeue hook, which
by default runs ``scontrol requeue $SLURM_JOB_ID``, so the requeued job starts the same command,
finds the checkpoint in the same ``run_dir`` through ``train.resume=auto`` and continues.

Ctrl-C is a stop like the others (Lightning alone answers it by tearing down, without a
checkpoint: every step since the last periodic one was lost). A terminal sends it to the whole
process group; the data workers ignore it (``vidact.data.mixture.MixtureDataset.worker_init_fn``),
so the main process can still draw the batch it needs to reach the step boundary.

Lightning installs its own SIGTERM handler (and, with ``SLURMEnvironment(auto_requeue=True)``, a
SIGUSR1 handler that writes ``hpc_ckpt_*.ckpt`` outside the run directory and broadcasts from
inside the handler). Ours replace them while the training loop runs (installed at
``on_train_start``, after Lightning's); Lightning restores the originals at teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from typing import Callable

import torch
from lightning.pytorch.callbacks import Callback

from vidact.lit.strategy import any_rank

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int, checkpoint, requeued: bool):
        self.signum, self.step, self.checkpoint, self.requeued = signum, step, checkpoint, requeued
        what = "job requeued" if requeued else "rerun the same command to resume"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {checkpoint} ({what})")

    @property
    def exit_code(self) -> int:
        """0 when the job was requeued (its next incarnation continues), else 128 + signal."""
        return 0 if self.requeued else 128 + self.signum


def slurm_job_id() -> str | None:
    """``SLURM_JOB_ID``, or ``<array job>_<task>`` inside a job array."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> bool:
    """The default requeue hook: ``scontrol requeue <job>``; False outside SLURM or on failure."""
    job = slurm_job_id()
    if job is None or not re.fullmatch(r"[0-9_]+", job):
        return False
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"warning: scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}", flush=True)
        return False
    print(f"vidact train: requeued SLURM job {job}", flush=True)
    return True


class StopOnSignal(Callback):
    """Flags SIGTERM / SIGUSR1 / SIGINT; at the next step boundary saves (through ``save``) and stops."""

    def __init__(self, save: Callable, requeue: Callable[[], bool] = requeue_slurm_job):
        self.save, self.requeue = save, requeue
        self.received: int | None = None  # the signal this process got
        self.stopped: TrainingInterrupted | None = None

    def _handler(self, signum, frame) -> None:
        if self.received is not None:
            # A second signal: the run did not reach a step boundary (hung, or a very long step).
            # Die the default way instead of ignoring it.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:  # stop at optimizer-step boundaries only
            return
        # One flag per signal, max-reduced: every rank agrees on whether and why to stop.
        flags = torch.tensor([float(self.received == s) for s in STOP_SIGNALS], device=pl_module.device)
        flags = any_rank(flags)
        if not flags.any():
            return
        signum = int(STOP_SIGNALS[int(flags.argmax())])
        checkpoint = self.save(trainer)
        requeued = False
        if signum == signal.SIGUSR1 and slurm_job_id() is not None:
            if trainer.is_global_zero:
                requeued = self.requeue()
            requeued = bool(any_rank(torch.tensor([float(requeued)], device=pl_module.device)).item())
        self.stopped = TrainingInterrupted(signum, trainer.global_step, checkpoint, requeued)
        trainer.should_stop = True
