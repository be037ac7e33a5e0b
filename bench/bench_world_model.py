"""World-model benchmark: autoregressive rollouts on held-out episodes at several horizons,
every figure beside the no-model baselines measured in the same run.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_world_model.py MODEL [MODEL ...] \\
        --dataset HELDOUT --train-dataset TRAIN --horizons 8 32 64 --out DIR

MODEL: bundles, run directories or checkpoints (``vidact imagine`` loads the same). Windows start
every ``--every`` control steps in every held-out episode that still reaches the longest horizon;
each model imagines them from the real history with the recorded actions (``forward_dynamics``,
its own frames fed back), and again with another window's actions (shuffled: each window gets the
actions of a window half the list away, i.e. of another task). Per horizon:

- full-frame MSE, PSNR and SSIM; MSE on the moving pixels only (those that differ between the last
  observed and the true future frame);
- hand-position error (cm) read by a state probe (a CNN trained here on the real frames of
  ``--train-dataset`` to regress the hand's xyz; its error on the real future frames is its floor);
- baselines: copy the last observed frame; the mean real frame at that horizon.

Writes ``results.json``, ``table.md`` and ``filmstrip.png`` (per window: real, imagined, imagined
with shuffled actions, at each horizon) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from vidact.data.robot import RobotDataset
from vidact.generative.sample import Sampler
from vidact.worldmodel.imagine import episode_windows, filmstrip, load_model
from vidact.worldmodel.metrics import frame_metrics, psnr_of
from vidact.worldmodel.probe import PROBE_CONFIG, ProbeConfig, StateProbe, train_probe
from vidact.worldmodel.rollout import rollout

SHAPE_KEYS = ("height", "width", "channels", "views", "history", "future_frame_stride")


def probe_data(dataset: RobotDataset, dims: list[int], every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames (first camera) of ``dataset`` and the state dims the probe reads."""
    frames, targets = [], []
    for ep in sorted(dataset.episode_lengths):
        data = dataset.episode(ep)
        frames.append(data["frames"][::every, 0])
        targets.append(data["state"][::every, dims])
    return torch.cat(frames), torch.cat(targets)


def get_probe(args, cfg, log) -> tuple[StateProbe, dict]:
    folder = Path(args.probe) if args.probe else Path(args.out) / "probe"
    if (folder / PROBE_CONFIG).is_file():
        log(f"state probe: loading {folder}")
        return StateProbe.load(folder), json.loads((folder / "probe_eval.json").read_text())
    if not args.train_dataset:
        raise SystemExit("--train-dataset is needed to train the state probe (or pass --probe DIR)")
    pcfg = ProbeConfig(channels=cfg.channels, height=cfg.height, width=cfg.width, dims=list(args.probe_dims))
    frames, targets = probe_data(RobotDataset(args.train_dataset, cfg), pcfg.dims)
    log(f"state probe: training on {len(frames)} real frames of {args.train_dataset} ({args.probe_steps} steps)")
    t = time.time()
    probe = train_probe(frames, targets, pcfg, steps=args.probe_steps, seed=args.seed, log=log)
    held_frames, held_targets = probe_data(RobotDataset(args.dataset, cfg), pcfg.dims)
    err = (probe.predict(held_frames) - held_targets).norm(dim=1) * 100
    spread = (held_targets - held_targets.mean(0)).norm(dim=1) * 100
    evaluation = {"heldout_frames": len(held_frames), "heldout_error_cm": float(err.mean()),
                  "heldout_error_cm_median": float(err.median()), "predict_mean_error_cm": float(spread.mean()),
                  "train_seconds": time.time() - t}
    probe.save(folder)
    (folder / "probe_eval.json").write_text(json.dumps(evaluation, indent=2))
    log(f"state probe: held-out real frames {evaluation['heldout_error_cm']:.2f} cm mean error "
        f"(predicting the mean position: {evaluation['predict_mean_error_cm']:.2f} cm)")
    return probe, evaluation


def frames_at(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B,T,V,C,H,W] -> [B*V,C,H,W] at grid index k."""
    return x[:, k].flatten(0, 1)


def score(pred: torch.Tensor, real: torch.Tensor, last: torch.Tensor, probe: StateProbe, hand: torch.Tensor,
          views: int) -> dict[str, float]:
    """pred/real/last [B*V,C,H,W], hand [B,3] true positions -> mean metrics over windows."""
    m = frame_metrics(pred, real, last)
    out = {k: float(np.nanmean(v.numpy())) for k, v in m.items()}
    out["psnr_of_mean_mse"] = psnr_of(out["mse"])
    guess = probe.predict(pred.unflatten(0, (-1, views))[:, 0])
    out["hand_error_cm"] = float(((guess - hand).norm(dim=1) * 100).mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundles, run directories or checkpoints")
    p.add_argument("--labels", nargs="+", default=None, help="a name per model (default: the paths)")
    p.add_argument("--dataset", required=True, help="held-out LeRobot dataset (episodes never trained on)")
    p.add_argument("--train-dataset", default=None, help="real frames to train the state probe on")
    p.add_argument("--probe", default=None, help="a trained probe folder (default: OUT/probe, trained if absent)")
    p.add_argument("--probe-dims", type=int, nargs="+", default=[0, 1, 2], help="state dims the probe reads")
    p.add_argument("--probe-steps", type=int, default=1500)
    p.add_argument("--horizons", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--every", type=int, default=16, help="control steps between window starts in an episode")
    p.add_argument("--steps", type=int, default=10, help="sampler steps")
    p.add_argument("--action-guidance", type=float, nargs="+", default=None,
                   help="classifier-free guidance weights on the actions to try (1: none; needs a model that "
                        "learned video mode on robot samples; default: each model's sampler.action_guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    labels = args.labels or args.models
    if len(labels) != len(args.models):
        raise SystemExit("--labels: one per model")

    models = [load_model(m) for m in args.models]
    cfg = models[0][0].config
    for path, (model, _) in zip(args.models, models):
        diff = [k for k in SHAPE_KEYS if getattr(model.config, k) != getattr(cfg, k)]
        if diff:
            raise SystemExit(f"{path}: differs from {args.models[0]} in {diff}; the windows would differ")
    probe, probe_eval = get_probe(args, cfg, log)

    H = max(args.horizons)
    dataset = RobotDataset(args.dataset, cfg)
    windows = episode_windows(dataset, sorted(dataset.episode_lengths), H, every=args.every)
    B, s, V = len(windows.episodes), cfg.future_frame_stride, cfg.views
    ks = [h // s - 1 for h in args.horizons]
    tasks = sorted(set(windows.start.text))
    log(f"{B} windows of {H} steps from {len(set(windows.episodes))} held-out episodes, "
        f"{len(tasks)} tasks: " + ", ".join(f"{t!r}: {windows.start.text.count(t)}" for t in tasks))
    shuffled = windows.actions.roll(B // 2, 0)  # another task's actions (windows are in episode order)
    last = windows.start.frames[:, -1:]  # [B,1,V,C,H,W]
    hand = windows.future_state[..., args.probe_dims]  # [B,H/s,3]

    results: dict[str, dict] = {"copy last observed frame": {}, "mean future frame": {}, "real future frame": {}}
    imagined_rows: dict[str, torch.Tensor] = {}
    for h, k in zip(args.horizons, ks):
        real_k, last_k = frames_at(windows.real, k), frames_at(last, 0)
        mean_k = windows.real[:, k].mean(0, keepdim=True).expand_as(windows.real[:, k]).flatten(0, 1)
        for name, pred in (("copy last observed frame", last_k), ("mean future frame", mean_k),
                           ("real future frame", real_k)):
            results[name][h] = score(pred, real_k, last_k, probe, hand[:, k], V)
    for model_label, (model, sampler_cfg) in zip(labels, models):
        for w in args.action_guidance or [sampler_cfg.action_guidance]:
            label = model_label if w == 1 else f"{model_label}, action guidance {w:g}"
            sampler = Sampler(model.eval(), dataclasses.replace(sampler_cfg, steps=args.steps, action_guidance=w))
            for variant, acts in (("", windows.actions), (", shuffled actions", shuffled)):
                t = time.time()
                imagined = rollout(sampler, windows.start, H, acts, seed=args.seed, progress=True)
                name = f"{label}{variant}"
                log(f"{name}: {imagined.calls} calls in {time.time() - t:.0f} s")
                results[name] = {h: score(frames_at(imagined.frames, k), frames_at(windows.real, k),
                                          frames_at(last, 0), probe, hand[:, k], V) for h, k in zip(args.horizons, ks)}
                imagined_rows[name] = imagined.frames
            for h in args.horizons:
                true = results[label][h]["hand_error_cm"]
                wrong = results[f"{label}, shuffled actions"][h]["hand_error_cm"]
                results[label][h]["shuffled_over_true_hand_error"] = wrong / max(true, 1e-9)

    lines = [f"{B} windows, {len(set(windows.episodes))} held-out episodes of {len(tasks)} tasks, {args.steps} "
             f"sampler steps, seed {args.seed}; state probe on held-out real frames: "
             f"{probe_eval['heldout_error_cm']:.2f} cm", "",
             "| predictor | horizon | MSE | PSNR dB | SSIM | moving-pixel MSE | hand error cm |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for h in args.horizons:
        for name, per_h in results.items():
            r = per_h[h]
            lines.append(f"| {name} | {h} | {r['mse']:.4f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                         f"{r['moving_mse']:.4f} | {r['hand_error_cm']:.2f} |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"models": dict(zip(labels, args.models)), "dataset": args.dataset, "windows": B, "horizons": args.horizons,
         "sampler_steps": args.steps, "seed": args.seed, "probe": probe_eval,
         "windows_per_task": {t: windows.start.text.count(t) for t in tasks}, "results": results}, indent=2))
    picks = [windows.start.text.index(t) for t in tasks]  # the first window of each task
    sequences = [windows.real[:, :, 0]] + [x[:, :, 0] for x in imagined_rows.values()]
    filmstrip(last[:, 0, 0], sequences, ks, picks).save(out / "filmstrip.png")
    log(f"wrote {out / 'table.md'}, results.json and filmstrip.png (rows per window: real, "
        + ", ".join(imagined_rows) + f"; columns: last observed, then {args.horizons} steps ahead)")


if __name__ == "__main__":
    main()
