"""``VidActModule``: one ``training_step`` around :func:`vidact.generative.training_loss`.

What the module adds to the loss: the optimizer and schedule (``optim.py``), an EMA of the
trainable weights that travels in the checkpoint, a guard against non-finite losses, and the
bookkeeping that makes a resumed run repeat an uninterrupted one exactly (the loss's noise draws
are seeded by the index of the batch, like the batches themselves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import time

import lightning as L
import torch

from vidact.config import ConfigError, RunConfig, TrainConfig
from vidact.data.cache import attach_model_caches, cache_metrics, with_cached_latents
from vidact.data.fake import fake_batch
from vidact.data.mixture import SkippedFiles
from vidact.generative import training_loss
from vidact.models import VidAct
from vidact.lit.datamodule import draw_seed
from vidact.lit.optim import build_optimizer
from vidact.lit.strategy import (any_rank, deepspeed_zero_stage, ema_view, is_deepspeed,
                                 register_zero3_external_parameters, zero3_gather, zero3_local_shard)
from vidact.types import Batch

# Offset between the data's seed and the loss noise's seed for the same batch index.
NOISE_SEED_OFFSET = 7919


class NonFiniteLossError(RuntimeError):
    """Raised after ``train.max_bad_steps`` consecutive non-finite losses."""


def video_loss_scale(step: int, train: TrainConfig) -> float:
    """Factor on ``generative.video_loss_weight`` at optimizer step ``step``: a linear ramp from
    ``video_loss_ramp_from`` to 1 over ``video_loss_ramp_steps`` (PAD ramps the video objective in
    so the action head is not drowned by the many video tokens early in finetuning)."""
    n = train.video_loss_ramp_steps
    if n <= 0 or step >= n:
        return 1.0
    return train.video_loss_ramp_from + (1 - train.video_loss_ramp_from) * step / n


def freeze(model: VidAct, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters under each dotted prefix; returns their names."""
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            modules = sorted({n.split(".")[0] for n in names})
            close = difflib.get_close_matches(prefix, modules, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"top-level modules: {modules}"
            raise ConfigError(f"train.freeze: {prefix!r} matches no parameter of the model; {hint}")
        frozen += hits
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return sorted(set(frozen))


def tokens_per_sample(model: VidAct) -> int:
    """Sequence length of one training sample (language length measured on a fake instruction)."""
    with torch.no_grad():
        prefix = model.embed_prefix(fake_batch(model.config, batch_size=1))
    return prefix.tokens.shape[1] + model.future_tokens + model.config.chunk_length


class VidActModule(L.LightningModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        self.model = VidAct(cfg.model)
        self.frozen = freeze(self.model, cfg.train.freeze)
        self.model.backbone.gradient_checkpointing = cfg.train.activation_checkpointing
        if cfg.train.compile:
            # The model's forward (embeddings, backbone, heads: the training pass), in place, so parameter
            # names and checkpoints do not change. The backbone alone left the H200 step unchanged; the
            # whole forward made it 1.7-1.8x faster (BENCHMARKS.md "Kernel choices on the GPU").
            self.model.compile()
        self.tokens_per_sample = tokens_per_sample(self.model)
        # data.cache_dir: frozen encoders read embeddings / latents from disk instead of re-encoding.
        try:
            self.caches = attach_model_caches(self.model, cfg.data.cache_dir) if cfg.data.cache_dir else []
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.skipped_files = SkippedFiles()  # unreadable files, over loader workers and ranks
        self.ema: dict[str, torch.Tensor] | None = None  # name -> float32 copy of a trainable weight
        self.loss_ema: float | None = None  # smoothed train loss; ranks the "best" checkpoint
        self.batches_consumed = 0  # index of the next batch to train on; saved for exact resume
        self.bad_steps = 0  # consecutive non-finite losses
        self.skipped_steps = 0  # all non-finite losses so far; the schedule does not advance on them
        self._last_step_time: float | None = None
        self._skipped = False  # whether the current step's loss was non-finite (on any rank)

    # ------------------------------------------------------------------ set-up

    def setup(self, stage: str) -> None:
        # Stats from the data, unless the weights already carry them (a resumed checkpoint
        # overwrites these buffers afterwards anyway).
        stats = getattr(self.trainer.datamodule, "stats", None) if self._trainer else None
        if stats is not None and not bool(self.model.normalizer.has_stats):
            self.model.normalizer.set_stats(stats)

    def on_fit_start(self) -> None:
        if deepspeed_zero_stage(self.trainer) == 3:
            register_zero3_external_parameters(self, self.model)
        if self.ema is None:  # a resumed run loaded its EMA in on_load_checkpoint (DeepSpeed: after this)
            # Under ZeRO-3 each rank keeps the EMA of its own partition (strategy.ema_view).
            self.ema = {n: ema_view(self.trainer, p).detach().float().clone() for n, p in self._trainable()}

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.cfg.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trainable(self):
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    # ------------------------------------------------------------------ the step

    def training_step(self, item: tuple[int, Batch], batch_idx: int):
        index, batch = item
        rank, world = self.global_rank, self.trainer.world_size
        generator = torch.Generator().manual_seed(draw_seed(self.cfg.seed, index, rank, world) + NOISE_SEED_OFFSET)
        scale = video_loss_scale(self.global_step, self.cfg.train)
        generative = self.cfg.generative
        if scale != 1.0:
            generative = dataclasses.replace(generative, video_loss_weight=generative.video_loss_weight * scale)
        with self.precision_context():
            # data.cache_dir: the frames' latents read from the cache, not re-encoded (a history noised in pixels is).
            cached = with_cached_latents(self.model, batch, observed=generative.history_noise == 0
                                         or generative.history_noise_on == "tokens")
            out = training_loss(self.model, cached, generative, generator)
        self._log_data(batch)
        self.batches_consumed = index + 1

        # Every rank takes the same branch: a step is skipped everywhere if any rank's loss is bad
        # (DDP would otherwise wait forever for the skipping rank's gradients).
        bad = any_rank(torch.tensor([0.0 if torch.isfinite(out.loss) else 1.0], device=out.loss.device))
        bad_now = bool(bad.item())
        self._skipped = self._skipped or bad_now  # sticky until the optimizer step (accumulation)
        if bad_now:
            return self._bad_step(out.loss, index, batch)
        self.bad_steps = 0

        now = time.perf_counter()
        B = batch.batch_size
        loss = out.loss.detach()
        self.loss_ema = float(loss) if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * float(loss)
        self.log_dict({"train/loss": loss, "train/video_loss": out.video_loss,
                       "train/action_loss": out.action_loss,
                       "lr": self.trainer.optimizers[0].param_groups[0]["lr"]},
                      prog_bar=True, batch_size=B)
        if scale != 1.0 or self.cfg.train.video_loss_ramp_steps:
            self.log("train/video_loss_scale", scale, batch_size=B)
        if out.env_state_loss is not None:
            self.log("train/env_state_loss", out.env_state_loss, prog_bar=True, batch_size=B)
        if self._last_step_time is not None:
            samples_per_s = B * world / (now - self._last_step_time)
            self.log_dict({"samples/s": samples_per_s, "tokens/s": samples_per_s * self.tokens_per_sample},
                          batch_size=B)
        self._last_step_time = now
        return out.loss

    def precision_context(self):
        """Autocast where the weights themselves are bf16: DeepSpeed's bf16 mode casts the model
        while the loss builds float32 tensors (noise, flow times, sinusoidal embeddings); Lightning's
        bf16-mixed for the other strategies keeps fp32 weights and autocasts by itself."""
        precision = str(self.trainer.precision) if self._trainer else ""
        if precision.startswith("bf16") and is_deepspeed(self.cfg.train.strategy) and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            # Lightning's FSDP precision plugin refuses norm clipping; FSDP's own clip_grad_norm_
            # takes the norm over every shard.
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _log_data(self, batch: Batch) -> None:
        """Skipped-file total over workers and ranks (gathered every log_every steps) and cache counters."""
        self.skipped_files.update(batch)
        if self.global_step % self.cfg.train.log_every == 0:
            self.skipped_files.sync()  # a collective: every rank is at the same step here
        metrics = cache_metrics(self.model)
        if self.cfg.data.reads_datasets:
            metrics["data/skipped_files"] = float(len(self.skipped_files.all))
        if metrics:
            self.log_dict(metrics, batch_size=batch.batch_size)

    def on_train_end(self) -> None:
        self.skipped_files.sync()
        if self.global_rank == 0:
            summary = self.skipped_files.summary()
            if summary:
                print(f"warning: {summary}", flush=True)
            if self.caches:
                counts = ", ".join(f"{k.split('/')[1]}={int(v)}" for k, v in cache_metrics(self.model).items())
                print(f"cache {self.cfg.data.cache_dir} (rank 0): {counts}", flush=True)

    def _bad_step(self, loss: torch.Tensor, index: int, batch: Batch):
        """Skip the optimizer step on every rank and stop if it repeats ``max_bad_steps`` times.

        Lightning refuses a skipped backward (a ``None`` loss) on several ranks and under DeepSpeed,
        so every rank runs backward on the loss multiplied by NaN: every gradient becomes NaN and
        the collectives (DDP's all-reduce, ZeRO's reduce-scatter) match. Then no rank steps:
        :meth:`optimizer_step` drops the gradients (DDP, one device), and the ZeRO optimizer
        discards the step as an overflow (weights and optimizer state untouched; bf16 gets
        ``check_grad_overflow`` in ``vidact.lit.strategy``).
        """
        self.bad_steps += 1
        self.skipped_steps += 1
        limit = self.cfg.train.max_bad_steps
        if torch.isfinite(loss):
            where = f"non-finite loss on another rank at step {self.global_step} (this rank: batch {index})"
        else:
            sources = sorted(set(batch.source)) if batch.source else [self.cfg.data.kind]
            rank = f" on rank {self.global_rank}" if self.trainer.world_size > 1 else ""
            where = (f"non-finite loss ({loss.item()}){rank} at step {self.global_step} (batch {index}, "
                     f"sources {sources})")
        message = f"{where}; {self.bad_steps}/{limit} consecutive bad steps"
        if self.bad_steps >= limit:
            raise NonFiniteLossError(f"{message}: stopping")
        # print, not logging: it must show up between progress-bar lines without a logging set-up.
        print(f"warning: {message}: optimizer step skipped", flush=True)
        return loss * float("nan")

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # Lightning still counts a skipped step in global_step and would advance the schedule;
        # the schedule follows the optimizer steps that were actually taken.
        if scheduler.last_epoch < self.trainer.global_step - self.skipped_steps:
            scheduler.step()

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if deepspeed_zero_stage(self.trainer) is None and optimizer_closure is not None:
            # Forward and backward first: the loss decides whether there is a step at all. (A
            # training_step returning None cannot skip it: Lightning refuses that on several ranks.)
            loss = optimizer_closure()
            if self._skipped:  # on every rank (any_rank); the NaN gradients are discarded
                optimizer.zero_grad(set_to_none=True)
                self._skipped = False
                return
            # The loss again, not None: the AMP plugin takes a None closure result as "skip the step".
            optimizer_closure = lambda: loss  # noqa: E731
        # DeepSpeed runs the closure inside its step, and discards a step with NaN gradients.
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # The EMA follows the optimizer step itself (not on_train_batch_end, which runs after the
        # callbacks, checkpointing included: a checkpoint must hold this step's EMA).
        if not self._skipped and self.ema is not None:
            self._update_ema()
        self._skipped = False

    def _update_ema(self) -> None:
        # Warm-up (as in diffusers' EMAModel): a fixed 0.999 would leave 0.999**800 = 45% of the
        # random initialisation in the EMA after 800 steps, and the EMA is what gets exported. The
        # quickstart's 1200-step run exported such weights: jagged action chunks, pure-noise frames.
        n = max(self.trainer.global_step - self.skipped_steps, 0)
        decay = min(self.cfg.train.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for name, p in self._trainable():
                source = ema_view(self.trainer, p)  # under ZeRO-3 this rank's partition: no gather
                ema = self.ema[name]
                if ema.device != source.device:
                    ema = self.ema[name] = ema.to(source.device)
                ema.lerp_(source.detach().float(), 1 - decay)

    def full_ema(self) -> dict[str, torch.Tensor]:
        """The EMA as whole tensors; under ZeRO-3 gathered from the ranks' shards (collective)."""
        if self.ema and self._trainer is not None and deepspeed_zero_stage(self.trainer) == 3:
            return zero3_gather(self.ema, dict(self._trainable()))
        return dict(self.ema or {})

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema_state_dict"] = {n: t.detach().cpu() for n, t in self.full_ema().items()}  # every rank
        checkpoint["vidact"] = {"batches_consumed": self.batches_consumed, "skipped_steps": self.skipped_steps,
                                "loss_ema": self.loss_ema, "torch_rng_state": torch.get_rng_state()}
        checkpoint["vidact_skipped_files"] = sorted(self.skipped_files.all | self.skipped_files.local)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ema = dict(checkpoint.get("ema_state_dict") or {}) or None
        if self.ema and self._trainer is not None and deepspeed_zero_stage(self.trainer) == 3:
            # Whole tensors in the checkpoint; the engine exists already (DeepSpeed restores after
            # set-up): keep this rank's partition.
            self.ema = {n: zero3_local_shard(self.ema[n], p).float() for n, p in self._trainable()}
        state = checkpoint.get("vidact", {})
        self.batches_consumed = int(state.get("batches_consumed", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.loss_ema = state.get("loss_ema")
        if "torch_rng_state" in state:
            torch.set_rng_state(state["torch_rng_state"])
        self.skipped_files.all.update(checkpoint.get("vidact_skipped_files", []))  # the count survives resume
