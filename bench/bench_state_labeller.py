"""Why the state labeller has the shape it has (issue 14, `vidact label --labeller state`).

On the action-free setting of ``bench_action_free.py``: the demos' true (state, action) pairs fit
each labeller; each is then applied to the states a judge read from the action-free videos (the
``observation.state`` column of a labelled dataset, e.g. ``OUT/seed0/labelled_state``) and scored
against the videos' withheld true actions. Rows: how the action shows in the state (the lag), a
linear fit on state windows of several shapes, and the network ``vidact.data.state_idm`` with and
without training noise. Light: about two minutes on one core.

    .venv/bin/python bench/bench_state_labeller.py --data outputs/af --read outputs/af/bench/seed0/labelled_state
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_action_free import parquet_frames  # noqa: E402

from vidact.data.state_idm import AHEAD, BACK, fit_state_idm, window_features  # noqa: E402


def trajectories(root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(state, action) per episode of a LeRobot dataset, read from its parquet files."""
    frames = parquet_frames(root)
    return [(torch.from_numpy(np.stack(ep["observation.state"].values)).float(),
             torch.from_numpy(np.stack(ep["action"].values)).float()) for _, ep in frames.groupby("episode_index")]


def score(infer, read: list, true: list, chunk: int = 16) -> str:
    """Per-dimension MAE and the MAE of ``chunk``-step sums, of ``infer(states)`` on the read states."""
    errors, sums = [], []
    for (states, _), (_, actions) in zip(read, true):
        n = min(len(states), len(actions))
        labels, real = infer(states[:n]), actions[:n]
        errors.append((labels - real).abs())
        m = n // chunk * chunk
        sums.append((labels[:m].reshape(-1, chunk, real.shape[1]).sum(1)
                     - real[:m].reshape(-1, chunk, real.shape[1]).sum(1)).abs())
    e, s = torch.cat(errors).mean(0), torch.cat(sums).mean(0)
    return (f"{float(e.mean()):.3f} | {' / '.join(f'{x:.2f}' for x in e.tolist())} | "
            f"{' / '.join(f'{x:.1f}' for x in s.tolist())}")


def linear(demos: list, back: int, ahead: int):
    """Least squares of the action on ``window_features`` (plus a constant), clipped to [-1, 1]."""
    x = torch.cat([window_features(s, back, ahead) for s, _ in demos]).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    y = torch.cat([a for _, a in demos]).double()
    w = torch.linalg.lstsq(x, y).solution

    def infer(states):
        f = window_features(states, back, ahead).double()
        return (torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1) @ w).clamp(-1, 1).float()
    return infer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="outputs/af", help="the setting: DATA/demos and DATA/videos/withheld_actions")
    p.add_argument("--read", required=True, help="a labelled dataset whose observation.state a judge read")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    demos, true, read = (trajectories(data / "demos"), trajectories(data / "videos" / "withheld_actions"),
                         trajectories(Path(args.read)))
    if len(read) != len(true):
        sys.exit(f"{args.read} has {len(read)} episodes, the withheld actions {len(true)}")
    print("lag: correlation of a_t with s_{t+j} - s_{t+j-1} on the demos, per axis (x / y / z)")
    for j in range(1, 5):
        x = torch.cat([s[j:] - s[j - 1:-1] for s, _ in demos])[:, :3]
        y = torch.cat([a[:len(a) - j] for _, a in demos])[:, :3]
        corr = [float(np.corrcoef(x[:, i], y[:, i])[0, 1]) for i in range(3)]
        print(f"  j={j}: " + " / ".join(f"{c:.2f}" for c in corr))
    mean = torch.cat([a for _, a in demos]).mean(0)
    print("\n| labeller (fitted on the demos, applied to read states) | MAE | per dimension | 16-step sums |")
    print("|---|---:|---|---|")
    print(f"| mean action | {score(lambda s: mean.expand(len(s), -1), read, true)} |")
    for back, ahead in ((0, 2), (0, 8), (4, 8), (8, 8), (4, 12)):
        print(f"| linear, {back} back, {ahead} ahead | {score(linear(demos, back, ahead), read, true)} |")
    for noise in (0.0, 0.05):
        idm = fit_state_idm(demos, noise=noise, steps=args.steps, seed=args.seed)
        print(f"| network ({BACK} back, {AHEAD} ahead), noise {noise} | {score(idm.infer, read, true)} |")


if __name__ == "__main__":
    main()
