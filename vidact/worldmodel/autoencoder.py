"""``vidact autoencoder --dataset DIR [DIR ...] --out DIR``: train the frame autoencoder
(:mod:`vidact.tokenizers.autoencoder`) on a robot dataset's own frames, for a world model that
predicts latents instead of pixel patches (``model.frame_tokenizer.kind=vae``,
``model.frame_tokenizer.vae_path=OUT``).

Every tenth episode is held out (the last one of fewer than ten). Writes ``OUT/`` (config + weights, what ``vae_path`` reads),
``OUT/autoencoder_eval.json`` (held-out reconstruction MSE / PSNR / moving-pixel MSE: the floor
under any world model decoding through it) and ``OUT/reconstructions.png`` (real over
reconstructed held-out frames).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from vidact.errors import run_command
from vidact.tokenizers.autoencoder import AutoencoderConfig, FrameAutoencoder, reconstruction_loss
from vidact.worldmodel.metrics import MOVING_THRESHOLD, mse, moving_mask

HELDOUT_EVERY = 10  # episode i is held out when i % 10 == 9


def load_frames(datasets: list[str], height: int, width: int) -> tuple[list[Tensor], list[Tensor]]:
    """Every episode's frames [T,C,H,W] uint8 at the given size (cameras as separate sequences),
    split into (training, held-out) by episode."""
    from vidact.data.info import DatasetInfo
    from vidact.data.robot import RobotDataset
    from vidact.models.configuration import VidActConfig

    train, held = [], []
    for root in datasets:
        info = DatasetInfo.read(root)
        channels = info.camera_size(info.camera_keys[0])[2]
        cfg = VidActConfig(height=height, width=width, channels=channels, views=len(info.camera_keys),
                           state_dim=info.dims("observation.state"), action_dim=info.dims("action"))
        dataset = RobotDataset(root, cfg)
        episodes = sorted(dataset.episode_lengths)
        for i, ep in enumerate(episodes):
            frames = (dataset.episode(ep)["frames"] * 255).round().to(torch.uint8)  # [T,V,C,H,W]
            heldout = i % HELDOUT_EVERY == HELDOUT_EVERY - 1 or (len(episodes) < HELDOUT_EVERY and i == len(episodes) - 1)
            for v in range(frames.shape[1]):
                (held if heldout else train).append(frames[:, v])
    return train, held


def sample_pairs(episodes: list[Tensor], n: int, gap: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` frames and the frame ``gap`` steps later in the same episode (clamped), both [n,C,H,W] float [0,1]."""
    lengths = torch.tensor([len(e) for e in episodes])
    eps = torch.multinomial(lengths.float(), n, replacement=True, generator=generator)
    t = (torch.rand(n, generator=generator) * lengths[eps]).long()
    later = torch.minimum(t + gap, lengths[eps] - 1)
    x = torch.stack([episodes[e][i] for e, i in zip(eps.tolist(), t.tolist())]).float() / 255
    y = torch.stack([episodes[e][i] for e, i in zip(eps.tolist(), later.tolist())]).float() / 255
    return x, y


def train_autoencoder(train: list[Tensor], config: AutoencoderConfig, steps: int, batch_size: int, lr: float,
                      moving_weight: float, latent_noise: float, gap: int, seed: int) -> FrameAutoencoder:
    from tqdm import tqdm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = FrameAutoencoder(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    bar = tqdm(range(steps), desc="autoencoder", unit="step")
    for _ in bar:
        x, later = sample_pairs(train, batch_size, gap, generator)
        weight = 1 + moving_weight * moving_mask(x, later).float()  # the arm now and where it goes
        loss = reconstruction_loss(model, x * 2 - 1, weight, latent_noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    with torch.no_grad():  # normalize latents per channel over (a sample of) the training frames
        x, _ = sample_pairs(train, 1024, 0, generator)
        z = torch.cat([model.encode_raw(x[i: i + 128] * 2 - 1) for i in range(0, len(x), 128)])
        model.latent_mean.copy_(z.mean(dim=(0, 2, 3)))
        model.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp(min=1e-6))
    return model


@torch.no_grad()
def evaluate(model: FrameAutoencoder, held: list[Tensor], gap: int) -> tuple[dict, Tensor, Tensor]:
    """Reconstruction error on every held-out frame; returns (metrics, some real frames, their reconstructions)."""
    errors, moving = [], []
    for frames in held:
        x = frames.float() / 255
        recon = torch.cat([reconstruct(model, x[i: i + 128]) for i in range(0, len(x), 128)])
        errors.append(mse(recon, x))
        later = x[torch.clamp(torch.arange(len(x)) + gap, max=len(x) - 1)]
        mask = moving_mask(x, later)
        sq = (recon - x).pow(2).mean(1, keepdim=True)
        moving.append((sq * mask).flatten(1).sum(1)[mask.flatten(1).any(1)] /
                      mask.flatten(1).sum(1)[mask.flatten(1).any(1)])
    err, mov = torch.cat(errors), torch.cat(moving)
    metrics = {"heldout_frames": len(err), "mse": float(err.mean()),
               "psnr": float(10 * torch.log10(1 / err.clamp(min=1e-10)).mean()),
               "moving_pixel_mse": float(mov.mean()) if len(mov) else float("nan"),
               "moving_threshold": MOVING_THRESHOLD}
    picks = [held[i * len(held) // 4] for i in range(min(4, len(held)))]  # mid-episode frames of 4 episodes
    shown = torch.stack([frames[len(frames) // 2] for frames in picks]).float() / 255
    return metrics, shown, reconstruct(model, shown)


def reconstruct(model: FrameAutoencoder, x: Tensor) -> Tensor:
    return ((model.decode(model.encode(x * 2 - 1)) + 1) / 2).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact autoencoder", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", nargs="+", required=True, help="LeRobot dataset folder(s) whose frames it learns")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument("--patch", type=int, default=4, help="space-to-depth factor at the input")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128], help="channels per stage (each later "
                   "stage halves the resolution): latents are H / (patch * 2^(stages-1))")
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--moving-weight", type=float, default=4.0, help="extra loss weight of pixels that move within "
                   "--gap steps (the arm and what it moves)")
    p.add_argument("--latent-noise", type=float, default=0.1, help="noise (x latent std) the decoder learns to "
                   "decode through")
    p.add_argument("--gap", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    return run_command("vidact autoencoder", _autoencoder, p.parse_args(argv), (ValueError, KeyError, FileNotFoundError))


def _autoencoder(args: argparse.Namespace) -> int:
    config = AutoencoderConfig(latent_channels=args.latent_channels, patch=args.patch, widths=list(args.widths),
                               blocks=args.blocks)
    if args.height % config.downsample or args.width % config.downsample:
        raise ValueError(f"frames {args.height}x{args.width} are not divisible by the downsampling "
                         f"{config.downsample} (--patch x 2^(stages-1))")
    train, held = load_frames(args.dataset, args.height, args.width)
    if not train or not held:
        raise ValueError("need at least 2 episodes (every tenth, or the last of fewer than ten, is held out)")
    print(f"vidact autoencoder: {sum(len(e) for e in train)} training frames in {len(train)} episodes, "
          f"{sum(len(e) for e in held)} held out; latents {config.latent_channels}x{args.height // config.downsample}"
          f"x{args.width // config.downsample}")
    start = time.time()
    model = train_autoencoder(train, config, args.steps, args.batch_size, args.lr, args.moving_weight,
                              args.latent_noise, args.gap, args.seed)
    metrics, real, recon = evaluate(model, held, args.gap)
    metrics.update(train_seconds=round(time.time() - start, 1), steps=args.steps, batch_size=args.batch_size,
                   parameters=sum(p.numel() for p in model.parameters()), datasets=list(args.dataset))
    out = model.save_pretrained(args.out)
    (out / "autoencoder_eval.json").write_text(json.dumps(metrics, indent=2))
    from vidact.worldmodel.imagine import filmstrip

    filmstrip(real, [recon[:, None]], [0], list(range(len(real)))).save(out / "reconstructions.png")  # real | recon
    print(f"vidact autoencoder: held-out reconstruction MSE {metrics['mse']:.5f} (PSNR {metrics['psnr']:.1f} dB), "
          f"moving pixels {metrics['moving_pixel_mse']:.4f}; wrote {out}")
    return 0
