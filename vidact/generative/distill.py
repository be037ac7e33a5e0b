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

The student bundle is the teacher's folder (judge, components, processors) with the student's
weights and ``sampler.steps = --student-steps``; ``vidact_policy.json`` records the teacher and the
measured errors: on ``--heldout-windows`` windows it was not trained on, the distance (RMSE, in
normalized action units) from the teacher's output of the student's few steps and of the
teacher's own network run with the same few steps (plain truncation, the baseline).

The other modes (forward_dynamics, inverse_dynamics) share the network and are not trained here;
the student is a deployment bundle for the modes it was distilled on.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import torch
from torch import Tensor

from vidact.errors import run_command
from vidact.generative.sample import Sampler, guided_velocity, initial_noise, integrate, prefix_caches
from vidact.generative.schedule import MODE_ROLES, Mode, Role, tau_grid
from vidact.types import Batch

DISTILL_MODES = (Mode.POLICY_FAST, Mode.POLICY)


class DistillError(ValueError):
    """A distillation that cannot run as asked; the message names the problem."""


def few_step(model, sampler_cfg, batch: Batch, mode: Mode, noise: tuple[Tensor, Tensor], steps: int
             ) -> tuple[Tensor | None, Tensor]:
    """``steps`` Euler steps of ``model`` from ``noise`` with ``sampler_cfg``'s guidance and shift, with
    gradients: (video latents [B,Nf,Dl] or None, normalized actions [B,K,A])."""
    roles = MODE_ROLES[mode]
    cache, uncond = prefix_caches(model, batch, sampler_cfg.guidance_scale)
    velocity = guided_velocity(model, cache, uncond, roles, batch.batch_size, batch.obs_frames.device,
                               sampler_cfg.guidance_scale)
    noise_v, noise_a = noise
    xv = noise_v if roles.video == Role.GENERATED else None
    xv, xa = integrate(velocity, xv, noise_a, roles, tau_grid(steps, sampler_cfg.shift), "euler")
    return xv, xa


def teacher_targets(teacher: Sampler, batch: Batch, mode: Mode, noise: tuple[Tensor, Tensor]
                    ) -> tuple[Tensor | None, Tensor]:
    """The teacher's full sampler from ``noise``: (video latents or None, normalized actions)."""
    out = teacher.sample(batch, mode, noise=noise)
    return out.future_latents, teacher.model.normalizer.normalize("action", out.actions.float())


def chunk_error(xv: Tensor | None, xa: Tensor, tv: Tensor | None, ta: Tensor, video_weight: float) -> Tensor:
    """Mean squared distance to the teacher: actions, plus ``video_weight`` x the frame latents."""
    loss = (xa.float() - ta).pow(2).mean()
    if xv is not None and tv is not None and video_weight > 0:
        loss = loss + video_weight * (xv.float() - tv).pow(2).mean()
    return loss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidact distill", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="the teacher: a policy bundle (vidact export)")
    p.add_argument("--dataset", required=True, help="LeRobot dataset whose observation windows the student trains on")
    p.add_argument("--out", required=True, help="student bundle folder to write")
    p.add_argument("--student-steps", type=int, default=1, help="Euler steps of the student's sampler")
    p.add_argument("--modes", nargs="+", default=[Mode.POLICY_FAST.value], choices=[m.value for m in DISTILL_MODES])
    p.add_argument("--train-steps", type=int, default=500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--video-weight", type=float, default=1.0, help="policy mode: weight of the frame-latent error")
    p.add_argument("--heldout-windows", type=int, default=64, help="windows kept out of training to measure on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    return run_command("vidact distill", _distill, p.parse_args(argv),
                       (DistillError, ValueError, KeyError, FileNotFoundError, FileExistsError))


def _distill(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file
    from tqdm import tqdm

    from vidact.bundle import CONFIG_NAME, MODULE_PREFIX, POLICY_INFO_NAME, WEIGHTS_NAME
    from vidact.data.robot import RobotDataset
    from vidact.deploy.policy import Policy

    if args.student_steps < 1 or args.train_steps < 1 or args.batch_size < 1:
        raise DistillError(f"--student-steps, --train-steps and --batch-size must be >= 1, got {args.student_steps}, "
                           f"{args.train_steps}, {args.batch_size}")
    bundle, out = Path(args.bundle), Path(args.out)
    if not bundle.is_dir():
        raise DistillError(f"{bundle} is not a bundle folder (vidact export writes one)")
    if out.exists() and not args.overwrite:
        raise DistillError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == bundle.resolve():
        raise DistillError("--out is the teacher's own folder; write the student elsewhere")
    teacher_policy = Policy.from_pretrained(bundle)
    teacher, cfg = teacher_policy.model, teacher_policy.sampler.config
    if args.student_steps >= cfg.steps:
        raise DistillError(f"--student-steps {args.student_steps} is not fewer than the teacher's {cfg.steps} steps")
    modes = [Mode(m) for m in args.modes]
    if Mode.POLICY in modes and teacher.future_tokens == 0:
        raise DistillError(f"{bundle} imagines no frames (model.future_frames=0): distill --modes policy_fast only")
    dataset = RobotDataset(args.dataset, teacher.config)
    n = len(dataset)
    if n <= args.heldout_windows:
        raise DistillError(f"{args.dataset} has {n} windows; need more than --heldout-windows {args.heldout_windows}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    held, train = order[:args.heldout_windows], order[args.heldout_windows:]

    teacher.requires_grad_(False)
    sampler = Sampler(teacher, cfg)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    for module in student.frozen_modules().values():  # the tokenizers and text encoder stay as they are
        module.requires_grad_(False).eval()
    params = [q for q in student.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    held_batch = Batch.collate([dataset[i] for i in held]).with_defaults()

    def measure(model) -> dict[str, float]:
        """RMSE to the teacher on the held-out windows, per mode, for ``model`` at --student-steps."""
        errors = {}
        with torch.no_grad():
            for mode in modes:
                noise = initial_noise(teacher, held_batch.batch_size, args.seed + 1)
                tv, ta = teacher_targets(sampler, held_batch, mode, noise)
                xv, xa = few_step(model, cfg, held_batch, mode, noise, args.student_steps)
                errors[f"{mode.value} action rmse"] = float((xa.float() - ta).pow(2).mean().sqrt())
                if xv is not None:
                    errors[f"{mode.value} frame-latent rmse"] = float((xv.float() - tv).pow(2).mean().sqrt())
        return errors

    baseline = measure(teacher)
    print(f"vidact distill: teacher {cfg.steps} steps -> student {args.student_steps}; {len(train)} training windows, "
          f"{len(held)} held out; the teacher's own error at {args.student_steps} step(s): "
          + ", ".join(f"{k} {v:.4f}" for k, v in baseline.items()), flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    start, losses = time.perf_counter(), []
    bar = tqdm(range(args.train_steps), desc="distilling", unit="step")
    for step in bar:
        pick = torch.randint(len(train), (args.batch_size,), generator=generator).tolist()
        batch = Batch.collate([dataset[train[i]] for i in pick]).with_defaults()
        mode = modes[step % len(modes)]
        noise = initial_noise(teacher, args.batch_size, args.seed + 1000 + step)
        with torch.no_grad():
            tv, ta = teacher_targets(sampler, batch, mode, noise)
        xv, xa = few_step(student, cfg, batch, mode, noise, args.student_steps)
        loss = chunk_error(xv, xa, tv, ta, args.video_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
    bar.close()
    student.eval()
    distilled = measure(student)
    seconds = time.perf_counter() - start

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    save_file({MODULE_PREFIX + k: v.detach().clone() for k, v in student.state_dict().items()}, str(out / WEIGHTS_NAME),
              metadata={"format": "pt"})
    config = json.loads((out / CONFIG_NAME).read_text())
    config.setdefault("sampler", {})["steps"] = args.student_steps
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    info = json.loads((out / POLICY_INFO_NAME).read_text()) if (out / POLICY_INFO_NAME).is_file() else {}
    record = {"teacher": str(bundle), "teacher_steps": cfg.steps, "student_steps": args.student_steps,
              "modes": [m.value for m in modes], "dataset": str(args.dataset), "train_steps": args.train_steps,
              "batch_size": args.batch_size, "lr": args.lr, "seconds": round(seconds, 1),
              "heldout_windows": len(held), "truncated_teacher": baseline, "student": distilled}
    info["distilled"] = record
    (out / POLICY_INFO_NAME).write_text(json.dumps(info, indent=2))
    few = f"{args.student_steps} step" + ("s" if args.student_steps > 1 else "")
    print("vidact distill: on held-out windows, distance to the teacher's output: "
          + "; ".join(f"{k} {baseline[k]:.4f} (teacher at {few}) -> {distilled[k]:.4f} (student)"
                      for k in baseline) + f"; {seconds / 60:.1f} min -> {out}")
    return 0
