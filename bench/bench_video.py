"""How good are the imagined futures? Future-frame error of a policy bundle on held-out robot
windows, against the trivial predictors, per sampling mode.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_video.py BUNDLE DATASET --windows 64 --out DIR

For each of ``--windows`` windows spread evenly over DATASET (a LeRobot dataset the bundle was
not trained on), the bundle's model samples the future frame(s) in ``policy`` (video + actions)
and ``forward_dynamics`` (true actions given) modes; the table gives pixel MSE and PSNR against
the real future frame, beside two predictors that need no model: the last observed frame (copy)
and the mean real future frame over the windows. A model that has learned anything about the
video beats the copy on moving scenes, and every useful one beats the mean. ``--out`` also gets a
PNG grid (observed | real future | imagined per mode) of the first windows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidact.data.robot import RobotDataset
from vidact.deploy.policy import Policy
from vidact.generative.sample import Sampler, SamplerConfig
from vidact.types import Batch

MODES = ("policy", "forward_dynamics")


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def grid(rows: list[list[torch.Tensor]]) -> Image.Image:
    """rows of [C,H,W] frames in [0,1] -> one image."""
    lines = [torch.cat(row, dim=-1) for row in rows]
    img = torch.cat(lines, dim=-2).clamp(0, 1)
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("dataset", help="a LeRobot dataset folder (held out from training)")
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="sampler steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for results.json and futures.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    policy = Policy.from_pretrained(args.bundle)
    model, cfg = policy.model, policy.config
    if model.future_tokens == 0:
        raise SystemExit(f"{args.bundle}: the model predicts no future frames (model.future_frames=0)")
    data = RobotDataset(args.dataset, cfg)
    picks = np.linspace(0, len(data) - 1, args.windows).round().astype(int)
    batch = Batch.collate([data[int(i)] for i in picks]).with_defaults()
    valid = ~batch.future_is_pad  # [B,Tf]: windows near an episode's end have padded futures
    real = batch.future_frames  # [B,Tf,V,C,H,W]

    def mse(pred: torch.Tensor) -> float:
        err = (pred.float() - real).pow(2).mean(dim=(2, 3, 4, 5))  # [B,Tf]
        return float(err[valid].mean())

    results = {"copy last observed frame": mse(batch.obs_frames[:, -1:].expand_as(real)),
               "mean future frame": mse(real[valid].mean(0)[None, None].expand_as(real))}
    sampler = Sampler(model, SamplerConfig(steps=args.steps, seed=args.seed))
    imagined = {}
    with torch.no_grad():
        for mode in MODES:
            imagined[mode] = sampler.sample(batch, mode, seed=args.seed).future_frames
            results[f"vidact {mode}"] = mse(imagined[mode])

    print(f"{args.bundle} on {args.dataset}: {len(picks)} windows, {int(valid.sum())} future frames, "
          f"{args.steps} sampler steps")
    print("| predictor | pixel MSE | PSNR dB |")
    print("|---|---:|---:|")
    for name, value in results.items():
        print(f"| {name} | {value:.4f} | {psnr(value):.1f} |")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({k: {"mse": v, "psnr": psnr(v)} for k, v in results.items()},
                                                     indent=2))
        rows = [[batch.obs_frames[i, -1, 0], real[i, 0, 0], *(imagined[m][i, 0, 0].float() for m in MODES)]
                for i in range(min(8, len(picks)))]
        grid(rows).save(out / "futures.png")
        print(f"wrote {out / 'results.json'} and {out / 'futures.png'} (columns: observed | real | {' | '.join(MODES)})")


if __name__ == "__main__":
    main()
