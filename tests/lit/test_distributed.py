"""Strategies from config, on CPU through the real CLI: 2-process DDP (gloo) and DeepSpeed ZeRO-2.

Each run is a subprocess: Lightning's launcher starts the other ranks by re-running the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidact.config import REPO_ROOT

RECIPE = "debug_sliding_square"
TINY = ["train.batch_size=4", "train.log_every=1", "train.warmup_steps=10", "train.checkpoint_every=2"]


def cli_train(run_dir: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run([sys.executable, "-m", "vidact.cli", "train", RECIPE, *TINY, f"run_dir={run_dir}",
                           *overrides], cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_ddp_two_processes_train_and_resume(tmp_path):
    ddp = ["train.strategy=ddp", "train.devices=2", "train.accelerator=cpu"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    out = cli_train(straight, *ddp, "train.steps=4").stdout
    assert "strategy ddp on 1 node(s) x 2 cpu device(s)" in out and "effective batch size 8" in out
    cli_train(resumed, *ddp, "train.steps=2")
    out = cli_train(resumed, *ddp, "train.steps=4").stdout
    assert "resuming from" in out and "step-00000002.ckpt" in out
    a, b = _checkpoint(straight), _checkpoint(resumed)
    assert a["global_step"] == b["global_step"] == 4 and b["vidact"]["batches_consumed"] == 4
    for name, weight in a["state_dict"].items():
        assert torch.allclose(weight, b["state_dict"][name], atol=1e-6), name
    for name, weight in a["ema_state_dict"].items():
        assert torch.allclose(weight, b["ema_state_dict"][name], atol=1e-6), f"ema {name}"


def test_ranks_draw_different_generated_batches():
    from vidact.config import load
    from vidact.lit.datamodule import GeneratedBatches

    cfg = load(RECIPE, ["train.batch_size=2"])
    single = GeneratedBatches(cfg).batch(3)
    rank0, rank1 = GeneratedBatches(cfg, rank=0, world_size=2), GeneratedBatches(cfg, rank=1, world_size=2)
    assert not torch.equal(rank0.batch(3).actions, rank1.batch(3).actions)
    # One process draws what it always drew (old runs resume unchanged).
    assert torch.equal(single.actions, GeneratedBatches(cfg, rank=0, world_size=1).batch(3).actions)


# One process in the default suite (~45 s); two processes shard the optimizer state (~90 s).
@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_deepspeed_zero2_cpu_trains_saves_resumes(tmp_path, devices):
    from vidact.export.consolidate import consolidate

    ds = ["train.strategy=deepspeed_zero2", f"train.devices={devices}", "train.accelerator=cpu"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli_train(straight, *ds, "train.steps=4")
    cli_train(resumed, *ds, "train.steps=2")
    shards = sorted(p.name for p in (resumed / "checkpoints" / "step-00000002.ckpt" / "checkpoint").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", *[f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
                                                      for r in range(devices)]]
    out = cli_train(resumed, *ds, "train.steps=4").stdout
    assert "resuming from" in out
    a, b = consolidate(straight), consolidate(resumed)
    assert a.global_step == b.global_step == 4 and a.used_ema and b.used_ema
    for name, weight in a.state_dict.items():
        assert torch.allclose(weight, b.state_dict[name], atol=1e-6), name


def test_strategy_choices_on_cpu():
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    from vidact.config import ConfigError
    from vidact.lit.strategy import build_strategy

    assert build_strategy("auto", "cpu") == "auto"
    ddp = build_strategy("ddp", "cpu")
    assert isinstance(ddp, DDPStrategy) and ddp._process_group_backend == "gloo"
    zero3 = build_strategy("deepspeed_zero3", "cpu", batch_size=3)
    assert isinstance(zero3, DeepSpeedStrategy) and type(zero3).__name__ == "CPUDeepSpeedStrategy"
    assert zero3.config["zero_optimization"]["stage"] == 3 and zero3._process_group_backend == "gloo"
    with pytest.raises(ConfigError, match="fsdp needs GPUs"):
        build_strategy("fsdp", "cpu")
