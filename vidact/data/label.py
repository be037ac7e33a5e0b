"""``vidact label MODEL --videos MANIFEST --out DIR``: actions for action-free videos, written as a
LeRobot v3 dataset a recipe can train on (issue 14, "video, then inverse dynamics").

Two labellers. ``--labeller state --demos DATASET`` (the default): the judge reads the state
from each frame, and a small state-space inverse-dynamics network fitted on the demos' states and
actions (``vidact.data.state_idm``) turns the read trajectory into actions; on the MetaWorld
setting of issue 14 its labels are about five times closer to the true actions (BENCHMARKS.md).
``--labeller model``: the video model's ``inverse_dynamics`` mode reads the actions from the
frames (no demos needed).

Each video is read at the robot's control rate and fitted to the model's frame size; a video
resampled in time or size is named with what was done. The rate is ``--fps``, by default the
first video's own rate for the model labeller and the demos' rate for the state labeller (which
must read the videos at the rate it was fitted at). The model labeller goes chunk by chunk (every
``chunk_length`` steps): the model is given the observed history and the future frames of the
chunk and generates its ``chunk_length`` actions, all chunks of a video in one batch. Videos carry
no proprioception: the model reads the state as masked out (it learns that with
``generative.state_dropout``). Either way the dataset's ``observation.state`` comes from the
model's judge (``vidact judge``: its state head reads the state from each frame), and the state
labeller's weights are saved in ``meta/state_idm.pt``. ``--true-actions DATASET``, the same
episodes with their recorded actions
(``vidact data metaworld --video-out`` writes both, in the same order; with ``--action-free N``
the videos' own actions are withheld in ``VIDEO_OUT/withheld_actions``), reports the label error
beside the mean-action baseline in ``meta/vidact_labels.json``. The dataset is written beside
``--out`` and moved into place at the end: a run that fails leaves any earlier dataset there intact.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vidact.data.codec import keep_scheduling, video_codec
from vidact.errors import run_command
from vidact.generative.schedule import Mode
from vidact.types import Batch

if TYPE_CHECKING:
    from vidact.data.state_idm import StateInverseDynamics

LABELS_META = "vidact_labels.json"
STATE_IDM_FILE = "state_idm.pt"  # the state labeller's weights, in the labelled dataset's meta/


STATE_NOISE, IDM_STEPS = 0.05, 3000  # the state labeller's defaults


class Labeller(str, Enum):
    MODEL = "model"  # the video model's inverse_dynamics mode
    STATE = "state"  # the judge's read states through a state-space inverse-dynamics network

    def __str__(self) -> str:  # how argparse shows the choices
        return self.value


class LabelError(ValueError):
    """A labelling run that cannot go on as asked; the message names the problem."""


def video_entries(videos: str) -> list[tuple[Path, str]]:
    """(video file, caption) from a manifest (.jsonl / .csv, ``vidact.data.webvideo``) or a folder of mp4s."""
    from vidact.data.webvideo import VIDEO_SUFFIXES, read_manifest

    path = Path(videos)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in VIDEO_SUFFIXES)
        if not files:
            raise LabelError(f"--videos {path}: no video files ({', '.join(VIDEO_SUFFIXES)}) in the folder")
        return [(f, "") for f in files]
    if not path.exists():
        raise LabelError(f"--videos {path} does not exist")
    return [(Path(e.path), e.caption) for e in read_manifest(path)]


def read_frames(path: Path, fps: float | None) -> tuple[torch.Tensor, float]:
    """All frames of a video as uint8 [T,C,H,W], resampled to ``fps`` (nearest frame) when given."""
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path), dimension_order="NCHW")
    except (RuntimeError, ValueError) as e:
        raise LabelError(f"{path}: not a readable video ({str(e).splitlines()[0]})") from None
    own = float(decoder.metadata.average_fps)
    n = decoder.metadata.num_frames
    if fps is None or abs(fps - own) < 1e-3:
        return decoder.get_frames_in_range(0, n).data, own
    duration = n / own
    times = np.arange(0, duration - 0.5 / own, 1 / fps)
    indices = np.minimum(np.rint(times * own).astype(np.int64), n - 1)
    return decoder.get_frames_at(indices=indices.tolist()).data, own


@torch.no_grad()
def infer_actions(sampler, frames: torch.Tensor, text: str, seed: int) -> torch.Tensor:
    """[T,V,C,H,W] frames in [0,1] (one video at the control rate) -> [T,A] inferred actions."""
    model = sampler.model
    c = model.config
    s, K, Th, Tf = c.future_frame_stride, c.chunk_length, c.history, c.future_frames
    T = frames.shape[0]
    starts = list(range(0, T, K))  # the last chunks see clamped (padded) futures
    hist = torch.tensor([[t - (Th - 1 - i) * s for i in range(Th)] for t in starts])
    fut = torch.tensor([[t + (j + 1) * s for j in range(Tf)] for t in starts])
    B = len(starts)
    batch = Batch(obs_frames=frames[hist.clamp(0, T - 1)], state=torch.zeros(B, Th, c.state_dim), text=[text] * B,
                  obs_is_pad=hist < 0, state_is_pad=torch.ones(B, Th, dtype=torch.bool),
                  future_frames=frames[fut.clamp(0, T - 1)], future_is_pad=fut > T - 1)
    actions = sampler.sample(batch, Mode.INVERSE_DYNAMICS, seed=seed).actions.float()  # [B,K,A]
    return actions.reshape(B * K, -1)[:T]


def fit_state_labeller(args: argparse.Namespace, c) -> tuple[StateInverseDynamics, dict, float]:
    """The state labeller, fitted on ``--demos``: (network, its report, the control rate to read the
    videos at: the demos')."""
    from vidact.data.robot import RobotDataset
    from vidact.data.state_idm import fit_state_idm, heldout_error

    if not args.demos:
        raise LabelError("--labeller state (the default) needs --demos: LeRobot datasets with the states and actions "
                         "to fit it on (or --labeller model: the video model's inverse dynamics)")
    if args.state_noise < 0 or args.idm_steps < 1:
        raise LabelError(f"--state-noise must be >= 0 and --idm-steps >= 1; got {args.state_noise}, {args.idm_steps}")
    demos = []
    for d in args.demos:
        if not Path(d).is_dir():
            raise LabelError(f"--demos {d} does not exist")
        try:
            demos.append(RobotDataset(d, c))
        except ValueError as e:
            raise LabelError(f"--demos {d}: {e}") from None
    rates = sorted({ds.fps for ds in demos})
    if len(rates) > 1:
        raise LabelError(f"--demos are recorded at different control rates {rates}; the state labeller needs one")
    if args.fps is not None and abs(args.fps - rates[0]) > 1e-3:
        raise LabelError(f"--fps {args.fps:g} differs from the demos' control rate {rates[0]}: the state labeller "
                         "reads the videos at the rate it was fitted at")
    trajectories = [t for ds in demos for t in ds.trajectories()]
    if len(trajectories) < 2:
        raise LabelError(f"--demos hold {len(trajectories)} episode(s); the state labeller needs at least 2 (one is "
                         "held out to report its error)")
    fit = {"noise": args.state_noise, "steps": args.idm_steps, "seed": args.seed}
    report = heldout_error(trajectories, heldout=max(1, len(trajectories) // 5), **fit)
    print(f"vidact label: state labeller on {report['heldout_episodes']} held-out demo(s): action MAE "
          f"{report['mae']:.4f} vs mean action {report['mean_action_mae']:.4f} (from their true states)", flush=True)
    idm = fit_state_idm(trajectories, **fit)
    return idm, {"demos": [str(Path(d).resolve()) for d in args.demos], "episodes": len(trajectories),
                 "state_noise": args.state_noise, "idm_steps": args.idm_steps, "network": asdict(idm.config),
                 "heldout": report}, float(rates[0])


def label_features(height: int, width: int, channels: int, state_dim: int, action_dim: int) -> dict:
    return {
        "observation.image": {"dtype": "video", "shape": (height, width, channels),
                              "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": None},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact label", description=__doc__.splitlines()[0])
    p.add_argument("model", help="run directory or bundle (a video model trained with inverse_dynamics, and a judge)")
    p.add_argument("--videos", required=True, help="manifest (.jsonl/.csv: path, caption) or a folder of videos")
    p.add_argument("--out", required=True, help="LeRobot dataset folder to write")
    p.add_argument("--fps", type=float, default=None, help="the robot's control rate (default: the first video's own, "
                   "or the demos' with --labeller state; videos at another rate are resampled to it)")
    p.add_argument("--instruction", default=None, help="instruction for videos without a caption")
    p.add_argument("--true-actions", default=None, help="LeRobot dataset with the videos' recorded actions, same "
                   "episodes in the same order: report the label error")
    p.add_argument("--labeller", type=Labeller, choices=list(Labeller), default=Labeller.STATE,
                   help="state (default): the judge's state read from each frame, turned into actions by a "
                   "state-space inverse-dynamics network fitted on --demos; model: the video model's inverse_dynamics "
                   "mode")
    p.add_argument("--demos", nargs="+", default=[], help="LeRobot datasets with states and actions to fit the "
                   "state labeller on (recorded at the videos' control rate)")
    p.add_argument("--state-noise", type=float, default=None, help="state labeller: training noise on the states, "
                   f"in standard deviations of each state dimension (the judge reads states with some error; default "
                   f"{STATE_NOISE})")
    p.add_argument("--idm-steps", type=int, default=None, help=f"state labeller: optimizer steps of its fit (default "
                   f"{IDM_STEPS})")
    p.add_argument("--steps", type=int, default=None, help="model labeller: sampler steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    return run_command("vidact label", _label, p.parse_args(argv), (LabelError, ValueError, FileNotFoundError))


def _label(args: argparse.Namespace) -> int:
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    from vidact.bundle import staged_folder
    from vidact.data.transforms import fit_frames
    from vidact.generative.sample import Sampler
    from vidact.worldmodel.imagine import load_model
    from vidact.worldmodel.judge import Judge, find_judge

    entries = video_entries(args.videos)
    uncaptioned = [str(path) for path, caption in entries if not caption]
    if uncaptioned and not args.instruction:
        raise LabelError(f"{uncaptioned[0]} has no caption; pass --instruction ({len(uncaptioned)} video(s) without one)")
    own = {Labeller.MODEL: {"--steps": args.steps},
           Labeller.STATE: {"--demos": args.demos, "--state-noise": args.state_noise, "--idm-steps": args.idm_steps}}
    for labeller, flags in own.items():
        given = [flag for flag, value in flags.items() if value not in (None, [])]
        if labeller != args.labeller and given:
            raise LabelError(f"{', '.join(given)} belong(s) to --labeller {labeller.value}; this run uses "
                             f"--labeller {args.labeller.value}")
    args.state_noise = STATE_NOISE if args.state_noise is None else args.state_noise
    args.idm_steps = IDM_STEPS if args.idm_steps is None else args.idm_steps
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise LabelError(f"{out} exists; pass --overwrite to replace it")
    model, sampler_cfg = load_model(args.model)
    c = model.config
    if args.labeller == Labeller.MODEL and model.future_tokens == 0:
        raise LabelError(f"{args.model} predicts no future frames (model.future_frames=0): inverse dynamics needs a "
                         "video model (or use --labeller state)")
    if c.views != 1:
        raise LabelError(f"{args.model} reads {c.views} cameras; a video gives one")
    folder = find_judge(args.model)
    judge = Judge.load(folder) if folder else None
    if judge is None or not judge.config.state_dim:
        raise LabelError(f"{args.model} has no judge with a state head to read observation.state from the frames: "
                         f"train one with `vidact judge {args.model} --datasets ...`")
    unknown = sorted({caption or args.instruction for _, caption in entries} - set(judge.config.tasks))
    if unknown:
        raise LabelError(f"the judge was not trained on instruction(s) {unknown}; it knows {judge.config.tasks}")
    true = None
    if args.true_actions:
        from vidact.data.robot import RobotDataset

        true = RobotDataset(args.true_actions, c)
        if len(true.episode_lengths) != len(entries):
            raise LabelError(f"--true-actions {args.true_actions} has {len(true.episode_lengths)} episodes, the "
                             f"videos {len(entries)}")
    fps, idm, summary = args.fps, None, {"model": str(args.model), "videos": str(args.videos),
                                         "labeller": args.labeller.value}
    if args.labeller == Labeller.STATE:
        idm, summary["state_idm"], fps = fit_state_labeller(args, c)
    else:
        sampler_cfg.steps = args.steps or sampler_cfg.steps
        sampler = Sampler(model, sampler_cfg)
        summary["sampler_steps"] = sampler_cfg.steps
    records, errors, baseline = [], [], []
    true_actions = [a for _, a in true.trajectories()] if true is not None else None
    mean_action = torch.from_numpy(true.columns()["action"].mean(0)) if true is not None else None
    with staged_folder(out) as staging:
        staging.rmdir()  # LeRobotDataset.create makes the folder itself
        dataset = None
        for i, (path, caption) in enumerate(tqdm(entries, desc="labelling videos", unit="video")):
            text = caption or args.instruction
            raw, own_fps = read_frames(path, fps)
            fps = fps or own_fps  # without --fps, every video is read at the first one's rate
            if raw.shape[1] != c.channels:
                raise LabelError(f"{path} has {raw.shape[1]} channels, the model reads {c.channels}")
            changes = ([f"resampled from {own_fps:g} to {fps:g} fps"] if abs(own_fps - fps) > 1e-3 else []) + \
                ([f"resized from {raw.shape[3]}x{raw.shape[2]} to the model's {c.width}x{c.height}"]
                 if tuple(raw.shape[2:]) != (c.height, c.width) else [])
            if changes:
                tqdm.write(f"vidact label: {path.name}: {', '.join(changes)}")
            frames = fit_frames(raw, c.height, c.width, "resize")[:, None]  # [T,1,C,H,W] in [0,1]
            state = judge.predict_state(frames[:, 0], [text] * len(frames))
            actions = idm.infer(state) if idm is not None else infer_actions(sampler, frames, text, args.seed + i)
            if dataset is None:
                dataset = LeRobotDataset.create(repo_id=f"vidact/labelled_{out.name}", fps=int(round(fps)),
                                                root=staging, features=label_features(
                                                    raw.shape[2], raw.shape[3], c.channels, c.state_dim, c.action_dim),
                                                use_videos=True, rgb_encoder=RGBEncoderConfig(
                                                    vcodec=video_codec(raw.shape[2], raw.shape[3])))
            for t in range(len(frames)):
                dataset.add_frame({"observation.image": raw[t].permute(1, 2, 0).numpy(),
                                   "observation.state": state[t].numpy().astype(np.float32),
                                   "action": actions[t].numpy().astype(np.float32), "task": text})
            with keep_scheduling():
                dataset.save_episode()
            record = {"episode_index": i, "video": str(path), "frames": len(frames)}
            if true is not None:
                real = true_actions[i].float()
                n = min(len(real), len(actions))
                record["label_mae"] = float((actions[:n] - real[:n]).abs().mean())
                record["mean_action_mae"] = float((mean_action - real[:n]).abs().mean())
                errors.append(record["label_mae"])
                baseline.append(record["mean_action_mae"])
            records.append(record)
        with keep_scheduling():
            dataset.finalize()
        summary.update(episodes=records, fps=fps)
        if idm is not None:
            torch.save(idm.state_dict_with_config(), staging / "meta" / STATE_IDM_FILE)
        if errors:
            summary["label_mae"], summary["mean_action_mae"] = float(np.mean(errors)), float(np.mean(baseline))
        (staging / "meta" / LABELS_META).write_text(json.dumps(summary, indent=2))
    tail = (f"; label error {summary['label_mae']:.4f} vs mean action {summary['mean_action_mae']:.4f} (MAE)"
            if errors else "")
    print(f"vidact label: {len(records)} video(s) -> {out}{tail}")
    return 0
