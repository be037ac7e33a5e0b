"""``vidact imagine RUN_OR_BUNDLE --dataset DIR --horizon H --out DIR``: roll the model forward
from real starting frames of (held-out) episodes and compare what it imagines with what happened.

Writes ``OUT/<episode>.mp4`` (real | imagined | absolute error, one frame per model frame step),
``OUT/filmstrip.png`` (the first episodes, real over imagined) and ``OUT/metrics.json`` (per episode and frame step: MSE, PSNR, SSIM, moving-pixel MSE, beside
copying the last observed frame). ``--policy`` rolls the model's own actions instead of the
recorded ones (closed loop inside the model).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vidact.data.transforms import frame_to_uint8
from vidact.errors import run_command
from vidact.worldmodel.metrics import frame_metrics
from vidact.worldmodel.rollout import RolloutError, RolloutStart, frames_per_call, rollout

VIDEO_FPS = 4
FILMSTRIP = "filmstrip.png"  # rows per episode: real, imagined; columns: start, then each frame step
MIN_TILE = 192  # small frames are scaled up (nearest) to at least this height in the videos


@dataclass
class Windows:
    """B rollout windows cut from whole episodes: the real start, what really happened after."""

    start: RolloutStart
    real: Tensor  # [B, H/s, V,C,H,W] true frames at t0 + s .. t0 + H
    actions: Tensor  # [B,H,A] recorded actions from t0
    future_state: Tensor  # [B, H/s, S] true state at the same steps as ``real``
    episodes: list[int]
    t0: list[int]


def load_model(path: str | Path):
    """A bundle folder (``vidact export``), a run directory or a checkpoint -> (VidAct, SamplerConfig),
    EMA weights where there are any."""
    from vidact.bundle import is_bundle

    path = Path(path)
    if is_bundle(path):
        from vidact.deploy.policy import Policy

        policy = Policy.from_pretrained(path)
        return policy.model, policy.sampler.config
    from vidact.config import from_yaml
    from vidact.export.consolidate import consolidate
    from vidact.models import VidAct

    merged = consolidate(path)
    if merged.run_dir is None:
        raise FileNotFoundError(f"{path}: no config.yaml beside the checkpoint; pass the run directory or a bundle")
    cfg = from_yaml((merged.run_dir / "config.yaml").read_text())
    model = VidAct(cfg.model)
    model.load_state_dict(merged.state_dict, strict=True)
    return model.eval(), cfg.sampler


def episode_windows(dataset, episodes: list[int], horizon: int, start: int | None = None,
                    every: int | None = None) -> Windows:
    """Windows of ``horizon`` control steps from ``dataset`` (a ``RobotDataset``) episodes. The first
    starts at ``start`` (default: the first step with a whole real history); with ``every``, further
    windows start every ``every`` steps while the episode still reaches ``t0 + horizon``."""
    c = dataset.cfg
    s, Th = c.future_frame_stride, c.history
    first = (Th - 1) * s if start is None else start
    if first < 0:
        raise RolloutError(f"--start must be >= 0, got {first}")
    starts, reals, acts, fstate, eps, t0s = [], [], [], [], [], []
    too_short = []
    for ep in episodes:
        data = dataset.episode(ep)
        T = data["frames"].shape[0]
        t0 = first
        if t0 + horizon > T - 1:
            too_short.append(f"{ep} ({T} steps)")
            continue
        while t0 + horizon <= T - 1:
            hist = [t0 - (Th - 1 - i) * s for i in range(Th)]
            rows = [max(0, h) for h in hist]
            grid = [t0 + (k + 1) * s for k in range(horizon // s)]
            starts.append((data["frames"][rows], data["state"][rows], data["text"], [h < 0 for h in hist]))
            reals.append(data["frames"][grid])
            fstate.append(data["state"][grid])
            acts.append(data["action"][t0: t0 + horizon])
            eps.append(ep)
            t0s.append(t0)
            if not every:
                break
            t0 += every
    if not starts:
        raise RolloutError(f"no episode reaches start {first} + horizon {horizon}: episodes {', '.join(too_short)}")
    start_ = RolloutStart(frames=torch.stack([x[0] for x in starts]), state=torch.stack([x[1] for x in starts]),
                          text=[x[2] for x in starts], is_pad=torch.tensor([x[3] for x in starts]))
    return Windows(start_, torch.stack(reals), torch.stack(acts), torch.stack(fstate), eps, t0s)


def _tile(frame: Tensor) -> np.ndarray:
    """[C,H,W] in [0,1] -> [h,w,3] uint8, scaled up by an integer factor to at least MIN_TILE high."""
    img = frame_to_uint8(frame)
    k = max(1, -(-MIN_TILE // img.shape[0]))
    return img.repeat(k, 0).repeat(k, 1)


def side_by_side(first: Tensor, real: Tensor, imagined: Tensor) -> np.ndarray:
    """first [V,C,H,W], real / imagined [T,V,C,H,W] -> [T+1, h, 3w, 3] uint8 frames: real | imagined |
    absolute error (x3 for visibility); views stacked vertically."""
    out = []
    for t in range(real.shape[0] + 1):
        r = first if t == 0 else real[t - 1]
        m = first if t == 0 else imagined[t - 1]
        rows = [np.concatenate([_tile(r[v]), _tile(m[v]), _tile((r[v] - m[v]).abs() * 3)], 1)
                for v in range(r.shape[0])]
        out.append(np.concatenate(rows, 0))
    return np.stack(out)


def filmstrip(last: Tensor, sequences: list[Tensor], columns: list[int], windows: list[int]):
    """A PIL image: per window a block of rows, one per sequence (real first), each row the last
    observed frame then the frames at grid indices ``columns``. last [B,C,H,W]; sequences [B,T,C,H,W]."""
    from PIL import Image

    rows = [torch.cat([last[b]] + [seq[b, k] for k in columns], -1) for b in windows for seq in sequences]
    img = torch.cat(rows, -2).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact imagine", description=__doc__.splitlines()[0])
    p.add_argument("model", help="policy bundle, run directory or checkpoint")
    p.add_argument("--dataset", required=True, help="LeRobot dataset folder with the episodes to start from")
    p.add_argument("--episodes", type=int, nargs="+", default=None, help="episode indices (default: all)")
    p.add_argument("--horizon", type=int, required=True, help="control steps to imagine (a multiple of the "
                   "model's frame stride)")
    p.add_argument("--start", type=int, default=None, help="first step of each rollout (default: the first step "
                   "with a whole real history)")
    p.add_argument("--out", required=True)
    p.add_argument("--policy", action="store_true", help="roll the model's own actions (policy mode) instead of "
                   "the recorded ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--batch-size", type=int, default=16, help="episodes imagined at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    return run_command("vidact imagine", _imagine, p.parse_args(argv),
                       (RolloutError, ValueError, KeyError, FileNotFoundError))


def _imagine(args: argparse.Namespace) -> int:
    from vidact.data.robot import RobotDataset
    from vidact.data.webvideo import write_video
    from vidact.generative.sample import Sampler

    model, sampler_cfg = load_model(args.model)
    if args.steps:
        sampler_cfg.steps = args.steps
    frames_per_call(model, args.horizon)  # bad horizon / video-less model: fail before reading data
    dataset = RobotDataset(args.dataset, model.config)
    lengths = dataset.episode_lengths
    episodes = args.episodes if args.episodes is not None else sorted(lengths)
    missing = [e for e in episodes if e not in lengths]
    if missing:
        raise RolloutError(f"dataset {args.dataset} has no episode(s) {missing}; it has {len(lengths)} episodes "
                           f"({min(lengths)}..{max(lengths)})")
    windows = episode_windows(dataset, episodes, args.horizon, args.start)
    skipped = sorted(set(episodes) - set(windows.episodes))
    if skipped:
        print(f"vidact imagine: skipping episode(s) {skipped}: shorter than start + horizon")
    sampler = Sampler(model, sampler_cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = model.config.future_frame_stride
    records, shown = [], []  # shown: (real, imagined, last) of the first episodes, for the filmstrip
    B = len(windows.episodes)
    from tqdm import tqdm

    for lo in tqdm(range(0, B, args.batch_size), desc="episode batches", unit="batch"):
        idx = slice(lo, lo + args.batch_size)
        start = RolloutStart(windows.start.frames[idx], windows.start.state[idx], windows.start.text[idx],
                             windows.start.is_pad[idx])
        result = rollout(sampler, start, args.horizon, None if args.policy else windows.actions[idx], seed=args.seed,
                         progress=True)
        real, last = windows.real[idx], start.frames[:, -1]
        shown += [(real[b, :, 0], result.frames[b, :, 0], last[b, 0]) for b in range(min(4 - len(shown), len(real)))]
        for b in range(real.shape[0]):
            ep, t0 = windows.episodes[lo + b], windows.t0[lo + b]
            imag = result.frames[b]
            per_step = []
            for k in range(real.shape[1]):
                m = frame_metrics(imag[k], real[b, k], last[b].expand_as(real[b, k]))
                copy = frame_metrics(last[b], real[b, k], last[b])
                per_step.append({"step": t0 + (k + 1) * s, "ahead": (k + 1) * s,
                                 **{f"model_{n}": float(v.mean()) for n, v in m.items()},
                                 **{f"copy_last_{n}": float(v.mean()) for n, v in copy.items()}})
            video = write_video(out / f"episode_{ep:04d}.mp4", side_by_side(last[b], real[b], imag), fps=VIDEO_FPS)
            records.append({"episode": ep, "start": t0, "text": start.text[b], "video": video.name,
                            "steps": per_step})
    final = [r["steps"][-1] for r in records]
    summary = {k: float(np.nanmean([f[k] for f in final])) for k in final[0] if k not in ("step", "ahead")}
    report = {"model": str(args.model), "dataset": str(args.dataset), "horizon": args.horizon,
              "actions": "policy" if args.policy else "recorded", "seed": args.seed, "sampler_steps": sampler_cfg.steps,
              "at_horizon": summary, "episodes": records}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    real, imag, last = (torch.stack(x) for x in zip(*shown))
    filmstrip(last, [real, imag], list(range(real.shape[1])), list(range(len(shown)))).save(out / FILMSTRIP)
    print(f"vidact imagine: {len(records)} episode(s), {args.horizon} steps ahead: model MSE "
          f"{summary['model_mse']:.4f} PSNR {summary['model_psnr']:.1f} dB SSIM {summary['model_ssim']:.3f}; "
          f"copy-last MSE {summary['copy_last_mse']:.4f} PSNR {summary['copy_last_psnr']:.1f} dB "
          f"SSIM {summary['copy_last_ssim']:.3f}")
    print(f"vidact imagine: wrote {out / 'metrics.json'} and {len(records)} video(s) in {out}")
    return 0
