"""The judge of imagined futures (issue 13): a small CNN that reads one frame and the instruction
and says how close the episode is to success. It scores real frames and imagined ones alike, so a
planner can rank candidate action chunks by what the world model imagines they lead to.

Two outputs per frame, trained from per-step success flags (``next.success``: generated
demonstrations and ``vidact eval --save-dataset`` rollouts, failures included):

- ``value``: the discounted success to come, ``gamma ** (steps until the first success)`` in an
  episode that succeeds (1 from the first success on) and 0 throughout one that fails: progress
  toward success that also knows a failing state from a succeeding one;
- ``done``: the probability that the frame shows the task done (this step's success flag);
- the robot state (``state_dim`` values, regressed): the proprioception a policy evaluated inside
  the world model reads from imagined frames (``vidact.worldmodel.env``).

Each instruction it was trained on gets a learned embedding (drawer-open and drawer-close share a
scene; only the instruction tells which way is progress); an instruction it never saw is refused.

``vidact judge MODEL --datasets DIR... --heldout DIR`` trains one at the model's resolution and
writes it into the run directory or bundle (``judge/``); ``vidact export`` carries it into the
bundle and ``Policy.from_pretrained`` loads it (``--planner``, ``vidact.deploy.planner``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidact.errors import run_command
from vidact.worldmodel.probe import conv_trunk

JUDGE_DIR = "judge"
JUDGE_WEIGHTS, JUDGE_CONFIG, JUDGE_EVAL = "judge.safetensors", "judge.json", "judge_eval.json"
DEFAULT_GAMMA = 0.97  # value 0.5 at 23 control steps (under 2 chunks) before the first success


class JudgeError(ValueError):
    """A judge that cannot score what it was given (unknown instruction, frame size)."""


@dataclass
class JudgeConfig:
    channels: int = 3
    height: int = 96
    width: int = 96
    tasks: list[str] = field(default_factory=list)  # the instructions it knows, in embedding order
    gamma: float = DEFAULT_GAMMA
    width_mult: int = 16
    state_dim: int = 0  # also regress the robot state from the frame (in-model evaluation's proprioception)


class Judge(nn.Module):
    """([N,C,H,W] frames in [0,1], N instructions) -> [N,2] logits (value, done)."""

    def __init__(self, config: JudgeConfig):
        super().__init__()
        if not config.tasks:
            raise JudgeError("a judge needs at least one instruction (JudgeConfig.tasks)")
        self.config = config
        self.features, flat = conv_trunk(config.channels, config.height, config.width, config.width_mult)
        self.task_emb = nn.Embedding(len(config.tasks), 128)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(128, 2 + config.state_dim))
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self._task_index = {t: i for i, t in enumerate(config.tasks)}

    def task_ids(self, texts: list[str]) -> Tensor:
        unknown = sorted({t for t in texts if t not in self._task_index})
        if unknown:
            raise JudgeError(f"the judge was not trained on instruction(s) {unknown}; it knows {self.config.tasks}")
        return torch.tensor([self._task_index[t] for t in texts])

    def check_frames(self, frames: Tensor) -> None:
        c = self.config
        if tuple(frames.shape[-3:]) != (c.channels, c.height, c.width):
            raise JudgeError(f"the judge reads [{c.channels},{c.height},{c.width}] frames, got "
                             f"{list(frames.shape[-3:])}")

    def forward(self, frames: Tensor, texts: list[str]) -> Tensor:
        """-> [N, 2 + state_dim]: value and done logits, then the normalized state."""
        ids = self.task_ids(texts).to(frames.device)
        return self.head(self.body(self.features(frames.float() * 2 - 1)) + self.task_emb(ids))

    @torch.no_grad()
    def _outputs(self, frames: Tensor, texts: list[str], batch_size: int) -> Tensor:
        self.check_frames(frames)
        self.eval()
        out = []
        for i in range(0, len(frames), batch_size):
            x = frames[i: i + batch_size]
            x = x.float() / 255 if x.dtype == torch.uint8 else x
            out.append(self(x, texts[i: i + batch_size]))
        return torch.cat(out) if out else torch.zeros(0, 2 + self.config.state_dim)

    def predict(self, frames: Tensor, texts: list[str], batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """-> (value [N], done probability [N]) for frames [N,C,H,W] in [0,1] (uint8 accepted)."""
        p = torch.sigmoid(self._outputs(frames, texts, batch_size)[:, :2])
        return p[:, 0], p[:, 1]

    def predict_state(self, frames: Tensor, texts: list[str], batch_size: int = 256) -> Tensor:
        """-> [N, state_dim] the robot state read from the frames (raw units)."""
        return self.read(frames, texts, batch_size)[2]

    def read(self, frames: Tensor, texts: list[str], batch_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
        """-> (value [N], done probability [N], state [N, state_dim]) in one pass over the frames."""
        if not self.config.state_dim:
            raise JudgeError("this judge reads no state (trained before `vidact judge` learned the state head); "
                             "re-train it")
        out = self._outputs(frames, texts, batch_size)
        p = torch.sigmoid(out[:, :2])
        return p[:, 0], p[:, 1], out[:, 2:] * self.state_std + self.state_mean

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / JUDGE_WEIGHTS))
        (folder / JUDGE_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Judge":
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / JUDGE_CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: no {JUDGE_CONFIG}; train a judge with `vidact judge`")
        judge = cls(JudgeConfig(**json.loads((folder / JUDGE_CONFIG).read_text())))
        judge.load_state_dict(load_file(str(folder / JUDGE_WEIGHTS)))
        return judge.eval()


def find_judge(path: str | Path) -> Path | None:
    """The judge folder of a bundle or run directory (``PATH/judge``), or ``PATH`` itself if it is one."""
    path = Path(path)
    if (path / JUDGE_CONFIG).is_file():
        return path
    if path.is_file():  # a checkpoint: its run directory is two levels up (RUN/checkpoints/x.ckpt)
        path = path.parent.parent
    return path / JUDGE_DIR if (path / JUDGE_DIR / JUDGE_CONFIG).is_file() else None


def episode_labels(success: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Per-step success flags [T] -> (value [T], done [T]) float targets (module docstring)."""
    T = success.shape[0]
    done = success.float()
    if not bool(success.any()):
        return torch.zeros(T), done
    first = int(success.nonzero()[0, 0])
    to_go = (first - torch.arange(T)).clamp(min=0).float()
    return gamma ** to_go, done


@dataclass
class JudgeData:
    frames: Tensor  # [N,C,H,W] uint8 (first camera)
    texts: list[str]
    value: Tensor  # [N]
    done: Tensor  # [N]
    succeeded: Tensor  # [N] bool: the frame's episode succeeded
    state: Tensor | None = None  # [N,S] the robot state at the frame


def judge_data(datasets: list, gamma: float, every: int = 1) -> JudgeData:
    """Every ``every``-th frame (first camera) of each ``RobotDataset`` episode with its labels."""
    frames, texts, value, done, ok, state = [], [], [], [], [], []
    for ds in datasets:
        if not ds.has_success:
            raise JudgeError(f"dataset {ds.meta.root} has no 'next.success' column: the judge learns from per-step "
                             "success flags (vidact data metaworld, vidact eval --save-dataset)")
        for ep in sorted(ds.episode_lengths):
            data = ds.episode(ep)
            v, d = episode_labels(data["success"], gamma)
            rows = slice(None, None, every)
            frames.append((data["frames"][rows, 0] * 255).round().to(torch.uint8))
            texts += [data["text"]] * len(v[rows])
            value.append(v[rows])
            done.append(d[rows])
            ok.append(torch.full((len(v[rows]),), bool(data["success"].any())))
            state.append(data["state"][rows].float())
    return JudgeData(torch.cat(frames), texts, torch.cat(value), torch.cat(done), torch.cat(ok), torch.cat(state))


def outcome_labels(frames: int, stride: int, success: bool, length: int, gamma: float) -> tuple[Tensor, Tensor]:
    """Targets for the ``frames`` frames of an imagined episode (frame j after j * stride actions)
    from the outcome of its real twin (same policy, same start): a failure is 0 throughout; one
    that succeeded with its ``length``-th action is done from the frame before that action on, and
    discounted before it, as ``episode_labels`` labels a recorded episode (``next.success``: the row
    whose action brings success is the first done)."""
    if not success:
        return torch.zeros(frames), torch.zeros(frames)
    to_go = (length - 1 - stride * torch.arange(frames)).clamp(min=0).float()
    return gamma ** to_go, (to_go == 0).float()


def train_judge(data: JudgeData, config: JudgeConfig, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3,
                seed: int = 0, shift: int = 2, log=None, init: Judge | None = None) -> Judge:
    """Fit a judge with binary cross-entropy on both outputs (the value as a soft target). Frames of
    failed and successful episodes are drawn equally often (rollouts are often mostly failures).
    ``shift``: random translation by up to that many pixels. ``init``: a judge to start from (its
    weights and state normalization; it must know the same instructions), for fine-tuning."""
    torch.manual_seed(seed)
    judge = Judge(config)
    S = config.state_dim
    if S and (data.state is None or data.state.shape[1] != S):
        raise JudgeError(f"JudgeConfig.state_dim={S} but the data's state is "
                         f"{None if data.state is None else list(data.state.shape[1:])}")
    if init is not None:
        if asdict(init.config) != asdict(config):
            differ = {k: (v, getattr(config, k)) for k, v in asdict(init.config).items() if v != getattr(config, k)}
            raise JudgeError(f"cannot fine-tune a judge into another configuration: {differ} (given judge vs asked)")
        judge.load_state_dict(init.state_dict())
    elif S:
        judge.state_mean.copy_(data.state.mean(0))
        judge.state_std.copy_(data.state.std(0).clamp(min=1e-6))
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 10)  # linear warm-up, then cosine to 0 (any step count, 1 included)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    generator = torch.Generator().manual_seed(seed)
    ids = judge.task_ids(data.texts)
    n_ok = int(data.succeeded.sum())
    weights = torch.where(data.succeeded, 0.5 / max(n_ok, 1), 0.5 / max(len(ids) - n_ok, 1))
    judge.train()
    for step in range(steps):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        x = data.frames[idx].float() / 255
        if shift:
            x = F.pad(x, (shift,) * 4, mode="replicate")
            dy, dx = torch.randint(2 * shift + 1, (2,), generator=generator).tolist()
            x = x[..., dy: dy + config.height, dx: dx + config.width]
        logits = judge.head(judge.body(judge.features(x * 2 - 1)) + judge.task_emb(ids[idx]))
        loss = (F.binary_cross_entropy_with_logits(logits[:, 0], data.value[idx])
                + F.binary_cross_entropy_with_logits(logits[:, 1], data.done[idx]))
        if S:
            target = (data.state[idx] - judge.state_mean) / judge.state_std
            loss = loss + F.smooth_l1_loss(logits[:, 2:], target, beta=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"judge step {step + 1}/{steps}: loss {loss.item():.4f}")
    return judge.eval()


def auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class only."""
    labels = labels.bool()
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).float().mean()
    ties = (pos[:, None] == neg[None]).float().mean()
    return float(greater + ties / 2)


def judge_metrics(value: Tensor, done: Tensor, target_value: Tensor, target_done: Tensor,
                  succeeded: Tensor) -> dict[str, float]:
    """done AUC (this frame shows success), value MAE, and the value's AUC for "this episode
    succeeds" on frames before any success (what a planner needs: a failing state scores lower)."""
    before = target_done < 0.5
    return {"frames": int(len(value)), "done_auc": auc(done, target_done > 0.5),
            "value_mae": float((value - target_value).abs().mean()) if len(value) else float("nan"),
            "episode_success_auc": auc(value[before], succeeded[before])}


def imagined_data(model, sampler_cfg, dataset, horizon: int, every: int, seed: int,
                  gamma: float, all_frames: bool = False) -> tuple[JudgeData, JudgeData]:
    """Frames the world model imagines ``horizon`` steps ahead (recorded actions, forward_dynamics)
    from windows of ``dataset`` every ``every`` steps, and the real frames of the same steps, both
    with the real frames' labels: (imagined, real). With ``all_frames``, every imagined frame of
    the window (one per frame stride, from one stride ahead to ``horizon``), not only the last:
    a window longer than a chunk then gives frames imagined from imagined history too."""
    from vidact.generative.sample import Sampler
    from vidact.worldmodel.imagine import episode_windows
    from vidact.worldmodel.rollout import RolloutError, rollout

    sampler = Sampler(model, sampler_cfg)
    s = model.config.future_frame_stride
    imagined, real, texts, value, done, ok, state = [], [], [], [], [], [], []
    for ep in sorted(dataset.episode_lengths):
        try:
            windows = episode_windows(dataset, [ep], horizon, every=every)
        except RolloutError:  # shorter than the first window
            continue
        data = dataset.episode(ep)
        out = rollout(sampler, windows.start, horizon, windows.actions, seed=seed + ep)
        v, d = episode_labels(data["success"], gamma)
        to_uint8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
        for k in (range(horizon // s) if all_frames else [horizon // s - 1]):  # frame k: (k + 1) * s steps ahead
            steps = [t0 + (k + 1) * s for t0 in windows.t0]
            imagined.append(to_uint8(out.frames[:, k, 0]))
            real.append(to_uint8(windows.real[:, k, 0]))
            texts += windows.start.text
            value.append(v[steps])
            done.append(d[steps])
            ok.append(torch.full((len(steps),), bool(data["success"].any())))
            state.append(data["state"][steps].float())
    if not imagined:
        raise JudgeError(f"no episode of {dataset.meta.root} is longer than the imagination horizon {horizon}")
    labels = (texts, torch.cat(value), torch.cat(done), torch.cat(ok))
    return (JudgeData(torch.cat(imagined), *labels, torch.cat(state)),
            JudgeData(torch.cat(real), *labels, torch.cat(state)))


def concat_data(parts: list[JudgeData]) -> JudgeData:
    return JudgeData(torch.cat([p.frames for p in parts]), [t for p in parts for t in p.texts],
                     torch.cat([p.value for p in parts]), torch.cat([p.done for p in parts]),
                     torch.cat([p.succeeded for p in parts]), torch.cat([p.state for p in parts]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact judge", description="Train the judge of imagined futures (a value / "
                                "task-done head read from frames) and store it with the model.")
    p.add_argument("model", help="run directory or bundle the judge belongs to (its frame size and cameras)")
    p.add_argument("--datasets", nargs="+", required=True, help="LeRobot datasets with 'next.success': "
                   "demonstrations and saved rollouts (vidact eval --save-dataset), failures included")
    p.add_argument("--heldout", nargs="*", default=[], help="datasets to report accuracy on (real frames, and "
                   "imagined ones with --imagine-horizon)")
    p.add_argument("--out", default=None, help="folder to write (default: MODEL/judge)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help="discount of the value target per control step")
    p.add_argument("--every", type=int, default=2, help="train on every n-th frame")
    p.add_argument("--imagine-horizon", type=int, default=16, help="control steps ahead for the imagined-frame "
                   "evaluation (0: skip it)")
    p.add_argument("--imagine-every", type=int, default=16, help="a window every n steps of each held-out episode")
    p.add_argument("--train-on-imagined", type=int, default=0, metavar="EVERY", help="also train on frames the model "
                   "imagines --imagine-horizon steps ahead from windows every EVERY steps of the training episodes, "
                   "labelled as the real frames (0: real frames only)")
    p.add_argument("--imagined-frames", choices=["last", "all"], default="last", help="with --train-on-imagined: "
                   "train on the window's last imagined frame (--imagine-horizon ahead) or on all of them (one per "
                   "frame stride; a horizon of several chunks adds frames imagined from imagined history, as a "
                   "planner's --plan-horizon > 1 scores)")
    p.add_argument("--sampler-steps", type=int, default=None, help="sampler steps for imagining (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    return run_command("vidact judge", _judge, p.parse_args(argv), (JudgeError, ValueError, KeyError, FileNotFoundError))


def _judge(args: argparse.Namespace) -> int:
    from vidact.data.robot import RobotDataset
    from vidact.worldmodel.imagine import load_model

    if args.train_on_imagined and args.imagine_horizon < 1:
        raise JudgeError("--train-on-imagined needs --imagine-horizon >= 1 (the steps ahead it imagines)")
    if args.imagined_frames != "last" and not args.train_on_imagined:
        raise JudgeError("--imagined-frames only applies with --train-on-imagined")
    if args.steps < 1 or args.every < 1 or not 0 < args.gamma <= 1:
        raise JudgeError(f"--steps and --every must be >= 1 and --gamma in (0, 1]; got {args.steps}, {args.every}, "
                         f"{args.gamma}")
    for d in [*args.datasets, *args.heldout]:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"dataset {d} does not exist")
    model, sampler_cfg = load_model(args.model)
    if args.sampler_steps:
        sampler_cfg.steps = args.sampler_steps
    cfg = model.config
    log = lambda m: print(f"vidact judge: {m}", flush=True)  # noqa: E731
    t = time.time()
    train_sets = [RobotDataset(d, cfg) for d in args.datasets]
    data = judge_data(train_sets, args.gamma, args.every)
    if args.train_on_imagined:
        # Frames the model imagines, labelled as the real frames they stand for: the judge learns to
        # read imagination, artifacts included (scored on real frames only, a planner picks the
        # candidates whose imagined artifacts look like success).
        if not model.future_tokens:
            raise JudgeError("--train-on-imagined needs a model that imagines frames (model.future_frames > 0)")
        extra = [imagined_data(model, sampler_cfg, ds, args.imagine_horizon, args.train_on_imagined, args.seed,
                               args.gamma, all_frames=args.imagined_frames == "all")[0] for ds in train_sets]
        data = concat_data([data, *extra])
        ahead = "up to " if args.imagined_frames == "all" else ""
        log(f"+ {sum(len(e.texts) for e in extra)} imagined frames ({ahead}{args.imagine_horizon} steps ahead, a window "
            f"every {args.train_on_imagined} steps)")
    tasks = sorted(set(data.texts))
    log(f"{len(data.texts)} frames from {len(args.datasets)} dataset(s), {int(data.succeeded.sum())} in succeeding "
        f"episodes, {len(tasks)} instruction(s); loaded in {time.time() - t:.0f} s")
    jcfg = JudgeConfig(channels=cfg.channels, height=cfg.height, width=cfg.width, tasks=tasks, gamma=args.gamma,
                       state_dim=cfg.state_dim)
    t = time.time()
    judge = train_judge(data, jcfg, steps=args.steps, batch_size=args.batch_size, seed=args.seed, log=log)
    report: dict = {"datasets": args.datasets, "steps": args.steps, "train_on_imagined": args.train_on_imagined,
                    "imagined_frames": args.imagined_frames if args.train_on_imagined else None,
                    "train_seconds": round(time.time() - t, 1),
                    "gamma": args.gamma, "train": judge_metrics(*judge.predict(data.frames, data.texts), data.value,
                                                                data.done, data.succeeded)}
    pooled: dict[str, list] = {}  # every held-out dataset together: (predictions, labels) per kind of frame
    for d in args.heldout:
        ds = RobotDataset(d, cfg)
        held = judge_data([ds], args.gamma)
        kinds = {"real_all_frames": (judge.predict(held.frames, held.texts), (held.value, held.done, held.succeeded))}
        if args.imagine_horizon and model.future_tokens:
            imagined, real = imagined_data(model, sampler_cfg, ds, args.imagine_horizon, args.imagine_every,
                                           args.seed, args.gamma)
            kinds.update({k: (judge.predict(d.frames, d.texts), (d.value, d.done, d.succeeded))
                          for k, d in (("imagined", imagined), ("real", real))})
        entry = {k: judge_metrics(*pred, *labels) for k, (pred, labels) in kinds.items()}
        state_error = (judge.predict_state(held.frames, held.texts) - held.state).abs().mean(0)
        entry["real_all_frames"]["state_mae"] = [round(float(e), 5) for e in state_error]
        for k, v in kinds.items():
            pooled.setdefault(k, []).append(v)
        report[f"heldout:{d}"] = entry
        log(f"held-out {d}: {json.dumps(entry)}")
    if pooled:
        cat = lambda parts, i, j: torch.cat([p[i][j] for p in parts])  # noqa: E731
        report["heldout_pooled"] = {k: judge_metrics(cat(parts, 0, 0), cat(parts, 0, 1), cat(parts, 1, 0),
                                                     cat(parts, 1, 1), cat(parts, 1, 2)) for k, parts in pooled.items()}
        log(f"held-out, all datasets: {json.dumps(report['heldout_pooled'])}")
    out = Path(args.out) if args.out else _default_folder(args.model)
    judge.save(out)
    (out / JUDGE_EVAL).write_text(json.dumps(report, indent=2))
    log(f"wrote {out} (train: done AUC {report['train']['done_auc']:.3f}, value MAE {report['train']['value_mae']:.3f})")
    return 0


def _default_folder(model: str | Path) -> Path:
    path = Path(model)
    return (path.parent.parent if path.is_file() else path) / JUDGE_DIR

