"""``vidact train RECIPE [key=value ...]``: one run directory, resumable by default.

    runs/<name>/                (or run_dir)
      config.yaml               the resolved config
      metrics.csv, hparams.yaml Lightning's CSVLogger
      checkpoints/last.ckpt     written every train.checkpoint_every steps and at the end

``train.resume=auto`` (the default) continues from ``checkpoints/last.ckpt`` when it exists: the
weights, optimizer, schedule, EMA, RNG and step all come back, and the data restarts at the next
unseen batch, so a run interrupted at step 4 and resumed to 8 ends where a run of 8 ends.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vidact.config import ConfigError, RunConfig, to_yaml
from vidact.data.fake import fake_batch
from vidact.lit.callbacks import ResumableCSVLogger
from vidact.lit.datamodule import VidActDataModule
from vidact.lit.module import VidActModule
from vidact.models import describe

LAST_CHECKPOINT = "last.ckpt"


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
        last = checkpoint_dir / LAST_CHECKPOINT
        return last if last.is_file() else None
    path = Path(mode)
    if not path.is_file():
        raise ConfigError(f"train.resume={mode!r}: no such checkpoint (use 'auto', 'never' or a .ckpt path)")
    return path


def tokens_per_sample(module: VidActModule) -> int:
    """Sequence length of one training sample (language length measured on a fake instruction)."""
    model = module.model
    with torch.no_grad():
        prefix = model.embed_prefix(fake_batch(model.config, batch_size=1))
    return prefix.tokens.shape[1] + model.future_tokens + model.config.chunk_length


def banner(cfg: RunConfig, module: VidActModule, trainer: L.Trainer, run_dir: Path, resume: Path | None) -> str:
    effective = cfg.train.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    return "\n".join([
        f"vidact train: {cfg.name} -> {run_dir}",
        f"  {describe(module.model)}",
        f"  effective batch size {effective} ({cfg.train.batch_size} x {trainer.world_size} devices x "
        f"{trainer.accumulate_grad_batches} accumulation) | tokens/sample {tokens_per_sample(module)} | "
        f"steps {cfg.train.steps} | precision {trainer.precision} | data {cfg.data.kind}",
        f"  {'resuming from ' + str(resume) if resume else 'starting from scratch'}",
    ])


def train(cfg: RunConfig) -> Path:
    """Train ``cfg`` to ``cfg.train.steps`` optimizer steps; returns the run directory."""
    run_dir = run_dir_of(cfg)
    checkpoint_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_path(cfg, checkpoint_dir)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = VidActModule(cfg)
    data = VidActDataModule(cfg)
    checkpointing = ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=cfg.train.checkpoint_every,
                                    save_last=True, save_top_k=1)
    trainer = L.Trainer(
        max_steps=cfg.train.steps, max_epochs=-1, devices=1, accelerator="auto",
        precision=resolve_precision(cfg.train.precision),
        gradient_clip_val=cfg.train.grad_clip or None,
        logger=ResumableCSVLogger(run_dir),
        callbacks=[checkpointing], log_every_n_steps=cfg.train.log_every,
        enable_progress_bar=True, enable_model_summary=False, num_sanity_val_steps=0,
    )
    print(banner(cfg, module, trainer, run_dir, resume), flush=True)
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    # ModelCheckpoint saves on its step interval only; the final state must be resumable too.
    trainer.save_checkpoint(checkpoint_dir / LAST_CHECKPOINT)
    return run_dir
