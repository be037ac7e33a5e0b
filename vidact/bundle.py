"""A policy bundle's file names, prefixes and reading: the one place that knows the layout
``vidact.export.package`` writes and ``vidact.deploy``, the LeRobot plugin and ``train.init_from``
read (a leaf module: it imports nothing of vidact at import time, so deploy never imports export).

    BUNDLE/
      config.json            {"type": "vidact", LeRobot's feature fields, "vidact": VidActConfig, ...}
      model.safetensors      weights, keys "model.<VidAct name>"
      vidact_policy.json     action space, cameras, components, provenance
      text_encoder/, vae/    pretrained components' definitions (their weights are in model.safetensors)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from torch import Tensor

    from vidact.models.configuration import VidActConfig

CONFIG_NAME = "config.json"  # LeRobot's names (lerobot.utils.constants)
WEIGHTS_NAME = "model.safetensors"
POLICY_INFO_NAME = "vidact_policy.json"
POLICY_TYPE = "vidact"
BUNDLE_FORMAT = 2  # 2: pretrained components' definitions inside the bundle (TEXT_ENCODER_DIR, VAE_DIR)
MODULE_PREFIX = "model."  # weight names: LeRobot's policy wrapper holds the network as ``self.model``
TEXT_ENCODER_DIR = "text_encoder"
VAE_DIR = "vae"
PRIMARY_IMAGE_KEY = "observation.image"  # LeRobot's key for a single-camera env (MetaWorld, PushT)
STATE_KEY = "observation.state"
ACTION_KEY = "action"


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def read_config(path: str | Path) -> dict[str, Any]:
    """The bundle's ``config.json``; raises when ``path`` is not a vidact bundle."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a vidact bundle (no {name}); create one with `vidact export`")
    config = json.loads((path / CONFIG_NAME).read_text())
    if config.get("type") != POLICY_TYPE:
        raise ValueError(f"{path / CONFIG_NAME}: policy type {config.get('type')!r}, expected {POLICY_TYPE!r}")
    return config


def read_info(path: str | Path) -> dict[str, Any]:
    """The bundle's ``vidact_policy.json``; {} when it has none."""
    info_path = Path(path) / POLICY_INFO_NAME
    return json.loads(info_path.read_text()) if info_path.is_file() else {}


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """``model.safetensors`` of the bundle folder ``path`` (or that file itself) with VidAct names
    (the ``model.`` prefix removed)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    weights = load_file(str(path))
    return {k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k: v for k, v in weights.items()}


def write_weights(folder: str | Path, state_dict: dict[str, Tensor]) -> None:
    """``model.safetensors`` in ``folder`` from VidAct names (the ``model.`` prefix added). Tensors are
    cloned: safetensors refuses tensors sharing storage (T5 ties its input embeddings). The folder is
    made if missing."""
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file({MODULE_PREFIX + k: v.detach().clone().contiguous() for k, v in state_dict.items()},
              str(Path(folder) / WEIGHTS_NAME), metadata={"format": "pt", "vidact_bundle": str(BUNDLE_FORMAT)})


@contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write a bundle into, moved into place (replacing
    ``final``) when the block succeeds and removed when it fails: a write that stops half way
    leaves no half bundle that would load with missing files."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.chmod(staging, 0o755)  # mkdtemp makes it private
    os.replace(staging, final)


def network_config(bundle: str | Path, network: dict[str, Any], info: dict[str, Any]) -> VidActConfig:
    """The bundle's ``VidActConfig`` (``config.json``'s ``vidact``) with the component folders its
    ``vidact_policy.json`` lists resolved inside the bundle; build it with
    ``VidAct(config, component_weights=False)``."""
    from vidact.models.configuration import VidActConfig

    cfg = VidActConfig.from_dict(network)
    folders = info.get("components") or {}
    if "text_encoder" in folders:
        cfg.text_encoder.path = str(Path(bundle) / folders["text_encoder"])
    if "vae" in folders:
        cfg.frame_tokenizer.vae_path = str(Path(bundle) / folders["vae"])
    return cfg
