"""Data configuration (plain dataclasses; ``vidact.config`` wraps them into the typed run config).

Only types omegaconf structured configs accept (scalars, Optional, lists, nested dataclasses).
Every error names the key, e.g. ``data.sources[1].weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

DATA_KINDS = ("fake", "sliding_square", "lerobot", "webvideo", "mixture")
SOURCE_KINDS = ("lerobot", "webvideo")
READERS = ("vidact", "lerobot")
FIT_MODES = ("resize", "center_crop", "random_crop")
STATS_SOURCES = ("exact", "lerobot", "file")


@dataclass
class SourceConfig:
    """One dataset in the run: a LeRobot dataset folder or a web-video manifest / shard folder."""

    kind: str = "lerobot"  # one of SOURCE_KINDS
    path: str = ""  # LeRobot root | manifest .jsonl/.csv | .tar shard | folder of .tar shards
    weight: float = 1.0  # relative sampling weight in a mixture
    name: Optional[str] = None  # label in logs and batch.source; default: the folder/file name
    # lerobot
    repo_id: Optional[str] = None
    camera_keys: List[str] = field(default_factory=list)  # empty: all of the dataset's cameras, in its order
    state_key: str = "observation.state"
    action_key: str = "action"
    episodes: Optional[List[int]] = None
    # Only the windows whose last observed step is among each episode's first N steps (a second
    # source over the same data with this set oversamples episode starts, where a rollout begins).
    first_steps: Optional[int] = None
    # The training modes this source's samples rehearse (generative.mode_weights restricted to
    # them; empty: every mode of the recipe). E.g. [forward_dynamics] for rollouts of weak or
    # failing policies: a world model learns what their actions do, the policy never imitates them.
    modes: List[str] = field(default_factory=list)
    # webvideo
    fps: float = 10.0  # clips are resampled to this rate before future_frame_stride spacing
    fit: str = ""  # one of FIT_MODES; empty: "resize" for lerobot, "center_crop" for webvideo
    # lerobot: a fit mode per camera, overriding ``fit`` (e.g. {observation.images.wrist: center_crop});
    # each camera is fitted to the model's frame size on its own, whatever its resolution.
    camera_fit: Dict[str, str] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"{key}.kind={self.kind!r} is not one of {list(SOURCE_KINDS)}")
        if not self.path:
            raise ValueError(f"{key}.path is required (a {'LeRobot dataset folder' if self.kind == 'lerobot' else 'manifest or tar shards'})")
        if not self.weight > 0:
            raise ValueError(f"{key}.weight must be > 0, got {self.weight}")
        if self.fps <= 0:
            raise ValueError(f"{key}.fps must be > 0, got {self.fps}")
        if self.fit and self.fit not in FIT_MODES:
            raise ValueError(f"{key}.fit={self.fit!r} is not one of {list(FIT_MODES)}")
        for camera, mode in self.camera_fit.items():
            if mode not in FIT_MODES:
                raise ValueError(f"{key}.camera_fit[{camera!r}]={mode!r} is not one of {list(FIT_MODES)}")
        if self.first_steps is not None and (self.kind != "lerobot" or self.first_steps < 1):
            raise ValueError(f"{key}.first_steps={self.first_steps}: must be >= 1, on a LeRobot source")
        from vidact.generative.schedule import Mode

        unknown = [m for m in self.modes if m not in {x.value for x in Mode}]
        if unknown:
            raise ValueError(f"{key}.modes: {unknown} are not modes; modes are {[x.value for x in Mode]}")
        if self.camera_fit and self.kind != "lerobot":
            raise ValueError(f"{key}.camera_fit is for LeRobot datasets (cameras); use {key}.fit for web video")

    @property
    def fit_mode(self) -> str:
        return self.fit or ("resize" if self.kind == "lerobot" else "center_crop")


@dataclass
class DataConfig:
    # "fake" (random batches of the model's shapes) | "sliding_square" (learnable toy task) |
    # "lerobot" / "webvideo" (one source) | "mixture" (weighted sources)
    kind: str = "fake"
    num_workers: int = 0
    sources: List[SourceConfig] = field(default_factory=list)
    seed: int = 0
    reader: str = "vidact"  # robot windows: vidact's reader, or LeRobot's __getitem__ (reference)
    # Normalization stats: computed exactly from the robot datasets' state/action columns
    # ("exact"), LeRobot's meta/stats.json ("lerobot": its q01/q99 come from coarse histograms and
    # can be far off on small or bimodal data, e.g. a +-1 gripper), or read from stats_path ("file").
    stats: str = "exact"
    stats_path: Optional[str] = None
    cache_dir: Optional[str] = None  # frame-latent / text-embedding cache (vidact.data.cache)
    log_every: int = 100  # batches between per-source count log lines

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data.kind={self.kind!r} is not one of {list(DATA_KINDS)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.reader not in READERS:
            raise ValueError(f"data.reader={self.reader!r} is not one of {list(READERS)}")
        if self.stats not in STATS_SOURCES:
            raise ValueError(f"data.stats={self.stats!r} is not one of {list(STATS_SOURCES)}")
        if self.stats == "file" and not self.stats_path:
            raise ValueError("data.stats_path is required when data.stats='file'")
        self.sources = [SourceConfig(**s) if isinstance(s, dict) else s for s in self.sources]
        for i, source in enumerate(self.sources):
            source.validate(f"data.sources[{i}]")
        if self.kind in ("lerobot", "webvideo"):
            if len(self.sources) != 1 or self.sources[0].kind != self.kind:
                raise ValueError(f"data.kind={self.kind!r} needs exactly one data.sources entry of kind "
                                 f"{self.kind!r}, got {[s.kind for s in self.sources]}")
        if self.kind == "mixture" and not self.sources:
            raise ValueError("data.kind='mixture' needs at least one entry in data.sources")
        if self.kind in ("fake", "sliding_square") and self.sources:
            raise ValueError(f"data.sources is set but data.kind={self.kind!r} does not read datasets; "
                             "use data.kind='mixture' (or 'lerobot' / 'webvideo')")
        if self.log_every < 1:
            raise ValueError(f"data.log_every must be >= 1, got {self.log_every}")

    @property
    def reads_datasets(self) -> bool:
        return self.kind in ("lerobot", "webvideo", "mixture")
