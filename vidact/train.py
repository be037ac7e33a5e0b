"""``vidact train RECIPE [key=value ...]``: one run directory, resumable by default.

    runs/<name>/                (or run_dir)
      config.yaml               the resolved config
      metrics.csv, hparams.yaml Lightning's CSVLogger
      wandb/, wandb_id          the wandb run (offline by default); the id is reused on resume
      media/                    predicted vs real future frames and actions, PNG + mp4 (log.media_every)
      checkpoints/              step-N.ckpt (keep-last-N), last.ckpt -> newest, best.ckpt
                                (vidact.lit.checkpoints: atomic writes)

``train.resume=auto`` (the default) continues from the newest readable checkpoint: the weights,
optimizer, schedule, EMA, RNG and step all come back, and the data restarts at the next unseen
batch, so a run interrupted at step 4 and resumed to 8 ends where a run of 8 ends.

Signals (vidact.lit.signals): SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) -> checkpoint at the next step
boundary, then :class:`TrainingInterrupted`; the CLI exits 128 + signal, or 0 when SIGUSR1 under
SLURM requeued the job (``scontrol requeue``). Rerunning the same command with the same run_dir resumes.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vidact.checkpoint_files import newest_checkpoint
from vidact.config import ConfigError, RunConfig, to_yaml
from vidact.lit.callbacks import ResumableCSVLogger, wandb_logger
from vidact.lit.checkpoints import RunCheckpoints
from vidact.lit.datamodule import VidActDataModule
from vidact.lit.module import VidActModule
from vidact.lit.signals import StopOnSignal, TrainingInterrupted
from vidact.lit.strategy import build_strategy, release_process_group, resolve_accelerator
from vidact.models import describe

__all__ = ["train", "TrainingInterrupted"]


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def resolve_precision(precision: str) -> str:
    """"auto": bf16 mixed precision where the GPU supports it, full fp32 elsewhere (CPU tests)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def resume_path(cfg: RunConfig, checkpoint_dir: Path) -> Path | None:
    mode = cfg.train.resume
    if mode == "never":
        return None
    if mode == "auto":
        return newest_checkpoint(checkpoint_dir)
    path = Path(mode)
    if not path.exists():
        raise ConfigError(f"train.resume={mode!r}: no such checkpoint (use 'auto', 'never' or a .ckpt path)")
    return path


def banner(cfg: RunConfig, module: VidActModule, trainer: L.Trainer, run_dir: Path, resume: Path | None) -> str:
    effective = cfg.train.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    return "\n".join([
        f"vidact train: {cfg.name} -> {run_dir}",
        f"  {describe(module.model)}",
        f"  effective batch size {effective} ({cfg.train.batch_size} x {trainer.world_size} devices x "
        f"{trainer.accumulate_grad_batches} accumulation) | tokens/sample {module.tokens_per_sample} | "
        f"steps {cfg.train.steps}"
        f"{f' or {cfg.train.max_minutes:g} min' if cfg.train.max_minutes else ''} | precision {trainer.precision} | data {cfg.data.kind}",
        f"  strategy {cfg.train.strategy} on {trainer.num_nodes} node(s) x {trainer.num_devices} "
        f"{resolve_accelerator(cfg.train.accelerator)} device(s) | frozen {len(module.frozen)} tensors"
        f"{' | activation checkpointing' if cfg.train.activation_checkpointing else ''}"
        f"{' | compiled' if cfg.train.compile else ''}",
        f"  {'resuming from ' + str(resume) if resume else 'starting from scratch'}",
    ])


def _plugins() -> list:
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    # Under SLURM, Lightning's own requeue handler would write hpc_ckpt_*.ckpt outside the run
    # directory; vidact.lit.signals handles SIGUSR1 instead.
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def train(cfg: RunConfig) -> Path:
    """Train ``cfg`` to ``cfg.train.steps`` optimizer steps; returns the run directory.

    Raises :class:`TrainingInterrupted` after a signal-triggered checkpoint.
    """
    run_dir = run_dir_of(cfg)
    checkpoint_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_path(cfg, checkpoint_dir)
    if rank_zero_only.rank == 0:
        tmp = run_dir / ".config.yaml.tmp"
        tmp.write_text(to_yaml(cfg))
        os.replace(tmp, run_dir / "config.yaml")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = VidActModule(cfg)
    if cfg.train.init_from and resume is None:
        from vidact.lit.init import init_weights

        report = init_weights(module.model, cfg.train.init_from)
        if rank_zero_only.rank == 0:
            print(report, flush=True)
    data = VidActDataModule(cfg)
    checkpoints = RunCheckpoints(checkpoint_dir, every=cfg.train.checkpoint_every, keep_last=cfg.train.keep_last)
    stopper = StopOnSignal(checkpoints.save)
    callbacks = [checkpoints, stopper]
    if cfg.log.media_every:
        from vidact.lit.media import MediaCallback

        callbacks.append(MediaCallback(cfg, run_dir / "media"))
    loggers = [ResumableCSVLogger(run_dir)]
    if cfg.log.wandb != "disabled":
        loggers.append(wandb_logger(cfg, run_dir))
    accelerator = resolve_accelerator(cfg.train.accelerator)
    trainer = L.Trainer(
        max_steps=cfg.train.steps, max_epochs=-1,
        max_time=None if cfg.train.max_minutes is None else timedelta(minutes=cfg.train.max_minutes),
        accelerator=accelerator, devices=cfg.train.devices, num_nodes=cfg.train.num_nodes,
        strategy=build_strategy(cfg.train.strategy, accelerator, batch_size=cfg.train.batch_size), plugins=_plugins(),
        precision=resolve_precision(cfg.train.precision),
        accumulate_grad_batches=cfg.train.accumulate,
        gradient_clip_val=cfg.train.grad_clip or None,
        logger=loggers, callbacks=callbacks, log_every_n_steps=cfg.train.log_every,
        enable_checkpointing=False, enable_progress_bar=True, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=run_dir,
    )
    if trainer.is_global_zero:
        print(banner(cfg, module, trainer, run_dir, resume), flush=True)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    finally:
        if cfg.log.wandb != "disabled" and trainer.is_global_zero:
            import wandb

            wandb.finish()  # or the next train() in this process would log into this run
        release_process_group()
    if stopper.stopped is not None:
        raise stopper.stopped
    return run_dir
