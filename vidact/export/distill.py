"""``vidact distill BUNDLE --dataset DIR --out BUNDLE2``: a few-step sampler by distillation (issue 18).

The bundle's own sampler (the teacher: its network with its ``sampler.steps`` Euler steps and its
guidance) maps noise to a chunk. A copy of the network (the student) is trained so that
``--student-steps`` Euler steps from the *same* noise land where the teacher's many steps land:
the loss runs through the student's whole few-step integration (``vidact.generative.sample.
integrate``, with gradients), on observation windows of ``--dataset``, for the modes
``--modes`` (``policy_fast``: the actions; ``policy``: the actions and the imagined frame's
latents). It is knowledge distillation of the sampler's ODE solution (progressive / consistency
distillation's target, reached in one stage: the teacher runs its full schedule for every
batch). The student keeps the teacher's guidance settings, so a guided teacher's uncond pass is
distilled in as well as its steps.

The student bundle is the teacher's folder (judge, components, processors; not an exported
``policy_fast.pt2``, which holds the teacher's program) with the student's weights and
``sampler.steps = --student-steps`` (Euler); ``vidact_policy.json`` records the teacher and the
measured errors: on the windows of ``--heldout-episodes`` episodes it was not trained on, the
distance (RMSE, in normalized action units and latent units) from the teacher's output of the
student's few steps and of the teacher's own network run with the same few steps (plain
truncation, the baseline), from the same noise.

The other modes (forward_dynamics, inverse_dynamics) share the network and are not trained here;
the student is a deployment bundle for the modes it was distilled on.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import torch
from torch import Tensor

from vidact.errors import run_command
from vidact.generative.sample import SamplerConfig, guided_velocity, initial_noise, integrate, prefix_caches
from vidact.generative.schedule import MODE_ROLES, Mode, Role, tau_grid
from vidact.types import Batch

DISTILL_MODES = (Mode.POLICY_FAST, Mode.POLICY)
GRAD_CLIP = 1.0  # max gradient norm per optimizer step


class DistillError(ValueError):
    """A distillation that cannot run as asked; the message names the problem."""


def sample_chunk(model, sampler_cfg: SamplerConfig, batch: Batch, mode: Mode, noise: tuple[Tensor, Tensor],
                 steps: int, method: str = "euler") -> tuple[Tensor | None, Tensor]:
    """``steps`` steps of ``model`` from ``noise`` with ``sampler_cfg``'s guidance and shift, with
    gradients when enabled: (video latents [B,Nf,Dl] or None, normalized actions [B,K,A]). The
    teacher, the truncated teacher and the student all sample through here."""
    roles = MODE_ROLES[mode]
    device, dtype = batch.obs_frames.device, next(model.backbone.parameters()).dtype
    cache, uncond = prefix_caches(model, batch, sampler_cfg.guidance_scale)
    velocity = guided_velocity(model, cache, uncond, roles, batch.batch_size, device, sampler_cfg.guidance_scale)
    noise_v, noise_a = (n.to(device, dtype) for n in noise)
    xv = noise_v if roles.video == Role.GENERATED else None
    return integrate(velocity, xv, noise_a, roles, tau_grid(steps, sampler_cfg.shift), method)


def chunk_error(xv: Tensor | None, xa: Tensor, tv: Tensor | None, ta: Tensor, video_weight: float) -> Tensor:
    """Mean squared distance to the teacher: actions, plus ``video_weight`` x the frame latents."""
    loss = (xa.float() - ta.float()).pow(2).mean()
    if xv is not None and tv is not None and video_weight > 0:
        loss = loss + video_weight * (xv.float() - tv.float()).pow(2).mean()
    return loss


def split_episodes(dataset, heldout_episodes: int, heldout_windows: int, seed: int) -> tuple[list[int], list[int]]:
    """(training window indices, held-out window indices): whole episodes held out, so no held-out
    window has a near-twin one control step away in training. A dataset of no more episodes than
    that holds out the last ``heldout_windows`` windows instead (said on stdout)."""
    which = dataset.window_episodes.tolist()
    episodes = sorted(set(which))
    if len(episodes) <= heldout_episodes:
        if len(which) <= 2 * heldout_windows:
            raise DistillError(f"the dataset has {len(which)} windows; need more than twice --heldout-windows "
                               f"{heldout_windows}")
        print(f"vidact distill: {len(episodes)} episode(s), not more than --heldout-episodes {heldout_episodes}: "
              f"holding out the last {heldout_windows} windows instead")
        return list(range(len(which) - heldout_windows)), list(range(len(which) - heldout_windows, len(which)))
    order = torch.randperm(len(episodes), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {episodes[i] for i in order[:heldout_episodes]}
    return [i for i, e in enumerate(which) if e not in held], [i for i, e in enumerate(which) if e in held]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidact distill", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the teacher: a policy bundle (vidact export)")
    parser.add_argument("--dataset", required=True, help="LeRobot dataset whose observation windows the student "
                        "trains on (the teacher's training data)")
    parser.add_argument("--out", required=True, help="student bundle folder to write")
    parser.add_argument("--student-steps", type=int, default=1, help="Euler steps of the student's sampler")
    parser.add_argument("--modes", nargs="+", default=[Mode.POLICY_FAST.value],
                        choices=[m.value for m in DISTILL_MODES])
    parser.add_argument("--train-steps", type=int, default=500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--video-weight", type=float, default=1.0, help="policy mode: weight of the frame-latent error")
    parser.add_argument("--heldout-episodes", type=int, default=1, help="episodes kept out of training to measure on")
    parser.add_argument("--heldout-windows", type=int, default=64, help="of their windows, at most this many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    return run_command("vidact distill", _distill, parser.parse_args(argv), (ValueError, KeyError, FileNotFoundError))


def _distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vidact.bundle import CONFIG_NAME, POLICY_INFO_NAME, staged_folder, write_weights
    from vidact.data.robot import RobotDataset
    from vidact.deploy.policy import Policy
    from vidact.export.torch_export import EXPORT_INFO_NAME, EXPORT_NAME

    if min(args.student_steps, args.train_steps, args.batch_size, args.heldout_episodes, args.heldout_windows) < 1:
        raise DistillError("--student-steps, --train-steps, --batch-size, --heldout-episodes and --heldout-windows "
                           f"must be >= 1, got {args.student_steps}, {args.train_steps}, {args.batch_size}, "
                           f"{args.heldout_episodes}, {args.heldout_windows}")
    bundle, out = Path(args.bundle).resolve(), Path(args.out).resolve()
    if not bundle.is_dir():
        raise DistillError(f"{args.bundle} is not a bundle folder (vidact export writes one)")
    if out == bundle or bundle.is_relative_to(out) or out.is_relative_to(bundle):
        raise DistillError(f"--out {args.out} and the teacher {args.bundle} overlap; write the student elsewhere")
    if out.exists() and not args.overwrite:
        raise DistillError(f"{args.out} exists; pass --overwrite to replace it")
    teacher_policy = Policy.from_pretrained(bundle)
    teacher, cfg = teacher_policy.model, teacher_policy.sampler.config
    if args.student_steps >= cfg.steps:
        raise DistillError(f"--student-steps {args.student_steps} is not fewer than the teacher's {cfg.steps} steps")
    modes = [Mode(m) for m in args.modes]
    if Mode.POLICY in modes and teacher.future_tokens == 0:
        raise DistillError(f"{args.bundle} imagines no frames (model.future_frames=0): distill --modes policy_fast only")
    # The frames as the deployed policy sees them: its cameras, fitted as it fits them.
    dataset = RobotDataset(args.dataset, teacher.config, camera_keys=teacher_policy.camera_keys,
                           camera_fit=teacher_policy.camera_fit)
    train, held = split_episodes(dataset, args.heldout_episodes, args.heldout_windows, args.seed)
    held = held[::max(1, len(held) // args.heldout_windows)][:args.heldout_windows]

    teacher.requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    for module in student.frozen_modules().values():  # the tokenizers and text encoder stay as they are
        module.requires_grad_(False).eval()
    params = [w for w in student.parameters() if w.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    held_batch = Batch.collate([dataset[i] for i in held]).with_defaults()

    def teacher_chunk(batch: Batch, mode: Mode, noise) -> tuple[Tensor | None, Tensor]:
        with torch.no_grad():
            return sample_chunk(teacher, cfg, batch, mode, noise, cfg.steps, cfg.method)

    def measure(model) -> dict[str, float]:
        """RMSE to the teacher on the held-out windows, per mode, for ``model`` at --student-steps."""
        errors = {}
        with torch.no_grad():
            for mode in modes:
                noise = initial_noise(teacher, held_batch.batch_size, args.seed + 1)
                tv, ta = teacher_chunk(held_batch, mode, noise)
                xv, xa = sample_chunk(model, cfg, held_batch, mode, noise, args.student_steps)
                errors[f"{mode.value} action rmse"] = float((xa.float() - ta.float()).pow(2).mean().sqrt())
                if xv is not None:
                    errors[f"{mode.value} frame-latent rmse"] = float((xv.float() - tv.float()).pow(2).mean().sqrt())
        return errors

    baseline = measure(teacher)
    print(f"vidact distill: teacher {cfg.steps} steps -> student {args.student_steps}; {len(train)} training windows, "
          f"{len(held)} held out; the teacher's own error at "
          f"{args.student_steps} step(s): " + ", ".join(f"{k} {v:.4f}" for k, v in baseline.items()), flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    start, losses = time.perf_counter(), []
    bar = tqdm(range(args.train_steps), desc="distilling", unit="step")
    for step in bar:
        pick = torch.randint(len(train), (args.batch_size,), generator=generator).tolist()
        batch = Batch.collate([dataset[train[i]] for i in pick]).with_defaults()
        mode = modes[step % len(modes)]
        noise = initial_noise(teacher, args.batch_size, args.seed + 1000 + step)
        tv, ta = teacher_chunk(batch, mode, noise)
        xv, xa = sample_chunk(student, cfg, batch, mode, noise, args.student_steps)
        loss = chunk_error(xv, xa, tv, ta, args.video_weight)
        if not math.isfinite(loss.item()):
            raise DistillError(f"the distillation loss is {loss.item()} at step {step}: lower --lr ({args.lr}); "
                               "nothing was written")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
    bar.close()
    seconds = time.perf_counter() - start
    student.eval()
    distilled = measure(student)

    with staged_folder(out) as staging:
        shutil.copytree(bundle, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(EXPORT_NAME, EXPORT_INFO_NAME))
        write_weights(staging, student.state_dict())
        config = json.loads((staging / CONFIG_NAME).read_text())
        config.setdefault("sampler", {}).update(steps=args.student_steps, method="euler")
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        info = json.loads((staging / POLICY_INFO_NAME).read_text()) if (staging / POLICY_INFO_NAME).is_file() else {}
        info["distilled"] = {"teacher": str(bundle), "teacher_steps": cfg.steps, "teacher_method": cfg.method,
                             "student_steps": args.student_steps, "modes": [m.value for m in modes],
                             "dataset": str(Path(args.dataset).resolve()), "train_steps": args.train_steps,
                             "batch_size": args.batch_size, "lr": args.lr, "train_seconds": round(seconds, 1),
                             "heldout_windows": len(held), "truncated_teacher": baseline, "student": distilled}
        (staging / POLICY_INFO_NAME).write_text(json.dumps(info, indent=2))
    few = f"{args.student_steps} step" + ("s" if args.student_steps > 1 else "")
    print("vidact distill: on held-out windows, distance to the teacher's output: "
          + "; ".join(f"{k} {baseline[k]:.4f} (teacher at {few}) -> {distilled[k]:.4f} (student)" for k in baseline)
          + f"; {seconds / 60:.1f} min -> {args.out}")
    return 0
