"""What a LeRobot dataset's ``meta/info.json`` says about its shapes, and the model fitted to it.

A recipe may leave ``model.views``, ``model.state_dim`` and ``model.action_dim`` unset (and a
source's ``camera_keys`` empty): :func:`fit_model_to_data` takes them from the run's LeRobot
datasets, so any LeRobot v3 dataset trains with only its path given. A value the recipe does set
is checked against every LeRobot source, and a disagreement is a :class:`ConfigError` naming the
setting (and where it was set) and the dataset. The data reader runs the same check
(:func:`check_source`), so a dataset handed to it directly fails the same way.

Camera resolutions are not part of this: every camera is fitted to the model's frame size on its
own (``vidact.data.robot``), whatever its resolution and aspect ratio.

Plain json and dataclasses: ``vidact.config`` calls this while loading a recipe.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from vidact.errors import ConfigError

# LeRobot's name for privileged scene state (object poses, keypoints): vidact reads it only as the
# auxiliary head's target (model.env_state_dim), never as a policy input.
ENV_STATE_KEY = "observation.environment_state"

# Model fields a recipe may leave to the data; vidact.config.load records where each was set.
DATA_SHAPE_KEYS = ("model.views", "model.state_dim", "model.action_dim")
CAMERA_DTYPES = ("video", "image")


@dataclass(frozen=True)
class DatasetInfo:
    """The parts of ``meta/info.json`` vidact reads."""

    root: Path
    fps: float
    features: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, root: str | Path) -> "DatasetInfo":
        root = Path(root)
        path = root / "meta" / "info.json"
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a LeRobot dataset: meta/info.json is missing")
        info = json.loads(path.read_text())
        return cls(root, float(info["fps"]), dict(info["features"]))

    @property
    def camera_keys(self) -> list[str]:
        """Every camera, in the dataset's order (LeRobot's ``meta.camera_keys``)."""
        return [k for k, f in self.features.items() if f.get("dtype") in CAMERA_DTYPES]

    def camera_size(self, key: str) -> tuple[int, int, int]:
        """(height, width, channels) of a camera, whichever order its shape is stored in."""
        feature = self.features[key]
        shape = [int(x) for x in feature["shape"]]
        names = [str(n).lower() for n in (feature.get("names") or [])]
        if len(shape) == 3 and len(names) == 3 and names[0] in ("channels", "channel", "c"):
            return shape[1], shape[2], shape[0]  # stored [C,H,W]
        return shape[0], shape[1], shape[2] if len(shape) > 2 else 1

    def dims(self, key: str) -> int:
        """Values per frame of a state or action feature."""
        return int(math.prod(int(x) for x in self.features[key]["shape"]))


def check_source(model, info: DatasetInfo, camera_keys: list[str], state_key: str, action_key: str, *,
                 camera_fit: Mapping[str, str] | None = None, where: Mapping[str, str] | None = None,
                 source: str = "the dataset") -> None:
    """Raise ``ConfigError`` unless the dataset at ``info.root`` has the features ``model`` (a
    ``VidActConfig``) reads, with its views, state and action sizes and channels. ``where`` names
    where a model setting came from (a recipe file, an override, another dataset)."""
    where = where or {}

    def setting(name: str) -> str:
        value = getattr(model, name.removeprefix("model."))
        return f"{name}={value}" + (f" ({where[name]})" if name in where else "")

    feats = info.features
    missing = [k for k in (state_key, action_key, *camera_keys) if k not in feats]
    if missing:
        raise ConfigError(f"dataset {info.root} has no feature(s) {missing} (set {source}.camera_keys / state_key / "
                          f"action_key); it has {sorted(feats)}")
    not_cameras = [k for k in camera_keys if feats[k].get("dtype") not in CAMERA_DTYPES]
    if not_cameras:
        raise ConfigError(f"{source}.camera_keys {not_cameras} are not cameras in dataset {info.root}; its cameras "
                          f"are {info.camera_keys}")
    if len(camera_keys) != model.views:
        raise ConfigError(f"{setting('model.views')} but dataset {info.root} gives {len(camera_keys)} camera(s) "
                          f"{camera_keys}; choose {model.views} with {source}.camera_keys, or set model.views={len(camera_keys)} "
                          "(unset: every camera)")
    for key, name in ((state_key, "model.state_dim"), (action_key, "model.action_dim")):
        got = info.dims(key)
        if got != getattr(model, name.removeprefix("model.")):
            raise ConfigError(f"{setting(name)} but dataset {info.root} has '{key}' of {got} dims; set {name}={got} "
                              "(unset: the data's)")
    if model.env_state_dim:
        if ENV_STATE_KEY not in feats:
            raise ConfigError(f"{setting('model.env_state_dim')} but dataset {info.root} has no '{ENV_STATE_KEY}' (the "
                              "scene-state target; `vidact data metaworld --env-state` writes it), or set "
                              "model.env_state_dim=0")
        got = info.dims(ENV_STATE_KEY)
        if got != model.env_state_dim:
            raise ConfigError(f"{setting('model.env_state_dim')} but dataset {info.root} has '{ENV_STATE_KEY}' of {got} "
                              f"dims; set model.env_state_dim={got}")
    for key in camera_keys:
        channels = info.camera_size(key)[2]
        if channels != model.channels:
            raise ConfigError(f"{setting('model.channels')} but camera '{key}' of dataset {info.root} has {channels} "
                              "channel(s)")
    stray = sorted(set(camera_fit or {}) - set(camera_keys))
    if stray:
        raise ConfigError(f"{source}.camera_fit names {stray}, not among the cameras read {camera_keys}")
    not_video = [k for k in camera_keys if feats[k]["dtype"] != "video"]
    if not_video:
        raise ConfigError(f"camera feature(s) {not_video} of dataset {info.root} are stored as images, not video; "
                          "vidact reads video-encoded LeRobot datasets")


def fit_model_to_data(cfg, where: dict[str, str]) -> None:
    """Fill the model sizes ``cfg`` (a ``RunConfig``) leaves unset from its LeRobot sources, and
    each such source's empty ``camera_keys`` with all of its cameras; then check every source.

    ``where`` maps the :data:`DATA_SHAPE_KEYS` the config sets to where they were set. The first
    LeRobot source decides what is unset; later ones must agree. A source whose folder holds no
    ``meta/info.json`` is left alone: the data reader reports it when training starts.
    """
    where = dict(where)
    sources = [(i, s) for i, s in enumerate(cfg.data.sources) if s.kind == "lerobot"]
    for i, source in sources:
        try:
            info = DatasetInfo.read(source.path)
        except FileNotFoundError:
            continue
        if not source.camera_keys:
            source.camera_keys = info.camera_keys
        found = {"model.views": len(source.camera_keys)}
        for key, feature in (("model.state_dim", source.state_key), ("model.action_dim", source.action_key)):
            if feature in info.features:
                found[key] = info.dims(feature)
        for key, value in found.items():
            if key not in where:
                setattr(cfg.model, key.removeprefix("model."), value)
                where[key] = f"from dataset {info.root}"
        check_source(cfg.model, info, list(source.camera_keys), source.state_key, source.action_key,
                     camera_fit=source.camera_fit, where=where, source=f"data.sources[{i}]")
    try:
        cfg.model.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
