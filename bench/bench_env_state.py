"""Does the scene-state head read the scene, or remember the demonstrations? (issue 15)

A bundle trained with ``model.env_state_dim`` (on data from ``vidact data metaworld --env-state``)
predicts ``observation.environment_state`` (the object's and the goal's xyz) from the newest
frame's tokens. This reports its mean absolute error per dimension, in the data's units (cm for
MetaWorld), on the training episodes and on held-out ones, beside the best constant (each task's
own mean over the windows scored: what a head that ignores the picture can do at best): on every
n-th window and on the episodes' first windows, where the policy must find the object and the goal
in the picture before the arm has moved.

    .venv/bin/python bench/bench_env_state.py --bundle outputs/small4/env6/vidact/eval/step-00001000/policy \\
        --datasets train=outputs/small4/data25_env heldout=outputs/small4/heldout_env --every 10
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vidact.data.robot import RobotDataset
from vidact.deploy.policy import Policy
from vidact.types import Batch


@torch.no_grad()
def predict(model, batch: Batch) -> torch.Tensor:
    """The head's prediction [B,E] in the data's units (the prefix does not read the generated tokens)."""
    B, c = batch.batch_size, model.config
    prefix = model.embed_prefix(batch)
    zero = torch.zeros(B)
    pred = model(prefix, None, torch.zeros(B, c.chunk_length, c.action_dim), zero, zero).env_state
    head = model.env_state_head
    return pred.float() * head.std + head.mean


def evaluate(model, path: str, every: int, batch_size: int = 32) -> dict:
    ds = RobotDataset(path, model.config)
    starts = {start for start, _ in ds.episode_spans.values()}
    items = [i for i in range(len(ds)) if i % every == 0 or ds.row(i) in starts]
    pred, target, first, text = [], [], [], []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        batch = Batch.collate([ds[i] for i in chunk])
        target.append(batch.env_state.float())
        pred.append(predict(model, batch))
        first += [ds.row(i) in starts for i in chunk]
        text += list(batch.text)
    pred, target, first = torch.cat(pred).numpy(), torch.cat(target).numpy(), np.array(first)
    out = {}
    for task in sorted(set(text)):
        pick = np.array([t == task for t in text])
        for name, rows in (("windows", pick), ("first windows", pick & first)):
            const = np.abs(target[rows] - target[rows].mean(0))
            out[f"{task} | {name}"] = {"n": int(rows.sum()),
                                       "mae_cm": (100 * np.abs(pred[rows] - target[rows]).mean(0)).round(1).tolist(),
                                       "constant_cm": (100 * const.mean(0)).round(1).tolist()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="a bundle trained with model.env_state_dim")
    p.add_argument("--datasets", nargs="+", required=True, metavar="LABEL=DIR", help="datasets with "
                   "observation.environment_state (vidact data metaworld --env-state)")
    p.add_argument("--every", type=int, default=10, help="every n-th window (and every episode's first)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = Policy.from_pretrained(args.bundle).model
    if model.env_state_head is None:
        raise SystemExit(f"{args.bundle} has no scene-state head (trained without model.env_state_dim)")
    results = defaultdict(dict)
    print("| data | task | windows | n | error, object x, y, z / goal x, y, z (cm) | the task's mean (cm) |")
    print("|---|---|---|---:|---|---|")
    for item in args.datasets:
        label, path = item.split("=", 1)
        for key, row in evaluate(model, path, args.every).items():
            results[label][key] = row
            task, name = key.split(" | ")
            fmt = lambda v: ", ".join(f"{x:.1f}" for x in v[:3]) + " / " + ", ".join(f"{x:.1f}" for x in v[3:])  # noqa: E731
            print(f"| {label} | {task} | {name} | {row['n']} | {fmt(row['mae_cm'])} | {fmt(row['constant_cm'])} |",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
