"""``VidActModule``: one ``training_step`` around :func:`vidact.generative.training_loss`.

What the module adds to the loss: the optimizer and schedule (``optim.py``), an EMA of the
trainable weights that travels in the checkpoint, a guard against non-finite losses, and the
bookkeeping that makes a resumed run repeat an uninterrupted one exactly (the loss's noise draws
are seeded by the index of the batch, like the batches themselves).
"""

from __future__ import annotations

import time

import lightning as L
import torch

from vidact.config import RunConfig
from vidact.generative import training_loss
from vidact.models import VidAct
from vidact.lit.datamodule import DRAW_STRIDE
from vidact.lit.optim import build_optimizer
from vidact.types import Batch

# Offset between the data's seed and the loss noise's seed for the same batch index.
NOISE_SEED_OFFSET = 7919


class NonFiniteLossError(RuntimeError):
    """Raised after ``train.max_bad_steps`` consecutive non-finite losses."""


class VidActModule(L.LightningModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        self.model = VidAct(cfg.model)
        self.ema: dict[str, torch.Tensor] | None = None  # name -> float32 copy of a trainable weight
        self.batches_consumed = 0  # index of the next batch to train on; saved for exact resume
        self.bad_steps = 0  # consecutive non-finite losses
        self.skipped_steps = 0  # all non-finite losses so far; the schedule does not advance on them
        self._last_step_time: float | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, stage: str) -> None:
        # Stats from the data, unless the weights already carry them (a resumed checkpoint
        # overwrites these buffers afterwards anyway).
        stats = getattr(self.trainer.datamodule, "stats", None) if self._trainer else None
        if stats is not None and not bool(self.model.normalizer.has_stats):
            self.model.normalizer.set_stats(stats)

    def on_fit_start(self) -> None:
        if self.ema is None:  # a resumed run loaded its EMA in on_load_checkpoint
            self.ema = {n: p.detach().float().clone() for n, p in self._trainable()}

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.cfg.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trainable(self):
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    # ------------------------------------------------------------------ the step

    def training_step(self, item: tuple[int, Batch], batch_idx: int):
        index, batch = item
        generator = torch.Generator().manual_seed(self.cfg.seed * DRAW_STRIDE + index + NOISE_SEED_OFFSET)
        out = training_loss(self.model, batch, self.cfg.generative, generator)
        self.batches_consumed = index + 1

        if not torch.isfinite(out.loss):
            return self._bad_step(out.loss, index, batch)
        self.bad_steps = 0

        now = time.perf_counter()
        B = batch.batch_size
        self.log_dict({"train/loss": out.loss.detach(), "train/video_loss": out.video_loss,
                       "train/action_loss": out.action_loss,
                       "lr": self.trainer.optimizers[0].param_groups[0]["lr"]},
                      prog_bar=True, batch_size=B)
        if self._last_step_time is not None:
            self.log("samples/s", B * self.trainer.world_size / (now - self._last_step_time), batch_size=B)
        self._last_step_time = now
        return out.loss

    def _bad_step(self, loss: torch.Tensor, index: int, batch: Batch) -> None:
        """Skip the optimizer step (returning None does that in Lightning) and stop if it repeats."""
        self.bad_steps += 1
        self.skipped_steps += 1
        sources = sorted(set(batch.source)) if batch.source else [self.cfg.data.kind]
        limit = self.cfg.train.max_bad_steps
        message = (f"non-finite loss ({loss.item()}) at step {self.global_step} (batch {index}, "
                   f"sources {sources}); {self.bad_steps}/{limit} consecutive bad steps")
        if self.bad_steps >= limit:
            raise NonFiniteLossError(f"{message}: stopping")
        # print, not logging: it must show up between progress-bar lines without a logging set-up.
        print(f"warning: {message}: optimizer step skipped", flush=True)
        return None

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # Lightning still counts a skipped step in global_step and would advance the schedule;
        # the schedule follows the optimizer steps that were actually taken.
        if scheduler.last_epoch < self.trainer.global_step - self.skipped_steps:
            scheduler.step()

    def on_train_batch_end(self, outputs, item, batch_idx: int) -> None:
        if outputs is None:  # the step was skipped: the weights did not move
            return
        decay = self.cfg.train.ema_decay
        with torch.no_grad():
            for name, p in self._trainable():
                ema = self.ema[name]
                if ema.device != p.device:
                    ema = self.ema[name] = ema.to(p.device)
                ema.lerp_(p.detach().float(), 1 - decay)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema_state_dict"] = {n: t.detach().cpu() for n, t in (self.ema or {}).items()}
        checkpoint["vidact"] = {"batches_consumed": self.batches_consumed, "skipped_steps": self.skipped_steps,
                                "torch_rng_state": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ema = dict(checkpoint.get("ema_state_dict") or {}) or None
        state = checkpoint.get("vidact", {})
        self.batches_consumed = int(state.get("batches_consumed", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if "torch_rng_state" in state:
            torch.set_rng_state(state["torch_rng_state"])
