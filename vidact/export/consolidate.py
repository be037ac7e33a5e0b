"""Any training checkpoint -> one plain state dict of ``VidAct`` weights (EMA preferred).

Accepted inputs:
- a run directory (``run_dir/checkpoints/*.ckpt``): its newest checkpoint that loads, found as
  ``resume=auto`` finds it (``vidact.checkpoint_files.newest_checkpoint``: the largest step; a
  half-written file from a killed job is skipped with a warning);
- a Lightning ``.ckpt`` file: ``state_dict`` holds ``model.*`` (every weight and buffer, the
  normalization stats included) and ``ema_state_dict`` the EMA of the trainable weights
  (``vidact.lit.module.VidActModule.on_save_checkpoint``);
- a DeepSpeed ZeRO checkpoint folder (Lightning's DeepSpeed strategy writes ``last.ckpt/`` as a
  folder with ``checkpoint/*_model_states.pt`` and optimizer shards): consolidated with
  ``deepspeed.utils.zero_to_fp32``. The EMA, when present, sits in the model-states file as
  client state, and so do ZeRO-3's frozen modules (``frozen_state_dict``, kept out of the engine).

The result's keys are ``VidAct`` parameter/buffer names (no ``model.`` prefix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from vidact.checkpoint_files import CHECKPOINT_DIR, checkpoint_candidates, newest_checkpoint

MODULE_PREFIX = "model."  # VidActModule keeps the network as ``self.model``


@dataclass
class Consolidated:
    state_dict: dict[str, Tensor]  # VidAct names -> float tensors
    source: Path  # the checkpoint file or folder actually read
    run_dir: Path | None  # where config.yaml lives, when known
    used_ema: bool
    global_step: int | None = None
    notes: list[str] = field(default_factory=list)


def is_deepspeed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (any(path.glob("checkpoint/*model_states.pt")) or any(path.glob("*model_states.pt"))
                              or (path / "latest").is_file())


def find_checkpoint(path: str | Path) -> Path:
    """A run directory -> its newest good checkpoint (``vidact.checkpoint_files.newest_checkpoint``,
    the search ``resume=auto`` does); a checkpoint file or ZeRO folder -> itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory or checkpoint")
    if path.is_file() or is_deepspeed_checkpoint(path):
        return path
    folder = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise FileNotFoundError(f"{path}: no checkpoints (*.ckpt) in {folder}")
    newest = newest_checkpoint(folder)
    if newest is None:
        raise FileNotFoundError(f"{path}: none of {[c.name for c in candidates]} could be read")
    return newest


def run_dir_for(checkpoint: Path) -> Path | None:
    """``run/checkpoints/x.ckpt`` -> ``run`` when it holds ``config.yaml``."""
    for parent in list(checkpoint.parents)[:3]:
        if (parent / "config.yaml").is_file():
            return parent
    return None


def consolidate(path: str | Path, prefer_ema: bool = True) -> Consolidated:
    checkpoint = find_checkpoint(path)
    if checkpoint.is_dir():
        state, ema, step = _read_deepspeed(checkpoint)
    else:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if "state_dict" not in ckpt:
            raise ValueError(f"{checkpoint}: not a Lightning checkpoint (keys {sorted(ckpt)[:8]})")
        state, ema, step = ckpt["state_dict"], ckpt.get("ema_state_dict") or {}, ckpt.get("global_step")
    return _merge(state, ema, prefer_ema, checkpoint, step)


def _merge(state: dict[str, Tensor], ema: dict[str, Tensor], prefer_ema: bool, checkpoint: Path,
           step: int | None) -> Consolidated:
    weights = {k[len(MODULE_PREFIX):]: v for k, v in state.items() if k.startswith(MODULE_PREFIX)}
    if not weights:
        raise ValueError(f"{checkpoint}: no '{MODULE_PREFIX}*' weights in the checkpoint")
    notes = []
    used_ema = bool(prefer_ema and ema)
    if used_ema:
        unknown = sorted(set(ema) - set(weights))
        if unknown:
            raise ValueError(f"{checkpoint}: EMA entries {unknown[:4]} have no matching weight")
        for name, value in ema.items():  # EMA covers the trainable weights; frozen ones and buffers stay
            weights[name] = value.to(weights[name].dtype)
    else:
        notes.append("no EMA in the checkpoint: raw weights" if prefer_ema else "EMA not requested: raw weights")
    weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    return Consolidated(weights, checkpoint, run_dir_for(checkpoint), used_ema, step, notes)


def _read_deepspeed(folder: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], int | None]:
    """ZeRO-2/3 shards -> (fp32 state dict with the module's names, EMA client state, step)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # only here

    tag = None
    if not (folder / "latest").is_file():
        # Lightning writes <ckpt>/checkpoint/ with no 'latest' file: the shards' folder is the tag.
        sub = [p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*model_states.pt"))]
        if len(sub) != 1:
            raise ValueError(f"{folder}: cannot tell which ZeRO tag to read (found {sub})")
        tag = sub[0]
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    model_states = sorted(folder.glob(f"{tag or (folder / 'latest').read_text().strip()}/*model_states.pt"))
    client = torch.load(model_states[0], map_location="cpu", weights_only=False) if model_states else {}
    ema = client.get("ema_state_dict") or {}
    step = client.get("global_step", client.get("global_steps"))
    # Lightning's DeepSpeed strategy names parameters after the LightningModule ("model.*"); a bare
    # engine around VidAct has no prefix.
    if state and not any(k.startswith(MODULE_PREFIX) for k in state):
        state = {MODULE_PREFIX + k: v for k, v in state.items()}
    # zero_to_fp32 returns parameters and the buffers the engine saved; buffers it missed (older
    # DeepSpeed) come from the module-states file.
    for name, value in (client.get("module") or {}).items():
        key = name if name.startswith(MODULE_PREFIX) else MODULE_PREFIX + name
        if value.numel() or key not in state:  # ZeRO-3 leaves empty placeholders for partitioned params
            state.setdefault(key, value)
    # Under ZeRO-3 the frozen modules (text encoder, frame tokenizer) stay outside the engine and
    # travel as client state (vidact.lit.strategy.hide_frozen_modules).
    for name, value in (client.get("frozen_state_dict") or {}).items():
        state.setdefault(name if name.startswith(MODULE_PREFIX) else MODULE_PREFIX + name, value)
    return state, ema, step
