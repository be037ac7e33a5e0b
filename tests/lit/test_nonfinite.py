"""A non-finite loss on one rank is reported with its step and batch source and skipped on every
rank, under DDP and DeepSpeed ZeRO-2 and ZeRO-3 (2 CPU processes each, through the real CLI).

The poison: a ``sitecustomize`` on PYTHONPATH (Lightning starts the second rank with the same
environment) makes rank 0's generated batch ``POISON_INDEX`` carry NaN observation frames and the
source name ``poisoned``. Rank 1's batch is fine: the ranks must still agree to skip.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidact.config import REPO_ROOT

RECIPE = "debug_sliding_square"
POISON_INDEX = 2

SITECUSTOMIZE = f'''
import vidact.lit.datamodule as dm

_batch = dm.GeneratedBatches.batch

def batch(self, index):
    out = _batch(self, index)
    if self.rank == 0 and index == {POISON_INDEX}:
        out.obs_frames = out.obs_frames.clone().fill_(float("nan"))
        out.source = ["poisoned"] * out.batch_size
    return out

dm.GeneratedBatches.batch = batch
'''


def poisoned_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{site}{os.pathsep}{REPO_ROOT}"}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run([sys.executable, "-m", "vidact.cli", "train", RECIPE, "train.batch_size=4",
                           "train.warmup_steps=10", "train.checkpoint_every=1", "train.keep_last=10",
                           "train.steps=4", "train.max_bad_steps=2", "train.devices=2", "train.accelerator=cpu",
                           f"run_dir={run_dir}", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _raw_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from vidact.export.consolidate import consolidate

    return consolidate(checkpoint, prefer_ema=False).state_dict


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_nonfinite_loss_on_one_rank_is_skipped_everywhere(tmp_path, strategy):
    out = poisoned_train(tmp_path, f"train.strategy={strategy}").stdout
    step = POISON_INDEX  # one batch per step, from batch 0
    assert (f"warning: non-finite loss (nan) on rank 0 at step {step} (batch {POISON_INDEX}, sources ['poisoned']); "
            "1/2 consecutive bad steps: optimizer step skipped") in out
    assert f"non-finite loss on another rank at step {step}" in out  # rank 1 skipped too
    checkpoints = tmp_path / "run" / "checkpoints"
    before, after, last = (_raw_weights(checkpoints / f"step-{n:08d}.ckpt") for n in (step, step + 1, 4))
    for name, weight in last.items():
        assert torch.isfinite(weight).all(), name
        assert torch.equal(before[name], after[name]), f"the skipped step moved {name}"
    assert any(not torch.equal(after[n], last[n]) for n in last), "training stopped after the skipped step"
    final = checkpoints / "step-00000004.ckpt"
    state = torch.load(final if final.is_file() else sorted((final / "checkpoint").glob("*model_states.pt"))[0],
                       map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and state["vidact"]["skipped_steps"] == 1
    assert state["lr_schedulers"][0]["last_epoch"] == 3  # the schedule follows the steps taken
    assert math.isfinite(state["vidact"]["loss_ema"])
    for name, weight in state["ema_state_dict"].items():
        assert torch.isfinite(weight).all(), f"ema {name}"


def test_deepspeed_bf16_checks_gradient_overflow():
    # Without it a bf16 ZeRO-2 step would apply the NaN gradients of a skipped step.
    from unittest import mock

    from lightning.pytorch.plugins.precision import DeepSpeedPrecision

    from vidact.lit.strategy import build_strategy

    for name in ("deepspeed_zero2", "deepspeed_zero3"):
        strategy = build_strategy(name, "cpu", batch_size=2)
        strategy.precision_plugin = DeepSpeedPrecision("bf16-mixed")
        with mock.patch.object(type(strategy), "_format_batch_size_and_grad_accum_config"):
            strategy._format_config()
        assert strategy.config["bf16"] == {"enabled": True, "check_grad_overflow": True}
