"""A few demos with actions and many videos without: which way of using the videos pays? Issue 14.

The setting (``vidact data metaworld --episodes 5 --action-free 50 --video-out V``): per task, 5
expert demos with actions and 50 more expert episodes kept only as action-free mp4s (their true
actions withheld in ``V/withheld_actions``, for the label error). Every arm trains the same model
(``recipes/finetune_metaworld_few.yaml``: the quickstart's shape) for the same total number of
optimizer steps (``--steps``) with the same seed, and is evaluated by ``vidact eval`` (policy_fast,
held-out seeds 1e9.., ``--max-steps`` cap) on every task:

(a) ``demos``: the 5 demos only.
(b) ``cotrain``: the demos and the videos in one stream (``data.kind: mixture``, ``--video-weight``
    of the samples are video clips, trained in ``video`` mode: ``has_actions=False``).
(c) ``pretrain``: ``video`` mode on the videos for half the steps, then the demos for the other
    half (``train.init_from``).
(d) ``labels``: the videos labelled with actions by arm (a)'s own model (``vidact label``: its
    inverse_dynamics mode; the state read from the frames by a judge trained on the demos with
    ``vidact judge``), then the demos and the labelled episodes from scratch. The labeller's
    training (arm (a)) is not counted in (d)'s steps: the table gives its time.
(d2) ``state_labels``: as (d), but labelled by ``vidact label --labeller state``: the judge's read
    states turned into actions by a state-space inverse-dynamics network fitted on the demos.
(o) ``true_labels``: not a way of using action-free videos but the ceiling of (d) and (d2): the
    demos and the videos with their withheld true actions (and true states), mixed as in (d).
(e) ``synth``: (c)'s model as a world model: a judge trained on the demos and on its own imagined
    frames (``vidact judge --train-on-imagined``), ``vidact synth`` imagines one episode from each
    new scene's first frame (``--starts``: simulator resets no demo or video came from) and keeps
    the ones the judge accepts; then the demos and the accepted synthetic episodes from scratch.
(f) ``features``: (c)'s video model frozen (every video and language input, the time embedding and
    the first ``depth - 1`` transformer blocks: ``train.freeze``), an action head on its features
    (the last block, the action and state projections) trained on the demos for the other half of
    the steps, ``policy_fast`` only (the features of the observed frames; VPP also feeds one noisy
    future, which this head does not see).

One invocation runs one training seed (``--seed``); run one per core with ``taskset`` and then
``--report`` for the table over every seed found in ``--out``. Stages are skipped when their
output exists, so an interrupted run resumes.

    DATA=outputs/af
    vidact data metaworld --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 --episodes 5 \\
        --action-free 50 --seed 4000 --height 96 --width 96 --video-out $DATA/videos --out $DATA/demos
    vidact data metaworld --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 --episodes 50 \\
        --seed 3000000 --max-steps 1 --keep-failed --height 96 --width 96 --out $DATA/starts
    taskset -c 0 python bench/bench_action_free.py --data $DATA --seed 0 &
    taskset -c 1 python bench/bench_action_free.py --data $DATA --seed 1; wait
    python bench/bench_action_free.py --data $DATA --report

The table lands in OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import VIDACT, run  # noqa: E402
from bench_pretraining import check_settings, evaluate_arm, noise_suffix, stage, train  # noqa: E402

from vidact.deploy.sim import wilson_interval  # noqa: E402

TASKS = ["button-press-topdown-v3", "drawer-open-v3", "door-open-v3"]
ARMS = {"demos": "(a) 5 demos only", "cotrain": "(b) demos + videos co-trained (video mode)",
        "pretrain": "(c) video pretraining, then the demos", "labels": "(d) demos + pseudo-labelled videos",
        "state_labels": "(d2) demos + videos labelled from the states the judge reads",
        "true_labels": "(o) demos + videos with their true actions (the ceiling of any labeller)",
        "synth": "(e) demos + synthetic episodes imagined by (c)",
        "features": "(f) frozen video model of (c), action head on its features"}
# Every arm: the quickstart model, and state dropout so that the model also acts without
# proprioception (how `vidact label` reads a video: it has no state).
COMMON = ["generative.state_dropout=0.3"]
# (f): the video model's parameters (the quickstart shape: depth 4); blocks.3, final_adaLN, action_*,
# state_proj stay trainable.
VIDEO_MODEL = ["text_encoder", "text_proj", "modality_emb", "obs_pos", "future_pos", "view_emb", "history_emb",
               "future_time_emb", "obs_proj", "future_in", "future_out", "time_embed", "backbone.blocks.0",
               "backbone.blocks.1", "backbone.blocks.2"]


def lerobot(path, weight: float | None = None) -> str:
    w = f", weight: {weight}" if weight is not None else ""
    return f"{{kind: lerobot, path: {path}{w}}}"


def clips_manifest(videos: Path, copies: int) -> Path:
    """The action-free videos' manifest, each video listed ``copies`` times (the web-video loader draws
    one clip per entry per epoch and drops a partial last batch; each copy draws its own clip)."""
    manifest = videos / "manifest.jsonl"
    if not manifest.is_file():
        sys.exit(f"{manifest} not found: generate the setting first (see this script's docstring)")
    out = videos / f"manifest_x{copies}.jsonl"
    if not out.is_file():  # written once and atomically: the seeds' runs read it concurrently
        entries = manifest.read_text().splitlines()
        staging = out.with_suffix(f".tmp-{os.getpid()}")
        staging.write_text("".join(line + "\n" for line in entries for _ in range(copies)))
        os.replace(staging, out)
    return out


def webvideo(manifest: Path, weight: float | None = None) -> str:
    w = f", weight: {weight}" if weight is not None else ""
    return f"{{kind: webvideo, path: {manifest}, fps: 80.0, fit: resize{w}}}"


SETTINGS = ("data", "tasks", "steps", "recipe", "video_weight", "clips_per_video", "judge_steps", "synth_episodes",
            "eval_episodes", "max_steps", "state_noise", "idm_steps", "labelled_weight")


def run_seed(args, env) -> None:
    data = Path(args.data).resolve()
    demos, videos = data / "demos", data / "videos"
    root = Path(args.out).resolve() / f"seed{args.seed}"
    root.mkdir(parents=True, exist_ok=True)
    check_settings(root, args, SETTINGS)
    clips = clips_manifest(videos, args.clips_per_video)
    common = [*COMMON, f"seed={args.seed}"]
    half = args.steps // 2
    # (d), (d2), (o): the demos' and the labelled videos' shares of the stream (default: the mixture's)
    weights = (1 - args.labelled_weight, args.labelled_weight) if args.labelled_weight else (None, None)

    def arm(name: str, recipe_overrides: list[str], steps: int = args.steps, init: str | None = None) -> dict:
        path = root / name
        path.mkdir(exist_ok=True)
        extra = [f"train.init_from={init}"] if init else []
        return stage(root, name, lambda: train(args.recipe, path / "run", steps, [*common, *recipe_overrides, *extra],
                                               path / "train.log", env))

    def finish(name: str, info: dict) -> None:
        results = evaluate_arm(root / name, args, env)
        (root / name / f"results{noise_suffix(args.noise_scale, args.eval_seed)}.json").write_text(
            json.dumps({"train": info, "eval": results, "noise_scale": args.noise_scale}, indent=2))

    if {"demos", "labels", "state_labels"} & set(args.arms):
        a = arm("demos", [f"data.sources=[{lerobot(demos)}]"])
        finish("demos", a)
    if {"labels", "state_labels"} & set(args.arms):
        # (d)'s labellers read arm (a)'s run: its judge reads the state from the frames; (d) labels
        # with the model's inverse_dynamics mode, (d2) with a state-space inverse-dynamics network
        # fitted on the demos (`vidact label --labeller state`).
        a_run = Path(a["run_dir"])
        judge = stage(root, "judge", lambda: {"seconds": run(
            [*VIDACT, "judge", str(a_run), "--datasets", str(demos), "--steps", str(args.judge_steps),
             "--imagine-horizon", "0", "--threads", "1", "--seed", str(args.seed)], root / "judge.log", env)})
        for name, stage_name, labelled, extra in (
                ("labels", "label", root / "labelled", ["--labeller", "model"]),
                ("state_labels", "label_state", root / "labelled_state",
                 ["--labeller", "state", "--demos", str(demos), "--state-noise", str(args.state_noise),
                  "--idm-steps", str(args.idm_steps)])):
            if name not in args.arms:
                continue
            label = stage(root, stage_name, lambda: {
                "seconds": run([*VIDACT, "label", str(a_run), "--videos", str(videos / "manifest.jsonl"),
                                "--true-actions", str(videos / "withheld_actions"), "--threads", "1", "--seed",
                                str(args.seed), "--out", str(labelled), "--overwrite", *extra],
                               root / f"{stage_name}.log", env)})
            d = arm(name, ["data.kind=mixture", f"data.sources=[{lerobot(demos, weights[0])}, "
                                                f"{lerobot(labelled, weights[1])}]"])
            finish(name, dict(d, judge_seconds=judge["seconds"], label_seconds=label["seconds"]))
    if "true_labels" in args.arms:
        o = arm("true_labels", ["data.kind=mixture", f"data.sources=[{lerobot(demos, weights[0])}, "
                                                     f"{lerobot(videos / 'withheld_actions', weights[1])}]"])
        finish("true_labels", o)
    if {"pretrain", "features", "synth"} & set(args.arms):
        pre = arm("pretrain_video", ["data.kind=webvideo", f"data.sources=[{webvideo(clips)}]"], steps=half)
    if {"pretrain", "synth"} & set(args.arms):
        c = arm("pretrain", [f"data.sources=[{lerobot(demos)}]"], steps=args.steps - half, init=pre["run_dir"])
        finish("pretrain", dict(c, pretrain_steps=half, pretrain_seconds=pre["train_seconds"]))
    if "features" in args.arms:
        f = arm("features", [f"data.sources=[{lerobot(demos)}]", "generative.mode_weights={policy_fast: 1.0}",
                             f"train.freeze=[{', '.join(VIDEO_MODEL)}]"], steps=args.steps - half, init=pre["run_dir"])
        finish("features", dict(f, pretrain_steps=half, pretrain_seconds=pre["train_seconds"]))
    if "cotrain" in args.arms:
        b = arm("cotrain", ["data.kind=mixture", f"data.sources=[{lerobot(demos, 1 - args.video_weight)}, "
                                                 f"{webvideo(clips, args.video_weight)}]"])
        finish("cotrain", b)
    if "synth" in args.arms:
        starts = data / "starts"
        if not (starts / "meta" / "info.json").is_file():
            sys.exit(f"{starts} not found: generate the new scenes first (see this script's docstring)")
        c_run = Path(c["run_dir"])
        wm_judge = stage(root, "judge_c", lambda: {"seconds": run(
            [*VIDACT, "judge", str(c_run), "--datasets", str(demos), "--steps", str(args.judge_steps),
             "--imagine-horizon", "16", "--train-on-imagined", "16", "--threads", "1", "--seed", str(args.seed)],
            root / "judge_c.log", env)})
        synthetic = root / "synthetic"

        def synthesize() -> dict:
            cmd = [*VIDACT, "synth", str(c_run), "--start-frames", str(starts), "--episodes", str(args.synth_episodes),
                   "--max-attempts", str(args.synth_episodes), "--batch-size", "8", "--max-steps", str(args.max_steps),
                   "--threads", "1", "--seed", str(args.seed), "--out", str(synthetic), "--overwrite"]
            try:
                return {"seconds": run(cmd, root / "synth.log", env)}
            except RuntimeError:  # the judge accepted nothing (or synth failed): the log says which
                print(f"== synth wrote no dataset; see {root / 'synth.log'}; arm (e) not trained", flush=True)
                return {"seconds": None, "failed": True}

        synth = stage(root, "synthesize", synthesize)
        if synth.get("failed"):
            return
        meta = json.loads((synthetic / "meta" / "vidact_synth.json").read_text())
        e = arm("synth", ["data.kind=mixture", f"data.sources=[{lerobot(demos)}, {lerobot(synthetic)}]"])
        finish("synth", dict(e, judge_seconds=wm_judge["seconds"], synth_seconds=synth["seconds"],
                             synthetic_accepted=meta["accepted"], synthetic_imagined=meta["imagined"]))


def parquet_frames(root: Path):
    """A LeRobot dataset's frames (its parquet files) as one DataFrame in frame order."""
    import pandas as pd

    return pd.concat([pd.read_parquet(f) for f in sorted(root.glob("data/*/*.parquet"))]).sort_values("index")


def label_figure(labelled: dict[str, Path], withheld: Path, tasks: list[str], out: Path) -> Path:
    """The label-error figure: for the first action-free video of each task, the true x / y / z
    actions (black) against each labeller's (one colour each), one panel per task and axis, each
    from -1 (bottom) to 1 (top)."""
    import numpy as np
    from PIL import Image, ImageDraw

    colors = [(200, 40, 40), (30, 90, 200), (20, 150, 60)]
    true = parquet_frames(withheld)
    labels = {name: parquet_frames(path) for name, path in labelled.items()}
    first = {}  # task -> episode index of its first video
    meta = json.loads((next(iter(labelled.values())) / "meta" / "vidact_labels.json").read_text())
    for ep, record in enumerate(meta["episodes"]):
        first.setdefault(Path(record["video"]).name.split("_seed")[0], ep)
    pw, ph, pad = 300, 150, 30
    img = Image.new("RGB", (3 * pw + pad, len(tasks) * ph + 2 * pad), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(["true", *labels]):
        draw.text((pad + 200 * i, 6), name, fill=(0, 0, 0) if name == "true" else colors[(i - 1) % len(colors)])
    for row, task in enumerate(tasks):
        ep = first.get(task)
        if ep is None:
            continue
        series = {"true": np.stack(true[true.episode_index == ep].action.values)}
        series |= {n: np.stack(f[f.episode_index == ep].action.values) for n, f in labels.items()}
        for axis in range(3):
            x0, y0 = pad + axis * pw, pad + row * ph
            draw.rectangle([x0, y0, x0 + pw - 10, y0 + ph - 20], outline=(160, 160, 160))
            draw.text((x0 + 4, y0 + 2), f"{task.removesuffix('-v3')} {'xyz'[axis]}", fill=(0, 0, 0))
            for k, (name, a) in enumerate(series.items()):
                n = len(a)
                xy = [(x0 + t / max(n - 1, 1) * (pw - 10), y0 + (1 - (float(np.clip(a[t, axis], -1, 1)) + 1) / 2)
                       * (ph - 20)) for t in range(n)]
                draw.line(xy, fill=(0, 0, 0) if name == "true" else colors[(k - 1) % len(colors)],
                          width=2 if name == "true" else 1)
    img.save(out)
    return out


def label_breakdown(labelled: Path, withheld: Path, chunk: int = 16) -> dict:
    """The labels against the withheld true actions, per task, per action dimension (mean absolute
    error, correlation), and per ``chunk``-step block (the error of what a block adds up to: the
    displacement the frames show)."""
    import numpy as np

    lab, true = parquet_frames(labelled), parquet_frames(withheld)
    meta = json.loads((labelled / "meta" / "vidact_labels.json").read_text())
    per_task: dict[str, list[float]] = {}
    for record in meta["episodes"]:
        per_task.setdefault(Path(record["video"]).name.split("_seed")[0], []).append(record["label_mae"])
    sums, a_all, b_all, state_errors = [], [], [], []
    for ep in sorted(lab.episode_index.unique()):
        mine, theirs = lab[lab.episode_index == ep], true[true.episode_index == ep]
        a, b = np.stack(mine.action.values), np.stack(theirs.action.values)
        n = min(len(a), len(b)) // chunk * chunk
        a_all.append(a[:n]), b_all.append(b[:n])
        state_errors.append(np.abs(np.stack(mine["observation.state"].values)[:n]
                                   - np.stack(theirs["observation.state"].values)[:n]))
        sums.append(np.abs(a[:n].reshape(-1, chunk, a.shape[1]).sum(1) - b[:n].reshape(-1, chunk, b.shape[1]).sum(1)))
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    return {"per_task_mae": {t: round(float(np.mean(v)), 3) for t, v in per_task.items()},
            "per_dim_mae": [round(float(x), 3) for x in np.abs(a - b).mean(0)],
            "per_dim_correlation": [round(float(np.corrcoef(a[:, i], b[:, i])[0, 1]), 3) for i in range(a.shape[1])],
            f"per_dim_{chunk}_step_sum_mae": [round(float(x), 2) for x in np.concatenate(sums).mean(0)],
            "state_mae_per_dim": [round(float(x), 4) for x in np.concatenate(state_errors).mean(0)]}


def report(args) -> None:
    root = Path(args.out).resolve()
    seeds = sorted(p for p in root.glob("seed*") if p.is_dir())
    if not seeds:
        sys.exit(f"no seed*/ folders in {root}: run this script with --seed first")
    rows, table = {}, []
    for name, title in ARMS.items():
        per_seed = []
        for s in seeds:
            f = s / name / f"results{noise_suffix(args.noise_scale, args.eval_seed)}.json"
            if f.is_file():
                per_seed.append((s.name, json.loads(f.read_text())))
        if per_seed:
            rows[name] = per_seed
    label_files = sorted([*root.glob("seed*/labelled/meta/vidact_labels.json"),
                          *root.glob("seed*/labelled_state/meta/vidact_labels.json")])
    labels = [json.loads(f.read_text()) for f in label_files]
    header = ("| arm | seed | " + " | ".join(args.tasks) + " | mean (Wilson 95% over the pooled episodes) | "
              "train min | other min |")
    table += [header, "|---|---|" + "---|" * len(args.tasks) + "---|---:|---:|"]
    summary = {}
    for name, per_seed in rows.items():
        pooled_k = pooled_n = 0
        for seed, r in per_seed:
            cells, k_all, n_all = [], 0, 0
            for t in args.tasks:
                e = r["eval"].get(t)
                if e is None:
                    cells.append("-")
                    continue
                cells.append(f"{e['successes']}/{e['episodes']}")
                k_all, n_all = k_all + e["successes"], n_all + e["episodes"]
            lo, hi = wilson_interval(k_all, n_all)
            train_min = (r["train"]["train_seconds"] + r["train"].get("pretrain_seconds", 0)) / 60
            # Compute outside the arm's own training: (d)'s labeller (arm (a), its judge, labelling),
            # (e)'s judge and imagination (its world model is arm (c)'s).
            other = {"labels": ("judge_seconds", "label_seconds"), "state_labels": ("judge_seconds", "label_seconds"),
                     "synth": ("judge_seconds", "synth_seconds")}
            other_min = sum(r["train"].get(k) or 0 for k in other.get(name, ())) / 60
            table.append(f"| {ARMS[name]} | {seed} | " + " | ".join(cells)
                         + f" | {100 * k_all / max(n_all, 1):.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%) | {train_min:.1f} | "
                         + (f"{other_min:.1f} |" if other_min else "- |"))
            pooled_k, pooled_n = pooled_k + k_all, pooled_n + n_all
        lo, hi = wilson_interval(pooled_k, pooled_n)
        summary[name] = {"successes": pooled_k, "episodes": pooled_n, "rate": pooled_k / max(pooled_n, 1),
                         "wilson95": [lo, hi], "seeds": [s for s, _ in per_seed]}
        table.append(f"| **{ARMS[name]}** | all |" + " |" * len(args.tasks) + f" **{100 * pooled_k / max(pooled_n, 1):.0f}%** "
                     f"({100 * lo:.0f}-{100 * hi:.0f}%, {pooled_k}/{pooled_n}) | | |")
    made = json.loads((seeds[0] / "settings.json").read_text())  # what the runs were made with, not --report's flags
    lines = [f"steps per arm: {made['steps']}; eval: policy_fast, held-out seeds 1e9.., {made['max_steps']}-step cap",
             "",
             *table]
    not_trained = {}
    for s in seeds:  # (e) not trained because `vidact synth` wrote nothing: say why, from its log
        stage_file = s / "synthesize.json"
        if not (stage_file.is_file() and json.loads(stage_file.read_text()).get("failed")):
            continue
        why = ([line for line in (s / "synth.log").read_text().splitlines() if "error:" in line] or ["see synth.log"])[-1]
        not_trained[s.name] = why
        lines.append(f"\n{ARMS['synth']}, {s.name}: not trained. {why}")
    if labels:
        lines += ["", "label error of the labellers (`vidact label`, mean absolute error per action dimension, "
                      "MetaWorld action units in [-1, 1], against the withheld true actions): (d) `--labeller "
                      "model` in labelled/, (d2) `--labeller state` in labelled_state/"]
        withheld = Path(args.data).resolve() / "videos" / "withheld_actions"
        for path, lab in zip(label_files, labels):
            lab["source"] = f"{path.parts[-4]}/{path.parts[-3]}"
            lines.append(f"- {path.parts[-4]}/{path.parts[-3]}: {lab['label_mae']:.3f} over {len(lab['episodes'])} "
                         f"videos (mean action: {lab['mean_action_mae']:.3f})")
            if withheld.is_dir():
                lab["breakdown"] = label_breakdown(path.parents[1], withheld)
                lines.append(f"  {json.dumps(lab['breakdown'])}")
    if labels and withheld.is_dir():  # the first seed's labellers, one colour each
        names = {"labelled": "(d) model labels", "labelled_state": "(d2) state labels"}
        first_seed = {f"{names.get(p.parts[-3], p.parts[-3])}, {p.parts[-4]}": p.parents[1] for p in label_files
                      if p.parts[-4] == seeds[0].name}
        lines.append(f"\nlabel-error figure: {label_figure(first_seed, withheld, args.tasks, root / 'label_error.png')}")
    labels = [{k: v for k, v in lab.items() if k != "episodes"} for lab in labels]
    text = "\n".join(lines)
    suffix = noise_suffix(args.noise_scale, args.eval_seed)
    (root / f"results{suffix}.md").write_text(text + "\n")
    (root / f"results{suffix}.json").write_text(json.dumps({"arms": summary, "synth_not_trained": not_trained,
                                                           "labels": labels,
                                                           "noise_scale": args.noise_scale,
                                                           "eval_seed": args.eval_seed}, indent=2))
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="outputs/af", help="folder with demos/ and videos/ (see the docstring)")
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--seed", type=int, default=0, help="training seed of this invocation")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of every arm ((c): half video, half demos)")
    p.add_argument("--recipe", default="finetune_metaworld_few")
    p.add_argument("--video-weight", type=float, default=0.5, help="(b): share of video clips in the stream")
    p.add_argument("--clips-per-video", type=int, default=4, help="manifest entries per action-free video")
    p.add_argument("--judge-steps", type=int, default=1000, help="(d): the state-reading judge's steps")
    p.add_argument("--state-noise", type=float, default=0.05, help="(d2): `vidact label --state-noise`")
    p.add_argument("--idm-steps", type=int, default=3000, help="(d2): `vidact label --idm-steps`")
    p.add_argument("--labelled-weight", type=float, default=None, help="(d), (d2): share of labelled episodes in "
                   "the stream (default: half)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS),
                   help="arms to run ((a) also runs with (d) and (d2): it is their labeller)")
    p.add_argument("--synth-episodes", type=int, default=150, help="(e): scenes imagined from (one rollout each)")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--videos", type=int, default=1, help="rollout mp4s per task and arm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--noise-scale", type=float, default=None, help="evaluate (and report) at this action-noise "
                   "temperature (`vidact eval --noise-scale`), into ARM/eval_noiseS/ and OUT/results_noiseS.*; "
                   "trained arms are reused")
    p.add_argument("--eval-seed", type=int, default=None, help="first held-out evaluation seed (default: `vidact "
                   "eval`'s, 1e9), into ARM/eval_seedN/ and OUT/results_seedN.*; trained arms are reused")
    p.add_argument("--report", action="store_true", help="only write the table over the seeds in --out")
    p.add_argument("--out", default="outputs/af/bench")
    args = p.parse_args()
    args.heldout, args.windows = "", 0  # evaluate_arm: no imagined-future MSE here
    if args.report:
        report(args)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    run_seed(args, env)
    report(args)


if __name__ == "__main__":
    main()
