"""``train.strategy`` -> a Lightning strategy, and the few collective operations training needs.

This is the only vidact module that imports DeepSpeed (and only when a DeepSpeed strategy is
asked for). The model code is written for one device; everything distributed lives here.

| ``train.strategy`` | GPU | CPU (tests, debugging) |
|---|---|---|
| ``auto`` | Lightning's choice (DDP for several devices) | same, gloo |
| ``ddp`` | ``DDPStrategy`` (nccl) | ``DDPStrategy`` (gloo) |
| ``deepspeed_zero2`` / ``_zero3`` | ``VidActDeepSpeedStrategy`` (see below) | :class:`CPUDeepSpeedStrategy` (gloo) |
| ``fsdp`` | ``FSDPStrategy`` (untested here: no GPU) | refused with a config error (Lightning requires CUDA) |

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA, although DeepSpeed's ZeRO-2
and ZeRO-3 engines train and save on CPU with the gloo backend (DeepSpeed picks its own CPU
accelerator when no GPU is visible). :class:`CPUDeepSpeedStrategy` lifts only that check, so the
tests exercise the real ZeRO path (sharded optimizer state, engine checkpoints) on CPU.

ZeRO-3 trains, saves and resumes on 2 CPU processes too (tests/lit/test_distributed.py). Under
ZeRO-3 every rank must call the same partitioned submodules in the same order (each call gathers
that module's parameters with a collective). VidAct's frozen encoders break that on purpose: the
text encoder caches embeddings per instruction and runs only on a miss, the VAE latent cache skips
the frame tokenizer, so one rank ran T5 while the other did not and the next backward deadlocked
(one rank waiting in an all-gather, the other in the gradient reduce-scatter). Frozen modules have
no gradients and no optimizer state, so :func:`hide_frozen_modules` keeps them out of the engine:
full replicas on every rank, invisible to ZeRO-3's hooks, saved as ``frozen_state_dict`` client
state next to the shards (``vidact.export.consolidate`` merges them back). Media needs the whole
weights outside a forward: every rank joins :func:`gathered`, then rank 0 samples from its own copy.
The EMA under ZeRO-3 is sharded like the parameters (:func:`ema_view`): each rank follows its own
partition, with no communication per step; checkpoints and media gather it (:func:`zero3_gather`,
one all-gather), and a resumed run splits it again (:func:`zero3_local_shard`). After the same
steps it equals ZeRO-2's whole-tensor EMA (tests/lit/test_distributed.py, slow).

A non-finite loss is skipped under DeepSpeed as under DDP (``VidActModule._bad_step``): every
rank runs backward on the loss times NaN and the ZeRO optimizer discards the step as an overflow;
for bf16 ``VidActDeepSpeedStrategy`` turns DeepSpeed's ``check_grad_overflow`` on, without which
a bf16 ZeRO-2 step would apply the NaN gradients.

Not verified here (no GPU): the CUDA path of ``VidActDeepSpeedStrategy`` (hidden frozen modules
moved with ``.to(root_device)``, bf16 overflow check).
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
        cls = _deepspeed_class(cpu)
        # Small buckets: the defaults (2e8 elements) allocate ~800 MB per bucket, fine on a GPU
        # and wasteful for the CPU runs; overlap_comm needs CUDA streams.
        # logging_batch_size_per_gpu: Lightning would read it off a DataLoader's batch sampler,
        # and vidact's loaders yield whole batches.
        kwargs = dict(stage=stage, overlap_comm=not cpu, logging_batch_size_per_gpu=batch_size)
        if cpu:
            kwargs.update(process_group_backend="gloo", allgather_bucket_size=int(5e6), reduce_bucket_size=int(5e6))
        return cls(**kwargs)
    raise ValueError(f"train.strategy={strategy!r} is not one of {list(STRATEGIES)}")


FROZEN_STATE_KEY = "frozen_state_dict"  # client state of a ZeRO-3 checkpoint: the hidden frozen modules


def hide_frozen_modules(lightning_module) -> dict:
    """Take ``lightning_module.model``'s frozen submodules (``VidAct.frozen_modules``: text encoder,
    frame tokenizer, a frozen observation encoder) out of the module tree before ZeRO-3 wraps it.

    They stay reachable as plain attributes (``model.text_encoder`` still works) but DeepSpeed
    neither partitions them nor hooks them, so their data-dependent calls (embedding caches) cannot
    desynchronise the ranks. Returns ``{"model.<name>": module}``; also kept on the LightningModule
    as ``zero3_hidden``.
    """
    model = getattr(lightning_module, "model", None)
    frozen = getattr(model, "frozen_modules", None)
    hidden = dict(getattr(lightning_module, "zero3_hidden", None) or {})
    if frozen is None:
        return hidden
    for name, module in frozen().items():
        if name not in model._modules or any(p.requires_grad for p in module.parameters()):
            continue
        del model._modules[name]
        object.__setattr__(model, name, module)  # a plain attribute: not in modules() / parameters()
        hidden[f"model.{name}"] = module
    object.__setattr__(lightning_module, "zero3_hidden", hidden)
    return hidden


def _deepspeed_class(cpu: bool):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    class VidActDeepSpeedStrategy(DeepSpeedStrategy):
        """``DeepSpeedStrategy`` that keeps frozen modules out of ZeRO-3 (see module docstring)."""

        def _format_config(self) -> None:
            super()._format_config()
            # A non-finite loss is skipped by turning every gradient into NaN (VidActModule._bad_step);
            # the ZeRO optimizers discard such a step for fp16 and fp32, and for bf16 only with this.
            bf16 = self.config.get("bf16")
            if isinstance(bf16, dict) and bf16.get("enabled"):
                bf16.setdefault("check_grad_overflow", True)

        def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
            if self.zero_stage_3 and self.lightning_module is not None:
                for module in hide_frozen_modules(self.lightning_module).values():
                    module.to(self.root_device)
            return self._initialize_engine(model, optimizer, lr_scheduler)

        def _initialize_engine(self, model, optimizer, lr_scheduler):
            return DeepSpeedStrategy._setup_model_and_optimizer(self, model, optimizer, lr_scheduler)

        def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
            hidden = getattr(self.lightning_module, "zero3_hidden", None) if self.lightning_module else None
            if hidden:
                frozen = {f"{prefix}.{k}": v.detach().cpu() for prefix, m in hidden.items()
                          for k, v in m.state_dict().items()}
                checkpoint = {**checkpoint, FROZEN_STATE_KEY: frozen}
            super().save_checkpoint(checkpoint, filepath, storage_options)

        def load_checkpoint(self, checkpoint_path, weights_only=None):
            client_state = super().load_checkpoint(checkpoint_path, weights_only)
            hidden = getattr(self.lightning_module, "zero3_hidden", None) or {}
            saved = client_state.get(FROZEN_STATE_KEY) or {}
            for prefix, module in hidden.items():
                state = {k[len(prefix) + 1:]: v for k, v in saved.items() if k.startswith(prefix + ".")}
                if state:
                    module.load_state_dict(state)
            return client_state

    if not cpu:
        return VidActDeepSpeedStrategy

    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.strategies.ddp import DDPStrategy

    class CPUDeepSpeedStrategy(VidActDeepSpeedStrategy):
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

        def _initialize_engine(self, model, optimizer, lr_scheduler=None):
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


def gathered(trainer, params):
    """Context in which ``params`` hold their full values on every rank: DeepSpeed's
    ``GatheredParameters`` under ZeRO-3 (collective: enter it on every rank), a no-op otherwise.
    Read-only: changes made inside are not written back to the partitions."""
    import contextlib

    if deepspeed_zero_stage(trainer) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)


def ema_view(trainer, parameter: torch.Tensor) -> torch.Tensor:
    """What the EMA of ``parameter`` follows on this rank: the parameter itself, or under ZeRO-3
    this rank's flat partition of it (``ds_tensor``, updated in place by the ZeRO optimizer). The
    EMA under ZeRO-3 is sharded like the parameters: no gather per step, 1/world of the memory."""
    return parameter.ds_tensor if deepspeed_zero_stage(trainer) == 3 else parameter


def zero3_local_shard(full: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """This rank's flat partition of ``full`` (a whole tensor shaped like the ZeRO-3 ``parameter``),
    laid out as DeepSpeed partitions: contiguous chunks of ``partition_numel`` in rank order,
    zero padded at the end."""
    size = parameter.ds_tensor.numel()
    start = dist.get_rank(group=parameter.ds_process_group) * size
    flat = full.detach().reshape(-1)[start:start + size]
    return torch.cat([flat, flat.new_zeros(size - flat.numel())]) if flat.numel() < size else flat.clone()


def zero3_gather(shards: dict[str, torch.Tensor], parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole tensors from every rank's :func:`zero3_local_shard` (collective: call on every rank).
    One all-gather for all of them: every rank holds equal-sized partitions."""
    if not shards:
        return {}
    names = list(shards)
    group = parameters[names[0]].ds_process_group
    flat = torch.cat([shards[n].reshape(-1) for n in names])
    parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(parts, flat, group=group)
    out, offset = {}, 0
    for name in names:
        p, size = parameters[name], shards[name].numel()
        whole = torch.cat([part[offset:offset + size] for part in parts])[:p.ds_numel]
        out[name] = whole.view(p.ds_shape).clone()
        offset += size
    return out


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
