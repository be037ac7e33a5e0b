"""Which observation encoder can find the object and the goal in one 96x96 frame? (issue 15)

A perception probe, apart from any policy: an encoder (``model.obs_encoder.kind``, or the recipe's
frame tokenizer) + the recipe's kind of transformer (2 layers, width 128) + a linear head on the
tokens' average (``--readout attention``: on learned queries' answers instead), trained
on single frames of the demonstrations to predict ``observation.environment_state`` (the object's
and the goal's xyz; ``vidact data metaworld --env-state``). Scored on the episodes' first frames
(before the arm has moved: the picture is the only clue) of the training episodes and of held-out
ones, in cm, beside each task's mean (what a probe blind to the picture does at best). An encoder
that cannot localize here, with a direct target and nothing else to learn, will not do it inside
a policy either.

    .venv/bin/python bench/bench_localize.py --train outputs/small4/data25_env --heldout outputs/small4/heldout_env \\
        --encoders tokenizer keypoints --steps 2000 --out outputs/small4/localize.json

``--scenes N`` trains instead on N freshly rendered first frames per task (MetaWorld reset to a
seed of its own, nothing else: scenes cost a reset and a render, not a demonstration) and scores
on ``--heldout-scenes`` others, at ``--size`` pixels: whether more scenes, or more pixels, are what
it takes to find the goal.

    .venv/bin/python bench/bench_localize.py --scenes 1000 --size 96 --tasks reach-v3 push-v3 pick-place-v3 \\
        peg-insert-side-v3 --encoders tokenizer --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidact import config as vconfig
from vidact.models.vidact import build_obs_encoder
from vidact.scene_encoder import load_frames
from vidact.tokenizers.video import build_frame_tokenizer


def render_scenes(tasks: list[str], n: int, size: int, seed: int, cameras: list[str]) -> dict:
    """``n`` reset scenes per task at ``size`` pixels from each of ``cameras``: first frames only."""
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    from vidact.data.metaworld import ExpertRollout, metaworld_env_state

    frames, target, task = [], [], []
    for number, name in enumerate(tasks):
        env = ExpertRollout(name, cameras, size, size, env_state=True)
        for i in range(n):
            obs = env.reset(seed + 100_000 * number + i)
            frames.append(torch.from_numpy(np.stack(env.render())).permute(0, 3, 1, 2))
            target.append(torch.from_numpy(metaworld_env_state(obs)))
        env.close()
        task += [TASK_DESCRIPTIONS[name]] * n
    return {"frames": torch.stack(frames), "target": torch.stack(target), "task": np.array(task),
            "first": np.ones(len(task), bool)}


class AttentionReadout(nn.Module):
    """``queries`` learned queries attend over the tokens (each can settle on one thing in the
    picture); their answers side by side -> ``out`` values. The policy's scene-state head averages
    the tokens instead (``--readout mean``)."""

    def __init__(self, dim: int, out: int, queries: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.proj = nn.Sequential(nn.LayerNorm(queries * dim), nn.Linear(queries * dim, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, dim] -> [B, out]"""
        x = self.norm(x)
        answer, _ = self.attn(self.queries.expand(len(x), -1, -1), x, x, need_weights=False)
        return self.proj(answer.flatten(1))


class Probe(nn.Module):
    """One encoder for every view; the views' tokens side by side, each token with its own position."""

    def __init__(self, encoder: nn.Module, tokens: int, token_dim: int, out: int, views: int = 1, dim: int = 128,
                 depth: int = 2, readout: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(token_dim, dim)
        self.pos = nn.Parameter(torch.randn(views * tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, depth)
        self.readout = readout
        self.head = (AttentionReadout(dim, out) if readout == "attention"
                     else nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, out)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` (B, views, C, H, W) in [0, 1]."""
        x = torch.cat([self.encoder.encode(frames[:, v]) for v in range(frames.shape[1])], 1)
        x = self.body(self.proj(x) + self.pos)
        return self.head(x) if self.readout == "attention" else self.head(x.mean(1))


def build(kind: str, recipe: str, size: int, patch: int | None = None) -> tuple:
    """(the model config, the encoder of ``kind``: the recipe's frame tokenizer for "tokenizer")."""
    overrides = ["model.env_state_dim=6", f"model.height={size}", f"model.width={size}"]
    if patch:
        overrides += [f"model.frame_tokenizer.patch_size={patch}", f"model.obs_encoder.patch_size={patch}"]
    if kind != "tokenizer":
        overrides += [f"model.obs_encoder.kind={kind}", "model.obs_encoder.freeze=false"]
    c = vconfig.load(recipe, overrides).model
    encoder = build_obs_encoder(c) or build_frame_tokenizer(c.frame_tokenizer, c.channels, c.height, c.width)
    return c, encoder


def score(model: Probe, data: dict, mean: torch.Tensor, std: torch.Tensor, rows: np.ndarray) -> dict:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(data["frames"][i:i + 128].float() / 255) for i in range(0, len(data["frames"]), 128)])
    model.train()
    pred = (pred * std + mean).numpy()
    target = data["target"].numpy()
    out = {}
    for task in sorted(set(data["task"])):
        pick = rows & (data["task"] == task)
        const = np.abs(target[pick] - target[pick].mean(0)).mean(0)
        out[task] = {"n": int(pick.sum()), "mae_cm": (100 * np.abs(pred[pick] - target[pick]).mean(0)).round(2).tolist(),
                     "constant_cm": (100 * const).round(2).tolist()}
    return out


def summary(table: dict) -> str:
    """Object and goal xy error summed over tasks, as a fraction of the constant's (1.0 = blind)."""
    err = sum(sum(r["mae_cm"][i] for i in (0, 1, 3, 4)) for r in table.values())
    const = sum(sum(r["constant_cm"][i] for i in (0, 1, 3, 4)) for r in table.values())
    return f"{err / const:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", help="dataset with observation.environment_state")
    p.add_argument("--heldout", help="held-out episodes of the same tasks")
    p.add_argument("--scenes", type=int, default=0, help="or: train on this many rendered reset scenes per task")
    p.add_argument("--heldout-scenes", type=int, default=50, help="with --scenes: held-out scenes per task")
    p.add_argument("--tasks", nargs="+", default=["reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3"])
    p.add_argument("--cameras", nargs="+", default=["corner2"],
                   help="with --scenes: the views rendered (MetaWorld camera names), all given to the probe")
    p.add_argument("--size", type=int, default=96, help="frame size (datasets: their frames resized to it)")
    p.add_argument("--patch-size", type=int, default=None, help="pixels per patch side (default: the recipe's)")
    p.add_argument("--encoders", nargs="+", default=["tokenizer", "keypoints"],
                   help="tokenizer (the recipe's patches), patch, timm (ResNet-18, random init), keypoints")
    p.add_argument("--readout", choices=["mean", "attention"], default="mean",
                   help="mean: the tokens averaged, then a linear layer (the policy's scene-state head); "
                        "attention: learned queries attend over the tokens")
    p.add_argument("--recipe", default="metaworld_mt10")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=2, help="training frames: every n-th step of every episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.scenes:
        train = render_scenes(args.tasks, args.scenes, args.size, 7_000_000, args.cameras)
        held = render_scenes(args.tasks, args.heldout_scenes, args.size, 8_000_000, args.cameras)
    elif args.train and args.heldout:
        c, _ = build("tokenizer", args.recipe, args.size)
        train, held = load_frames(args.train, c, args.every), load_frames(args.heldout, c, 1)
    else:
        raise SystemExit("give --train and --heldout datasets, or --scenes N")
    print(f"{len(train['frames'])} training frames ({train['first'].sum()} episodes), "
          f"{held['first'].sum()} held-out episodes", flush=True)
    mean, std = train["target"].mean(0), train["target"].std(0).clamp_min(1e-3)
    results = {}
    for kind in args.encoders:
        torch.manual_seed(args.seed)
        _, encoder = build(kind, args.recipe, args.size, args.patch_size)
        model = Probe(encoder, encoder.tokens_per_frame, encoder.token_dim, len(mean), views=train["frames"].shape[1],
                      readout=args.readout)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.time()
        for step in range(args.steps):
            idx = torch.randint(len(train["frames"]), (args.batch_size,), generator=gen)
            loss = (model(train["frames"][idx].float() / 255) - (train["target"][idx] - mean) / std).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % max(1, args.steps // 10) == 0:
                print(f"  {kind} step {step + 1}: loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
        row = {"seconds": round(time.time() - t0), "parameters": sum(q.numel() for q in model.parameters()),
               "train first frames": score(model, train, mean, std, train["first"]),
               "heldout first frames": score(model, held, mean, std, held["first"]),
               "heldout all frames": score(model, held, mean, std, np.ones(len(held["first"]), bool))}
        results[kind] = row
        row.update(scenes=args.scenes, size=args.size, patch_size=args.patch_size, steps=args.steps,
                   readout=args.readout, cameras=args.cameras if args.scenes else "the dataset's")
        print(f"{kind}: {row['parameters'] / 1e6:.2f}M, {row['seconds']} s; object+goal xy error / task mean's: "
              + ", ".join(f"{k} {summary(row[k])}" for k in ("train first frames", "heldout first frames",
                                                               "heldout all frames")), flush=True)
        for task, r in row["heldout first frames"].items():
            print(f"    held-out first frames {task}: {r['mae_cm']} cm (mean's {r['constant_cm']})", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
