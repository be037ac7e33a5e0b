"""DeepSpeed ZeRO-2/3 checkpoints (saved by a real engine on CPU, gloo) -> one VidAct state dict.

Slow: DeepSpeed builds its shared-memory comm op on first use (~1 minute, cached afterwards; a
warm run takes ~5 s per stage)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from vidact.export.consolidate import consolidate, find_checkpoint
from vidact.models import VidAct, VidActConfig

MODEL = dict(height=16, width=16, channels=1, state_dim=2, action_dim=2, chunk_length=4)

SAVE = textwrap.dedent("""
    import os, sys, torch
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    import deepspeed
    from vidact.models import VidAct, VidActConfig

    class Holder(torch.nn.Module):  # names parameters "model.*", like Lightning's DeepSpeed strategy
        def __init__(self):
            super().__init__()
            self.model = VidAct(VidActConfig(**{model!r}))

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    holder = Holder()
    holder.model.normalizer.set_stats({{k: {{"mean": [1.0, 2.0], "std": [3.0, 4.0]}} for k in ("state", "action")}})
    trainable = [p for p in holder.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=holder, optimizer=torch.optim.AdamW(trainable, lr=1e-3),
        model_parameters=trainable, config={{"train_batch_size": 1, "zero_force_ds_cpu_optimizer": False,
                                            "zero_optimization": {{"stage": int(sys.argv[2])}}}})
    with deepspeed.zero.GatheredParameters(list(holder.parameters())):  # ZeRO-3: full tensors, not shards
        raw = {{n: p.detach().clone() for n, p in holder.model.named_parameters()}}
    ema = {{n: v + 1 for n, v in raw.items() if holder.model.get_parameter(n).requires_grad}}
    torch.save(raw, sys.argv[1] + ".raw.pt")
    engine.save_checkpoint(sys.argv[1], tag="checkpoint", client_state={{"ema_state_dict": ema, "global_step": 3}})
""").format(model=MODEL)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_checkpoint_consolidates_with_ema_and_buffers(tmp_path, stage):
    folder = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", SAVE, str(folder), str(stage), str(29500 + 17 * stage)], check=True,
                   capture_output=True, text=True)
    assert find_checkpoint(folder) == folder  # a folder checkpoint is taken as is
    raw = torch.load(str(folder) + ".raw.pt")
    expected = VidAct(VidActConfig(**MODEL)).state_dict()

    merged = consolidate(folder)
    assert set(merged.state_dict) == set(expected) and merged.used_ema and merged.global_step == 3
    trainable = [n for n in raw if n.startswith(("action_in", "backbone"))]
    for name in trainable:
        assert torch.allclose(merged.state_dict[name], raw[name] + 1), name  # EMA (= raw + 1 here)
    assert torch.equal(merged.state_dict["normalizer.state_scale"], torch.tensor([3.0, 4.0]))
    assert bool(merged.state_dict["normalizer.has_stats"])

    plain = consolidate(folder, prefer_ema=False)
    for name in trainable:
        assert torch.allclose(plain.state_dict[name], raw[name]), name
    model = VidAct(VidActConfig(**MODEL))
    model.load_state_dict(merged.state_dict)  # strict: every weight and buffer is there


@pytest.mark.slow
def test_export_lightning_deepspeed_run(tmp_path):
    """`vidact train` with train.strategy=deepspeed_zero2 (checkpoints are folders, last.ckpt a
    symlink) -> `vidact export` -> a Policy acts; the EMA came from the engine's client state."""
    import json

    import numpy as np

    from vidact.cli import main
    from vidact.deploy import Policy

    run, out = tmp_path / "run", tmp_path / "bundle"
    assert main(["train", "debug_sliding_square", "train.steps=2", "train.batch_size=4",
                 "train.strategy=deepspeed_zero2", "train.accelerator=cpu", f"run_dir={run}"]) == 0
    assert (run / "checkpoints" / "last.ckpt").is_dir()
    assert main(["export", str(run), str(out)]) == 0
    assert json.loads((out / "vidact_policy.json").read_text())["source"]["ema"] is True
    policy = Policy.from_pretrained(out)
    chunk = policy.predict_chunk({"observation.image": np.zeros((16, 16, 1), np.uint8),
                                  "observation.state": np.zeros(2), "task": "x"})
    assert chunk.actions.shape == (4, 2) and np.isfinite(chunk.actions).all()
