"""Optimizer groups, the learning-rate schedule and the generated data stream."""

from __future__ import annotations

import itertools

import pytest
import torch

from vidact.config import TrainConfig, load
from vidact.lit.datamodule import GeneratedBatches
from vidact.lit.optim import build_optimizer, lr_factor, param_groups
from vidact.models import VidAct


@pytest.fixture
def cfg():
    return load("debug_sliding_square", ["train.batch_size=3"])


def test_no_decay_groups(cfg):
    model = VidAct(cfg.model)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.1
    assert {"modality_emb", "obs_pos", "action_pos", "action_out.bias"} <= no_decay_names
    assert {"action_out.weight", "state_proj.weight", "time_embed.mlp.0.weight"} <= decay_names
    assert all("bias" not in n and "norm" not in n for n in decay_names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay_names | no_decay_names == trainable and not decay_names & no_decay_names


def test_lr_schedule_warmup_then_cosine():
    train = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    factors = [lr_factor(s, train) for s in range(120)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.55)
    assert factors[100] == pytest.approx(0.1) and factors[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    # Warmup does not depend on the horizon: extending a run leaves its past unchanged.
    longer = TrainConfig(steps=1000, warmup_steps=10, lr=1.0)
    assert [lr_factor(s, longer) for s in range(10)] == factors[:10]


def test_scheduler_drives_optimizer(cfg):
    model = VidAct(cfg.model)
    train = TrainConfig(steps=20, warmup_steps=4, lr=2e-3)
    optimizer, scheduler = build_optimizer(model, train)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 4)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * 2 / 4)


@pytest.mark.parametrize("kind", ["sliding_square", "fake"])
def test_generated_batches_resume_at_any_index(cfg, kind):
    cfg.data.kind = kind
    first = list(itertools.islice(GeneratedBatches(cfg), 4))
    later = list(itertools.islice(GeneratedBatches(cfg, start=2), 2))
    assert [i for i, _ in first] == [0, 1, 2, 3] and [i for i, _ in later] == [2, 3]
    for (_, a), (_, b) in zip(first[2:], later):
        assert torch.equal(a.obs_frames, b.obs_frames) and torch.equal(a.actions, b.actions)
        assert a.text == b.text and a.source == [kind] * 3
    assert not torch.equal(first[0][1].actions, first[1][1].actions)
    cfg.seed += 1
    other = next(iter(GeneratedBatches(cfg)))[1]
    assert not torch.equal(other.actions, first[0][1].actions)


def test_precision_auto_is_fp32_without_a_bf16_gpu():
    from vidact.train import resolve_precision

    expected = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    assert resolve_precision("auto") == expected
    assert resolve_precision("16-mixed") == "16-mixed"
