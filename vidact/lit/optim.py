"""AdamW with no-decay groups, and the linear-warmup + cosine learning-rate schedule.

Weight decay pulls weights towards zero; applied to biases, norm gains, embeddings and learned
positions it only fights the parametrization (nanoGPT and DiT exclude them the same way).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidact.config import TrainConfig

# Learned tables held directly as parameters (VidAct's ``modality_emb``, ``obs_pos``, ...) are
# embeddings too; matched on the parameter's own name, so ``time_embed.mlp.*`` still decays.
NO_DECAY_SUFFIXES = ("_emb", "_pos")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (matrices) and a non-decayed one."""
    embedding_tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # ndim < 2: biases and norm gains.
        if p.ndim < 2 or id(p) in embedding_tables or name.rsplit(".", 1)[-1].endswith(NO_DECAY_SUFFIXES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def lr_factor(step: int, train: TrainConfig) -> float:
    """Multiplier of ``train.lr`` at optimizer step ``step`` (0-based).

    During warmup the factor depends on ``step`` only, not on ``train.steps``, so extending a run
    (resuming with a larger ``train.steps``) changes nothing that already happened.
    """
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    span = max(train.steps - train.warmup_steps, 1)
    progress = min((step - train.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * cosine


def build_optimizer(model: nn.Module, train: TrainConfig) -> tuple[torch.optim.Optimizer,
                                                                  torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(param_groups(model, train.weight_decay), lr=train.lr, betas=(0.9, 0.95))
    # A closure, not a callable object: LambdaLR would save an object's attributes in the
    # checkpoint and a resumed run would keep the old train.steps horizon.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, train))
    return optimizer, scheduler
