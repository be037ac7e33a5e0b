"""Predicted vs real, every ``log.media_every`` steps, from the EMA weights.

Written to ``run_dir/media/`` (and to wandb when it is on):
  step-XXXXXXXX-frames.png    per sample one row: last observed frame | real future frames |
                              predicted future frames (first camera)
  step-XXXXXXXX-actions.png   per sample and action dimension: real (green) vs predicted (red)
                              over the chunk, in raw units
  step-XXXXXXXX-video.mp4     the same frames over time (H.264, ``VIDEO_FPS``): per sample one row,
                              real on the left, predicted on the right; the observed history frames
                              first (the same on both sides), then the future. Th + Tf frames.

The samples are ``log.media_samples`` of the batch just trained on (robot samples first), generated with
:class:`vidact.generative.Sampler` in ``policy`` mode (``video`` mode for action-free batches,
``policy_fast`` for models without future frames), seeded by the step, on rank 0. Under DeepSpeed
ZeRO-3 the parameters are partitioned: every rank joins the gather of the weights, then rank 0
samples from its own full copy (never the partitioned model, whose forward is a collective).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageDraw

from vidact.data.transforms import frame_to_uint8
from vidact.generative.sample import Sampler, SamplerConfig
from vidact.generative.schedule import Mode
from vidact.lit.strategy import deepspeed_zero_stage, gathered
from vidact.types import Batch

PLOT_W, PLOT_H = 160, 90
VIDEO_FPS = 4
VIDEO_MIN_HEIGHT = 128  # small frames are scaled up (nearest) to at least this tile height


def pick(batch: Batch, n: int) -> Batch:
    """``n`` samples of ``batch``, those with actions first (a co-training batch mixes both)."""
    order = list(range(batch.batch_size))
    if batch.has_actions is not None:
        order.sort(key=lambda i: not bool(batch.has_actions[i]))
    index = order[:n]
    out = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor):
            value = value[torch.tensor(index, device=value.device)]
        elif isinstance(value, list):
            value = [value[i] for i in index]
        out[f.name] = value
    return Batch(**out)


def frames_grid(obs: torch.Tensor, real: torch.Tensor | None, predicted: torch.Tensor | None) -> Image.Image:
    """obs [B,Th,V,C,H,W], real / predicted [B,Tf,V,C,H,W] -> one image, a row per sample."""
    rows = []
    for b in range(obs.shape[0]):
        tiles = [frame_to_uint8(obs[b, -1, 0])]
        for video in (real, predicted):
            if video is not None:
                tiles += [frame_to_uint8(video[b, t, 0]) for t in range(video.shape[1])]
        gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        rows.append(np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1))
    gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([x for row in rows for x in (row, gap)][:-1], axis=0))


def actions_plot(real: torch.Tensor | None, predicted: torch.Tensor) -> Image.Image:
    """real / predicted [B,K,A] -> a grid of small line plots (rows: samples, columns: dims)."""
    B, K, A = predicted.shape
    image = Image.new("RGB", (A * PLOT_W, B * PLOT_H), "white")
    draw = ImageDraw.Draw(image)
    for b in range(B):
        for a in range(A):
            x0, y0 = a * PLOT_W, b * PLOT_H
            series = [(predicted[b, :, a], (200, 30, 30))]
            if real is not None:
                series.insert(0, (real[b, :, a], (30, 150, 30)))
            values = torch.cat([s for s, _ in series]).float()
            lo, hi = float(values.min()), float(values.max())
            span = hi - lo or 1.0
            draw.rectangle([x0 + 2, y0 + 2, x0 + PLOT_W - 3, y0 + PLOT_H - 3], outline=(200, 200, 200))
            for s, color in series:
                points = [(x0 + 6 + (PLOT_W - 12) * k / max(K - 1, 1),
                           y0 + PLOT_H - 8 - (PLOT_H - 16) * (float(v) - lo) / span) for k, v in enumerate(s)]
                draw.line(points, fill=color, width=2)
            draw.text((x0 + 5, y0 + 3), f"s{b} a{a}", fill=(0, 0, 0))
    return image


def _full_ema(pl_module) -> dict[str, torch.Tensor]:
    full = getattr(pl_module, "full_ema", None)
    return full() if full is not None else dict(getattr(pl_module, "ema", None) or {})


def video_frames(obs: torch.Tensor, real: torch.Tensor | None, predicted: torch.Tensor) -> np.ndarray:
    """obs [B,Th,V,C,H,W], real / predicted [B,Tf,V,C,H,W] -> [Th+Tf, H', W', 3] uint8 (first camera).

    Each frame: one row per sample, real | predicted side by side (black where the real future is
    unknown); the history frames show the observation on both sides. Scaled up by an integer
    factor to ``VIDEO_MIN_HEIGHT`` and padded to even sizes (H.264 with yuv420p needs them).
    """
    B, Th = obs.shape[:2]
    scale = max(1, -(-VIDEO_MIN_HEIGHT // obs.shape[-2]))
    clip = []
    for t in range(Th + predicted.shape[1]):
        rows = []
        for b in range(B):
            if t < Th:
                left = right = frame_to_uint8(obs[b, t, 0])
            else:
                right = frame_to_uint8(predicted[b, t - Th, 0])
                left = frame_to_uint8(real[b, t - Th, 0]) if real is not None else np.zeros_like(right)
            gap = np.full((left.shape[0], 2, 3), 255, np.uint8)
            rows.append(np.concatenate([left, gap, right], axis=1))
        gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
        frame = np.concatenate([x for row in rows for x in (row, gap)][:-1], axis=0)
        clip.append(frame.repeat(scale, axis=0).repeat(scale, axis=1))
    video = np.stack(clip)
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    return np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)


def write_mp4(frames: np.ndarray, path: Path, fps: int = VIDEO_FPS) -> Path:
    """[T,H,W,3] uint8 -> an H.264 mp4 at ``path`` (vidact's one mp4 writer, written atomically)."""
    from vidact.data.webvideo import write_video

    return write_video(path, frames, fps=fps, options={"crf": "18"})


class MediaCallback(Callback):
    def __init__(self, cfg, folder: Path):
        self.cfg, self.folder = cfg, Path(folder)
        self._model = None  # a copy of the model that holds the EMA weights
        self._last_step: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, item, batch_idx) -> None:
        step, every = trainer.global_step, self.cfg.log.media_every
        if step == 0 or step % every or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        if self._last_step == step:
            return
        self._last_step = step
        zero3 = deepspeed_zero_stage(trainer) == 3
        if not (trainer.is_global_zero or zero3):
            return
        # ZeRO-3: every rank takes part in gathering the weights; only rank 0 copies and samples.
        with gathered(trainer, pl_module.model.parameters()):
            ema = _full_ema(pl_module)  # collective under ZeRO-3 (the EMA is sharded like the weights)
            model = self._ema_model(pl_module, ema) if trainer.is_global_zero else None
        if trainer.is_global_zero:
            self.write(pl_module, item[1], step, trainer.loggers, model=model)

    @torch.no_grad()
    def write(self, pl_module, batch: Batch, step: int, loggers=(), model=None) -> list[Path]:
        model = model if model is not None else self._ema_model(pl_module, _full_ema(pl_module))
        batch = pick(batch, self.cfg.log.media_samples)
        # Samples without actions among those picked: the whole set is shown in video mode.
        has_actions = batch.actions is not None and (batch.has_actions is None or bool(batch.has_actions.all()))
        if model.future_tokens == 0:
            mode = Mode.POLICY_FAST
        else:
            mode = Mode.POLICY if has_actions else Mode.VIDEO
        sampler = Sampler(model, SamplerConfig(steps=self.cfg.log.media_sampler_steps, seed=step))
        out = sampler.sample(batch, mode, seed=step)
        self.folder.mkdir(parents=True, exist_ok=True)
        written, videos = [], []
        if out.future_frames is not None:
            path = self.folder / f"step-{step:08d}-frames.png"
            frames_grid(batch.obs_frames, batch.future_frames, out.future_frames).save(path)
            written.append(path)
            video = self.folder / f"step-{step:08d}-video.mp4"
            videos.append(write_mp4(video_frames(batch.obs_frames, batch.future_frames, out.future_frames), video))
        if out.actions is not None and mode != Mode.VIDEO:
            path = self.folder / f"step-{step:08d}-actions.png"
            actions_plot(batch.actions if has_actions else None, out.actions).save(path)
            written.append(path)
        for logger in loggers:
            if hasattr(logger, "log_image") and written:
                logger.log_image(key="media", images=[str(p) for p in written],
                                 caption=[p.name for p in written], step=step)
            if hasattr(logger, "log_video") and videos:
                logger.log_video(key="media/video", videos=[str(p) for p in videos], step=step,
                                 caption=[p.name for p in videos], format=["mp4"] * len(videos))
        return written + videos

    def _ema_model(self, pl_module, ema: dict[str, torch.Tensor]):
        """Rank 0's full copy of the model with the ``ema`` weights (whole tensors). Under ZeRO-3 call
        it inside :func:`vidact.lit.strategy.gathered`: the live parameters hold empty shards outside."""
        hidden = getattr(pl_module, "zero3_hidden", None) or {}  # frozen modules kept out of ZeRO-3
        if self._model is None:
            if hidden:  # a deep copy of a partitioned model would copy empty shards
                from vidact.models import VidAct

                self._model = VidAct(pl_module.model.config)
            else:
                self._model = copy.deepcopy(pl_module.model)
        model = self._model
        with torch.no_grad():
            model.load_state_dict(pl_module.model.state_dict(), strict=not hidden)
            for key, module in hidden.items():
                model.get_submodule(key.removeprefix("model.")).load_state_dict(module.state_dict())
            if ema:
                params = dict(model.named_parameters())
                for name, value in ema.items():
                    params[name].copy_(value.to(params[name].dtype))
        return model.float().eval()  # fp32 whatever the training precision (DeepSpeed bf16 casts the weights)
