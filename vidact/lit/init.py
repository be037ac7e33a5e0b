"""``train.init_from``: start a run from another run's weights (weights only, EMA preferred).

Accepted: a run directory or checkpoint (anything :func:`vidact.export.consolidate.consolidate`
reads: ``.ckpt`` files, DeepSpeed folders), an exported bundle folder or its ``.safetensors``.
A weight is loaded when the name and shape match; the report lists what was loaded, what was
skipped (shape mismatch, or absent from this model) and what is new (kept at initialization),
so a finetune with a changed action dimension says exactly which heads start fresh. The
normalizer's statistics are never taken from the source: they describe the source's data, and
this run sets them from its own (a policy pretrained on reset scenes, whose state barely varies,
would otherwise scale the demonstrations' states by the scenes' spread).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from vidact.bundle import WEIGHTS_NAME
from vidact.bundle import read_weights as read_bundle_weights


DATA_STATS_PREFIX = "normalizer."  # VidAct.normalizer: offsets, scales and has_stats of state and action


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why
    new: list[str] = field(default_factory=list)
    data_stats: list[str] = field(default_factory=list)  # the normalizer's, left to this run's data

    def __str__(self) -> str:
        lines = [f"init_from {self.source}: {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped, "
                 f"{len(self.new)} new"]
        lines += [f"  skipped {name}: {why}" for name, why in sorted(self.skipped.items())]
        lines += [f"  new {name}" for name in sorted(self.new)]
        if self.data_stats:
            lines.append(f"  normalizer statistics ({len(self.data_stats)} tensors) from this run's data, not the source's")
        return "\n".join(lines)


def read_weights(source: str | Path) -> dict[str, Tensor]:
    """VidAct weights (names without the ``model.`` prefix) from a run, checkpoint or bundle."""
    path = Path(source)
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        path = path / WEIGHTS_NAME
    if path.suffix == ".safetensors":
        return read_bundle_weights(path)
    if not path.exists():
        raise FileNotFoundError(f"train.init_from={str(source)!r} does not exist")
    from vidact.export.consolidate import consolidate

    return consolidate(path, prefer_ema=True).state_dict


def init_weights(model: nn.Module, source: str | Path) -> InitReport:
    """Copy matching weights from ``source`` into ``model`` in place."""
    incoming = read_weights(source)
    own = model.state_dict()
    report = InitReport(str(source))
    matched = {}
    for name, value in incoming.items():
        if name.startswith(DATA_STATS_PREFIX):
            report.data_stats.append(name)
        elif name not in own:
            report.skipped[name] = "not in this model"
        elif own[name].shape != value.shape:
            report.skipped[name] = f"shape {tuple(value.shape)} != {tuple(own[name].shape)}"
        else:
            matched[name] = value.to(own[name].dtype)
            report.loaded.append(name)
    report.new = [name for name in own if name not in incoming]
    with torch.no_grad():
        model.load_state_dict(matched, strict=False)
    return report
