"""Write a policy bundle in LeRobot's ``pretrained_model/`` layout.

    OUT/
      config.json            {"type": "vidact", LeRobot's feature fields, "vidact": VidActConfig,
                              "sampler": SamplerConfig, "mode", "n_action_steps"}
      model.safetensors      EMA weights, keys "model.<VidAct name>" (the attribute LeRobot's policy
                              wrapper holds the network in); normalization stats are buffers inside
      policy_preprocessor.json, policy_postprocessor.json   LeRobot's processor pipelines (rename +
                              device only), for lerobot-eval through vidact.deploy.lerobot_plugin
      vidact_policy.json     action space (dim, bounds), text encoder reference, camera keys, the
                              camera resolution the data was recorded at and how each camera is
                              fitted to the model's size, the component folders, provenance
      text_encoder/          a t5/clip/siglip text encoder's config and tokenizer files
      vae/config.json        a VAE frame tokenizer's config (model.frame_tokenizer.vae_path)
      policy_fast.pt2, vidact_policy_fast.json   only with format="torch_export" (--format
                              torch_export): vidact.export.torch_export

Everything ``vidact.deploy.policy.Policy`` needs is in the bundle: no Lightning, no omegaconf, no
training config, and nothing from the training machine's folders at load time. The pretrained
components' weights are in ``model.safetensors`` with the rest; their definitions (config,
tokenizer) in the folders above, which ``config.json`` names relative to the bundle
(:func:`vidact.bundle.network_config` resolves them).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from vidact.bundle import (ACTION_KEY, BUNDLE_FORMAT, CONFIG_NAME, POLICY_INFO_NAME, POLICY_TYPE, PRIMARY_IMAGE_KEY,
                           STATE_KEY, TEXT_ENCODER_DIR, VAE_DIR, staged_folder, write_weights)
from vidact.export.consolidate import Consolidated, consolidate

FORMATS = ("bundle", "torch_export")  # torch_export: the bundle + policy_fast.pt2


def camera_info(cfg) -> tuple[list[str], list[list[int]] | None, dict[str, str], dict | None]:
    """(camera keys, their recorded [H,W] sizes or None, each camera's fit mode at deployment,
    action stats {min,max} or None) from the run's data config: LeRobot datasets name their
    cameras in ``meta/info.json``. A camera trained on random crops is center-cropped when deployed."""
    from vidact.data.info import DatasetInfo

    views = cfg.model.views
    sources = [s for s in cfg.data.sources if s.kind == "lerobot"]
    for source in sources:
        try:
            info = DatasetInfo.read(source.path)
        except FileNotFoundError:
            continue
        keys = (list(source.camera_keys) or info.camera_keys)[:views]
        sizes = [list(info.camera_size(k)[:2]) for k in keys]
        fits = {k: source.camera_fit.get(k, source.fit_mode).replace("random_crop", "center_crop") for k in keys}
        stats = None
        stats_path = Path(source.path) / "meta" / "stats.json"
        if stats_path.is_file():
            stats = json.loads(stats_path.read_text()).get(source.action_key)
        return keys, sizes, fits, stats
    keys = [PRIMARY_IMAGE_KEY] if views == 1 else [f"observation.images.view{i}" for i in range(views)]
    return keys, None, {k: "resize" for k in keys}, None


def metaworld_generation(cfg) -> dict | None:
    """The ``vidact data metaworld`` settings of the run's first LeRobot dataset that ``vidact
    eval`` must repeat: ``rendering`` (its ``--camera``: vidact or lerobot) and ``state`` (its
    ``--state``: agent or privileged, with ``position_noise``, its ``--position-noise``); None when
    the data did not come from that generator."""
    for source in (s for s in cfg.data.sources if s.kind == "lerobot"):
        if (found := dataset_generation(source.path)) is not None:
            return found
    return None


def dataset_generation(path: str | Path) -> dict | None:
    """:func:`metaworld_generation`'s settings of one LeRobot dataset folder (None: not generated
    by ``vidact data metaworld``)."""
    meta = Path(path) / "meta" / "vidact_generation.json"
    if not meta.is_file():
        return None
    config = json.loads(meta.read_text())["config"]
    return {"rendering": config.get("camera", "vidact"), "state": config.get("state", "agent"),
            "position_noise": float(config.get("position_noise", 0.0))}


def action_bounds(cfg, dataset_action_stats: dict | None, dim: int) -> dict[str, list[float]] | None:
    """Per-dimension [min, max] of the training actions: from a stats file (data.stats=file) or the
    LeRobot dataset's ``meta/stats.json``; None when the data carries none (generated toy data)."""
    stats = None
    if cfg.data.stats == "file" and cfg.data.stats_path:
        stats = json.loads(Path(cfg.data.stats_path).read_text()).get("action")
    stats = stats or dataset_action_stats
    if not stats or "min" not in stats or "max" not in stats:
        return None
    low, high = [float(x) for x in stats["min"]], [float(x) for x in stats["max"]]
    if len(low) != dim or len(high) != dim:
        return None
    return {"low": low, "high": high}


def lerobot_config(cfg, camera_keys: list[str], mode: str, n_action_steps: int) -> dict[str, Any]:
    m = cfg.model
    features = {k: {"type": "VISUAL", "shape": [m.channels, m.height, m.width]} for k in camera_keys}
    features[STATE_KEY] = {"type": "STATE", "shape": [m.state_dim]}
    return {
        "type": POLICY_TYPE,
        "n_obs_steps": m.history,
        "input_features": features,
        "output_features": {ACTION_KEY: {"type": "ACTION", "shape": [m.action_dim]}},
        "device": "cpu",
        "use_amp": False,
        "push_to_hub": False,
        "vidact": m.to_dict(),
        "sampler": asdict(cfg.sampler),
        "mode": mode,
        "n_action_steps": n_action_steps,
    }


def write_components(out: Path, model_cfg):
    """Write the definitions of the model's pretrained components (their weights are in the state
    dict) into the bundle ``out``. Returns the model config pointing at them, relative to the
    bundle, and ``{component: folder}`` for ``vidact_policy.json``'s ``components``."""
    from vidact.tokenizers.text import save_text_encoder_files
    from vidact.tokenizers.video import save_vae_config

    model_cfg = copy.deepcopy(model_cfg)
    folders: dict[str, str] = {}
    text = model_cfg.text_encoder
    if text.kind in ("t5", "clip", "siglip"):
        save_text_encoder_files(text, out / TEXT_ENCODER_DIR)
        text.path = folders["text_encoder"] = TEXT_ENCODER_DIR
    frames = model_cfg.frame_tokenizer
    if frames.kind == "vae" and frames.vae_path:
        save_vae_config(frames, out / VAE_DIR)
        frames.vae_path = folders["vae"] = VAE_DIR
    if model_cfg.obs_encoder.kind == "timm":
        model_cfg.obs_encoder.weights_path = None  # the architecture is timm_name; the weights are in the state dict
    return model_cfg, folders


def package(run_or_checkpoint: str | Path, out: str | Path, mode: str = "policy_fast",
            n_action_steps: int | None = None, prefer_ema: bool = True, config_path: str | Path | None = None,
            overwrite: bool = False, format: str = "bundle", log=print) -> Path:
    """Consolidate ``run_or_checkpoint`` and write the bundle to ``out``; returns ``out``.
    ``format="torch_export"`` also writes ``policy_fast.pt2`` (``vidact.export.torch_export``) and
    fails, writing nothing, when its parity check against the PyTorch sampler fails."""
    from vidact.config import from_yaml
    from vidact.generative.schedule import Mode

    mode = Mode(mode).value
    if format not in FORMATS:
        raise ValueError(f"export format {format!r} is not one of {list(FORMATS)}")
    merged: Consolidated = consolidate(run_or_checkpoint, prefer_ema=prefer_ema)
    config_file = Path(config_path) if config_path else (merged.run_dir / "config.yaml" if merged.run_dir else None)
    if config_file is None or not config_file.is_file():
        raise FileNotFoundError(f"{merged.source}: no config.yaml found beside the checkpoint; pass the run directory "
                                "or --config RUN/config.yaml")
    cfg = from_yaml(config_file.read_text())
    _check_weights(cfg.model, merged.state_dict)
    K = cfg.model.chunk_length
    n_action_steps = n_action_steps or max(1, K // 2)
    if not 1 <= n_action_steps <= K:
        raise ValueError(f"n_action_steps={n_action_steps} must be in [1, chunk_length={K}]")

    final = Path(out)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{final} exists and is not empty; pass --overwrite to replace the bundle")
    # Written beside the destination and moved into place at the end: an export that fails half
    # way (a missing package, a full disk) leaves no half bundle that would load with missing files.
    with staged_folder(final) as out:
        _write_bundle(out, cfg, merged, mode, n_action_steps)
        if format == "torch_export":
            from vidact.export.torch_export import export_policy_fast

            export_policy_fast(out, log=log)
    return final


def _write_bundle(out: Path, cfg, merged: Consolidated, mode: str, n_action_steps: int) -> None:
    from vidact.worldmodel.judge import JUDGE_CONFIG, JUDGE_DIR

    keys, sizes, fits, dataset_action_stats = camera_info(cfg)
    generation = metaworld_generation(cfg) or {}
    write_weights(out, merged.state_dict)
    bundle_model, folders = write_components(out, cfg.model)
    bundle_cfg = dataclasses.replace(cfg, model=bundle_model)
    (out / CONFIG_NAME).write_text(json.dumps(lerobot_config(bundle_cfg, keys, mode, n_action_steps), indent=2))
    text = bundle_model.text_encoder
    info = {
        "format": BUNDLE_FORMAT,
        "action": {"key": ACTION_KEY, "dim": cfg.model.action_dim,
                   "bounds": action_bounds(cfg, dataset_action_stats, cfg.model.action_dim)},
        "state": {"key": STATE_KEY, "dim": cfg.model.state_dim, "metaworld": generation.get("state"),
                  "position_noise": generation.get("position_noise", 0.0)},
        "cameras": {"keys": keys, "recorded_size": sizes, "model_size": [cfg.model.height, cfg.model.width],
                    "fit": fits, "rendering": generation.get("rendering")},
        "text_encoder": {"kind": text.kind, "path": text.path, "max_length": text.max_length,
                         "weights_in_bundle": text.kind != "none"},
        "components": folders,
        "normalization": {"mode": cfg.model.normalization,
                          "has_stats": bool(merged.state_dict["normalizer.has_stats"])},
        "source": {"checkpoint": str(merged.source), "global_step": merged.global_step, "ema": merged.used_ema,
                   "run_name": cfg.name, "data": cfg.data.kind,
                   "datasets": [s.path for s in cfg.data.sources], "notes": merged.notes,
                   "components": {"text_encoder": cfg.model.text_encoder.path,
                                  "vae": cfg.model.frame_tokenizer.vae_path,
                                  "obs_encoder": cfg.model.obs_encoder.weights_path}},
    }
    judge = merged.run_dir / JUDGE_DIR if merged.run_dir else None
    if judge is not None and (judge / JUDGE_CONFIG).is_file():  # `vidact judge RUN`: planning's scorer travels along
        shutil.copytree(judge, out / JUDGE_DIR)
        info["components"]["judge"] = JUDGE_DIR
    (out / POLICY_INFO_NAME).write_text(json.dumps(info, indent=2))
    # LeRobot's processor pipelines (rename + device; normalization is inside the weights), so
    # lerobot-eval / lerobot-record load the bundle through the plugin (vidact.deploy.lerobot_plugin).
    from types import SimpleNamespace

    from vidact.deploy.lerobot_plugin.processor_vidact import save_processors

    save_processors(SimpleNamespace(device="cpu"), out)


def _check_weights(model_cfg, state: dict[str, Tensor]) -> None:
    """Build the network from the config and compare names and shapes before writing anything."""
    from vidact.models import VidAct

    expected = VidAct(model_cfg, component_weights=False).state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match its config.yaml: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise ValueError(f"checkpoint does not match its config.yaml: shape mismatch for {wrong[:5]}")
