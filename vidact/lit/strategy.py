"""``train.strategy`` -> a Lightning strategy, and the few collective operations training needs.

This is the only vidact module that imports DeepSpeed (and only when a DeepSpeed strategy is
asked for). The model code is written for one device; everything distributed lives here.

| ``train.strategy`` | GPU | CPU (tests, debugging) |
|---|---|---|
| ``auto`` | Lightning's choice (DDP for several devices) | same, gloo |
| ``ddp`` | ``DDPStrategy`` (nccl) | ``DDPStrategy`` (gloo) |
| ``deepspeed_zero2`` / ``_zero3`` | Lightning's ``DeepSpeedStrategy`` | :class:`CPUDeepSpeedStrategy` (gloo) |
| ``fsdp`` | ``FSDPStrategy`` (untested here: no GPU) | refused with a config error (Lightning requires CUDA) |

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, although DeepSpeed's ZeRO-2
and ZeRO-3 engines train and save on CPU with the gloo backend (DeepSpeed picks its own CPU
accelerator when no GPU is visible). :class:`CPUDeepSpeedStrategy` lifts only that check, so the
tests exercise the real ZeRO path (sharded optimizer state, engine checkpoints) on CPU.

ZeRO-3 is not verified end to end here: a 2-process CPU run completed its first step and then
hung (issue 4 follow-up); ZeRO-2 trains, saves and resumes (tests/lit/test_distributed.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from vidact.config import STRATEGIES, ConfigError


def resolve_accelerator(accelerator: str) -> str:
    if accelerator != "auto":
        return accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def is_deepspeed(strategy: str) -> bool:
    return strategy.startswith("deepspeed")


def build_strategy(strategy: str, accelerator: str, *, batch_size: int = 1):
    """A Lightning strategy (or the string ``"auto"``) for ``train.strategy`` on ``accelerator``."""
    accelerator = resolve_accelerator(accelerator)
    cpu = accelerator == "cpu"
    if strategy == "auto":
        return "auto"
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if cpu else None)
    if strategy == "fsdp":
        if cpu:
            raise ConfigError("train.strategy=fsdp needs GPUs (Lightning's FSDPStrategy refuses the CPU "
                              "accelerator); on CPU use ddp, deepspeed_zero2 or deepspeed_zero3")
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy()
    if is_deepspeed(strategy):
        stage = int(strategy[-1])
        cls = _cpu_deepspeed_class() if cpu else _deepspeed_class()
        # Small buckets: the defaults (2e8 elements) allocate ~800 MB per bucket, fine on a GPU
        # and wasteful for the CPU runs; overlap_comm needs CUDA streams.
        # logging_batch_size_per_gpu: Lightning would read it off a DataLoader's batch sampler,
        # and vidact's loaders yield whole batches.
        kwargs = dict(stage=stage, overlap_comm=not cpu, logging_batch_size_per_gpu=batch_size)
        if cpu:
            kwargs.update(process_group_backend="gloo", allgather_bucket_size=int(5e6), reduce_bucket_size=int(5e6))
        return cls(**kwargs)
    raise ValueError(f"train.strategy={strategy!r} is not one of {list(STRATEGIES)}")


def _deepspeed_class():
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy


def _cpu_deepspeed_class():
    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from lightning.pytorch.strategies.ddp import DDPStrategy

    class CPUDeepSpeedStrategy(DeepSpeedStrategy):
        """``DeepSpeedStrategy`` on CPU with gloo: skips the two CUDA-only checks."""

        strategy_name = "deepspeed_cpu"

        def setup_environment(self) -> None:
            # DeepSpeedStrategy.setup_environment only adds the CUDA check before DDP's set-up.
            DDPStrategy.setup_environment(self)

        def setup_distributed(self) -> None:
            # As DeepSpeedStrategy's, without the check that device indices match local ranks
            # (CPU devices have no index).
            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

        def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
            # As DeepSpeedStrategy's, but DeepSpeed's device_rank is the local rank: the CPU
            # device's index is None, which the engine cannot compare.
            import argparse

            import deepspeed

            engine, ds_optimizer, _, _ = deepspeed.initialize(
                args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
                model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
                lr_scheduler=lr_scheduler, dist_init_required=False)
            return engine, ds_optimizer

    return CPUDeepSpeedStrategy


def deepspeed_zero_stage(trainer) -> int | None:
    """ZeRO stage of the trainer's strategy, None when it is not DeepSpeed."""
    config = getattr(trainer.strategy, "config", None)
    if not isinstance(config, dict) or "zero_optimization" not in config:
        return None
    return int(config["zero_optimization"].get("stage", 0))


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise max of a small flag tensor over all ranks (identity on one process).

    Decisions that change control flow (skip a non-finite step, stop on a signal) are taken on
    the reduced flags, so every rank takes the same branch and no collective is left waiting.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def release_process_group() -> None:
    """Destroy the default process group after training. Left to interpreter exit, a gloo group
    set up by DeepSpeed on CPU held the process ~10 s after the work was done."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def register_zero3_external_parameters(root, model) -> None:
    """ZeRO-3 gathers a module's parameters around that module's own ``forward``. VidAct reads
    some parameters outside any submodule's forward (its learned tables: ``modality_emb``,
    ``obs_pos``, ...; the loss calls its methods, not ``forward``), so they are registered as
    external parameters of the root module: gathered for the whole step, as DeepSpeed documents."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for _, parameter in model.named_parameters(recurse=False):
        register_external_parameter(root, parameter)
