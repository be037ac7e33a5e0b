"""Does the world model move the hand as physics does, closed loop? Issue 13's in-model evaluation
over-rates weak policies; this compares, per imagined frame, the hand position in a policy's
imagined episodes (``bench_outcome_judge.py``'s stored episodes) with the hand in the MetaWorld
episodes of the same policy from the same scenes (``vidact eval --save-dataset``, same seeds). The
imagined hand is read by the world model's judge (its state head, the proprioception the policy
gets inside the model); its error on the real frames is reported beside, as the reading's floor.

    W=outputs/wm/bundles/latvw3k_s0
    vidact eval ${W}_step250 --task button-press-topdown-v3 --episodes 20 --max-steps 200 --noise-scale 0.0 \\
        --threads 1 --videos 0 --save-dataset outputs/plan/realpaths/s250 --out outputs/plan/realpaths/s250_eval
    .venv/bin/python bench/bench_hand_paths.py --world-model $W --task button-press-topdown-v3 \\
        --episodes-dir outputs/plan/outcome_judge/episodes --real s250=outputs/plan/realpaths/s250 ...

Imagined frame k stands for control step 8k (the world model's frame stride).

``--replay DATASET ...`` instead: open loop, the recorded actions of each dataset's first
``--replay-episodes`` episodes rolled through the world model from control steps ``--starts``
(0: the episode's first frame, the history before it padded), and the real step whose frame is
nearest each imagined one in pixels. It separates the model's response from the episode start
(where every closed-loop evaluation begins) from its response mid-motion:

    .venv/bin/python bench/bench_hand_paths.py --world-model $W --replay outputs/wm/heldout \
        outputs/plan/realpaths/s250 outputs/plan/realpaths/s3000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def replay(args) -> list[dict]:
    """Open-loop rows: (dataset, start step) -> mean nearest real step for imagined frames 1..3."""
    from vidact.data.robot import RobotDataset
    from vidact.generative.sample import Sampler
    from vidact.worldmodel.env import load_world
    from vidact.worldmodel.imagine import episode_windows
    from vidact.worldmodel.rollout import rollout

    model, sampler_cfg, _ = load_world(args.world_model, args.imagine_steps)
    sampler, stride, frames = Sampler(model, sampler_cfg), model.config.future_frame_stride, 3
    rows = []
    for root in args.replay:
        data = RobotDataset(root, model.config)
        episodes = sorted(data.episode_lengths)[: args.replay_episodes]
        for t0 in args.starts:
            w = episode_windows(data, episodes, frames * stride, start=t0)
            imagined = rollout(sampler, w.start, frames * stride, actions=w.actions, seed=args.seed).frames
            nearest = torch.zeros(len(w.episodes), frames)
            for b, ep in enumerate(w.episodes):
                real = data.episode(ep)["frames"][t0: t0 + 3 * frames * stride, 0].float()
                for k in range(frames):
                    nearest[b, k] = ((real - imagined[b, k, 0].float()[None]) ** 2).flatten(1).mean(1).argmin()
            rows.append({"dataset": root, "start": t0, "episodes": len(w.episodes),
                         "nearest_real_step": [round(float(v), 1) for v in nearest.mean(0)],
                         "true_step": [stride * (k + 1) for k in range(frames)]})
    return rows


def main() -> int:
    from vidact.data.robot import RobotDataset
    from vidact.worldmodel.imagine import load_model
    from vidact.worldmodel.judge import Judge, find_judge

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-model", required=True)
    p.add_argument("--task")
    p.add_argument("--episodes-dir", help="bench_outcome_judge.py's OUT/episodes")
    p.add_argument("--real", nargs="+", metavar="LABEL=DATASET", help="vidact eval --save-dataset")
    p.add_argument("--replay", nargs="+", metavar="DATASET", help="open loop instead: recorded actions from --starts")
    p.add_argument("--replay-episodes", type=int, default=10)
    p.add_argument("--starts", nargs="+", type=int, default=[0, 8, 16])
    p.add_argument("--imagine-steps", type=int, default=None, help="default: the world model's (vidact eval's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", nargs="+", type=int, default=[1, 3, 10, 20])
    p.add_argument("--out", default=None, help="a JSON file for the table")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.replay:
        rows = replay(args)
        lines = ["| dataset | start step | episodes | nearest real step to imagined frames 1, 2, 3 (true: 8, 16, 24) |",
                 "|---|---:|---:|---|"]
        lines += [f"| {r['dataset']} | {r['start']} | {r['episodes']} | "
                  f"{', '.join(str(v) for v in r['nearest_real_step'])} |" for r in rows]
        print("\n".join(lines))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))
        return 0
    if not (args.task and args.episodes_dir and args.real):
        p.error("--task, --episodes-dir and --real are required (or --replay)")
    judge = Judge.load(find_judge(args.world_model))
    model, _ = load_model(args.world_model)
    stride = model.config.future_frame_stride
    rows = []
    for label, root in (x.split("=", 1) for x in args.real):
        e = torch.load(Path(args.episodes_dir) / label / f"{args.task}.pt")
        frames, text = e["frames"], e["text"]
        E, T = frames.shape[:2]
        imagined = judge.predict_state(frames.flatten(0, 1), [text] * (E * T)).view(E, T, -1)[..., :3]
        real = RobotDataset(root, model.config)
        if sorted(real.episode_lengths) != list(range(E)) or e["starts"] != list(range(E)):
            raise SystemExit(f"{root}: episodes {sorted(real.episode_lengths)} do not pair with the {E} imagined ones")
        per = {k: [] for k in args.frames}
        for i in range(E):
            episode = real.episode(i)
            hand = episode["state"][:, :3].float()
            for k in args.frames:
                t = stride * k
                if t >= len(hand) or k >= T:
                    continue  # the real episode ended (success) before this frame
                read = judge.predict_state((episode["frames"][[0, t], 0] * 255).round().to(torch.uint8), [text] * 2)
                # In pixels: the real step whose frame is nearest the imagined frame k (mean squared
                # difference over the frame; the scene is still but for the arm and the objects).
                real_frames = episode["frames"][: min(len(hand), 3 * t + 1), 0].float()
                mse = ((real_frames - frames[i, k].float()[None] / 255) ** 2).flatten(1).mean(1)
                per[k].append([float((hand[t] - hand[0]).norm()), float((imagined[i, k] - imagined[i, 0]).norm()),
                               float((imagined[i, k] - hand[t]).norm()), float((read[1, :3] - hand[t]).norm()),
                               float(mse.argmin()), float(mse[t]), float(mse.min())])
        for k, values in per.items():
            if values:
                m = torch.tensor(values).mean(0).tolist()
                rows.append({"policy": label, "frame": k, "step": stride * k, "episodes": len(values),
                             "real_moved_m": m[0], "imagined_moved_m": m[1], "imagined_vs_real_m": m[2],
                             "reading_error_on_real_m": m[3], "nearest_real_step_in_pixels": m[4],
                             "pixel_mse_at_step": m[5], "pixel_mse_nearest": m[6]})
    lines = ["| policy | frame (step) | episodes | real hand moved, m | imagined hand moved, m | imagined vs real, m "
             "| state-head error on the real frame, m | nearest real step in pixels (mean) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['policy']} | {r['frame']} ({r['step']}) | {r['episodes']} | {r['real_moved_m']:.3f} | "
              f"{r['imagined_moved_m']:.3f} | {r['imagined_vs_real_m']:.3f} | {r['reading_error_on_real_m']:.3f} | "
              f"{r['nearest_real_step_in_pixels']:.1f} |"
              for r in rows]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
