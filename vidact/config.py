"""The run config tree: typed dataclasses, YAML fragments and recipes, dotted overrides.

    cfg = load("recipes/debug.yaml", ["model.flavor=S", "train.batch_size=4"])

A recipe is a YAML file whose optional ``include:`` list names fragments (paths relative to the
recipe, or to the repository's ``configs/`` folder) merged first, in order. Every layer is merged
into the structured schema, so an unknown or mistyped key fails with its dotted path, the file it
came from and a "did you mean". Values are validated by the dataclasses' own checks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from vidact.data.config import DataConfig
from vidact.data.info import DATA_SHAPE_KEYS, fit_model_to_data
from vidact.errors import ConfigError
from vidact.generative.sample import SamplerConfig
from vidact.generative.schedule import GenerativeConfig
from vidact.models.configuration import VidActConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
RECIPES_DIR = REPO_ROOT / "recipes"


STRATEGIES = ("auto", "ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp")
ACCELERATORS = ("auto", "cpu", "gpu")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class TrainConfig:
    steps: int = 1000
    # Wall-clock budget in minutes (None: none): training stops at train.steps or when this much
    # training time has passed, whichever comes first, and writes its final checkpoint. The time
    # is checkpointed, so a resumed run continues the same budget. The LR schedule still spans
    # train.steps: set steps to about what the budget allows.
    max_minutes: Optional[float] = None
    batch_size: int = 8  # per device and micro-batch
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    precision: str = "auto"  # "auto" = bf16-mixed where the hardware has it, else 32
    ema_decay: float = 0.999  # the ceiling; early steps use (1 + n) / (10 + n) (EMA warm-up)
    min_lr_ratio: float = 0.1  # cosine decays from lr to lr * min_lr_ratio at train.steps
    log_every: int = 10  # optimizer steps between metric rows
    checkpoint_every: int = 500  # optimizer steps between checkpoints (one is also written at the end)
    keep_last: int = 3  # step checkpoints kept in run_dir/checkpoints (best.ckpt is kept besides)
    # "auto": continue from the newest checkpoint in run_dir/checkpoints that loads | "never" | a path
    resume: str = "auto"
    max_bad_steps: int = 3  # consecutive non-finite losses (each one skipped) before the run stops
    # Distribution (vidact.lit.strategy): one of STRATEGIES; devices per node; nodes.
    strategy: str = "auto"
    accelerator: str = "auto"  # "auto": gpu when CUDA is available, else cpu
    devices: int = 1
    num_nodes: int = 1
    accumulate: int = 1  # micro-batches per optimizer step
    activation_checkpointing: bool = False  # recompute transformer blocks in backward
    compile: bool = False  # torch.compile the model's forward (the training pass; H200: 1.7-1.8x, BENCHMARKS.md)
    # Initial weights (weights only: step, optimizer and schedule start fresh): a run directory,
    # a .ckpt file / DeepSpeed checkpoint folder, or an exported bundle (folder or .safetensors).
    init_from: Optional[str] = None
    # Parameter-name prefixes of VidAct (e.g. "backbone", "state_proj") kept frozen.
    freeze: List[str] = field(default_factory=list)
    # PAD-style ramp of the video loss: generative.video_loss_weight is scaled from
    # video_loss_ramp_from (x the weight) up to 1x linearly over the first N optimizer steps (0: off).
    video_loss_ramp_steps: int = 0
    video_loss_ramp_from: float = 0.0

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every", "checkpoint_every", "max_bad_steps", "keep_last",
                    "devices", "num_nodes", "accumulate"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"train.max_minutes must be > 0 (or null for no budget), got {self.max_minutes}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy={self.strategy!r} is not one of {list(STRATEGIES)}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"train.accelerator={self.accelerator!r} is not one of {list(ACCELERATORS)}")
        if self.video_loss_ramp_steps < 0 or not 0 <= self.video_loss_ramp_from <= 1:
            raise ValueError("train.video_loss_ramp_steps must be >= 0 and train.video_loss_ramp_from in [0, 1]")
        self.freeze = list(self.freeze)


@dataclass
class LogConfig:
    wandb: str = "offline"  # one of WANDB_MODES; the run id is kept in run_dir/wandb_id
    project: str = "vidact"
    media_every: int = 0  # optimizer steps between predicted-vs-real media (0: never)
    media_samples: int = 2  # samples shown per media step
    media_sampler_steps: int = 10  # Euler steps for the media samples

    def __post_init__(self) -> None:
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"log.wandb={self.wandb!r} is not one of {list(WANDB_MODES)}")
        if self.media_every < 0 or self.media_samples < 1 or self.media_sampler_steps < 1:
            raise ValueError("log.media_every must be >= 0, log.media_samples and log.media_sampler_steps >= 1")


@dataclass
class RunConfig:
    name: str = "vidact"
    seed: int = 0
    run_dir: Optional[str] = None  # stable run directory; default runs/<name>
    model: VidActConfig = field(default_factory=VidActConfig)
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


def schema() -> DictConfig:
    return OmegaConf.structured(RunConfig)


def _suggest(base: DictConfig, full_key: str) -> str:
    parent_path, _, leaf = full_key.rpartition(".")
    try:
        parent = OmegaConf.select(base, parent_path) if parent_path else base
    except OmegaConfBaseException:
        parent = None
    if not isinstance(parent, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in parent.keys()], n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{parent_path + '.' if parent_path else ''}{close[0]}'?"
    return f"; valid keys here: {sorted(str(k) for k in parent.keys())}"


def _merge(base: DictConfig, layer: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key or str(e.key)
        raise ConfigError(f"unknown config key '{key}' (from {source}){_suggest(base, key)}") from None
    except ValidationError as e:
        raise ConfigError(f"bad value for config key '{e.full_key}' (from {source}): "
                          f"{str(e.msg).splitlines()[0]}") from None


def _resolve_include(name: str, relative_to: Path) -> Path:
    for candidate in (relative_to / name, CONFIGS_DIR / name, REPO_ROOT / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"include {name!r} (in {relative_to}) not found next to the recipe, in {CONFIGS_DIR} or in "
                      f"{REPO_ROOT}")


def _layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Any, str]]:
    """The file's includes (recursively, in order) followed by the file itself."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"include cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = OmegaConf.load(path)
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    out: list[tuple[Any, str]] = []
    for name in includes:
        out += _layers(_resolve_include(str(name), path.parent), (*seen, path))
    out.append((data, str(path)))
    return out


def load(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Recipe (plus its includes) + ``key=value`` overrides -> a validated :class:`RunConfig`.

    The model sizes a LeRobot dataset determines (``model.views``, ``state_dim``, ``action_dim``;
    ``vidact.data.info.DATA_SHAPE_KEYS``) are taken from the run's datasets when no layer sets
    them, and checked against the datasets when one does."""
    cfg = schema()
    where: dict[str, str] = {}  # data-shape key -> the layer that set it last
    if recipe is not None:
        path = Path(recipe)
        if not path.exists() and (RECIPES_DIR / path).exists():
            path = RECIPES_DIR / path
        if not path.exists() and (RECIPES_DIR / f"{path}.yaml").exists():
            path = RECIPES_DIR / f"{path}.yaml"
        for layer, source in _layers(path):
            cfg = _merge(cfg, layer, source)
            where.update(_data_shape_keys(layer, f"set in {source}"))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. model.flavor=S)")
        cfg = _override(cfg, item)
        where.update(_data_shape_keys(OmegaConf.from_dotlist([item]), f"override {item!r}"))
    run = to_object(cfg)
    fit_model_to_data(run, where)
    return run


def _data_shape_keys(layer: DictConfig, source: str) -> dict[str, str]:
    return {key: source for key in DATA_SHAPE_KEYS if OmegaConf.select(layer, key, default=None) is not None}


def _override(cfg: DictConfig, item: str) -> DictConfig:
    """One ``key=value``: merged, except that a mapping given for a free-form dict (such as
    ``generative.mode_weights={policy_fast: 1.0}``) replaces that dict rather than adding to it."""
    layer, source = OmegaConf.from_dotlist([item]), f"override {item!r}"
    key = item.split("=", 1)[0].strip()
    value = OmegaConf.select(layer, key)
    node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if not (isinstance(value, DictConfig) and isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict):
        return _merge(cfg, layer, source)
    cfg = cfg.copy()
    try:
        OmegaConf.update(cfg, key, value, merge=False)
    except ValidationError as e:
        raise ConfigError(f"bad value for config key '{e.full_key}' (from {source}): "
                          f"{str(e.msg).splitlines()[0]}") from None
    return cfg


def to_object(cfg: DictConfig) -> RunConfig:
    try:
        return OmegaConf.to_object(cfg)  # runs every dataclass's validation
    except (ValueError, KeyError, TypeError) as e:  # a dataclass's own validation
        raise ConfigError(str(e)) from None
    except OmegaConfBaseException as e:
        cause = e.__cause__ or e
        raise ConfigError(str(cause).splitlines()[0]) from None


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(text: str) -> RunConfig:
    return to_object(_merge(schema(), OmegaConf.create(text), "saved config"))
