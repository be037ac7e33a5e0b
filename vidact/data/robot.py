"""Robot data: LeRobotDataset v3.0 windows shaped for the model, as per-sample batch dicts.

The windows come from the model config, expressed as LeRobot ``delta_timestamps``:
- observed frames and state: ``history`` steps ending at t, spaced ``future_frame_stride`` apart;
- future frames: ``future_frames`` steps after t, same spacing (one uniformly spaced clip, which
  is what the video objective and web-video clips share);
- actions: ``chunk_length`` consecutive control steps starting at t.

LeRobot's own ``LeRobotDataset`` is constructed with those ``delta_timestamps`` and provides the
metadata, the episode table and the parquet columns. Two readers produce the same samples:
- ``reader="vidact"`` (default): columns held as numpy arrays, window indices computed with
  integer arithmetic, one torchcodec ``get_frames_at`` per camera with a per-process decoder
  cache. It avoids LeRobot's per-item arrow row conversions and episode-table lookups.
- ``reader="lerobot"``: LeRobot's ``__getitem__``, converted. The reference the fast reader is
  tested against and benchmarked against (``bench/bench_loader.py``).

Cameras may differ in resolution and aspect ratio: each one is fitted to the model's frame size on
its own (``fit``, and ``camera_fit`` for cameras fitted otherwise) before the views are stacked. The dataset must hold
what the model config reads (``vidact.data.info.check_source``); a recipe that leaves the sizes
unset gets them from the data (``vidact.data.info.fit_model_to_data``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from vidact.data.info import ENV_STATE_KEY, DatasetInfo, check_source
from vidact.data.transforms import fit_frames
from vidact.models.configuration import VidActConfig
from vidact.types import BatchKey

log = logging.getLogger(__name__)

READERS = ("vidact", "lerobot")
SUCCESS_KEY = "next.success"


def window_offsets(cfg: VidActConfig) -> dict[str, list[int]]:
    """Frame offsets (in control steps, relative to t) of each window the model needs."""
    s = cfg.future_frame_stride
    return {
        "history": [-(cfg.history - 1 - i) * s for i in range(cfg.history)],
        "future": [(j + 1) * s for j in range(cfg.future_frames)],
        "actions": list(range(cfg.chunk_length)),
    }


def delta_timestamps(cfg: VidActConfig, fps: int, camera_keys: list[str], state_key: str,
                     action_key: str) -> dict[str, list[float]]:
    """LeRobot ``delta_timestamps`` for ``cfg``: cameras get history + future, state history."""
    o = window_offsets(cfg)
    return {
        **{key: [d / fps for d in o["history"] + o["future"]] for key in camera_keys},
        state_key: [d / fps for d in o["history"]],
        action_key: [d / fps for d in o["actions"]],
    }


def lerobot_worker_init_fn(worker_id: int) -> None:
    """Give each DataLoader worker a fresh LeRobot decoder cache: LeRobot (0.4.4, 0.6.1) keeps one
    module-global cache, and decoders inherited through fork fail ("Could not push packet")."""
    from lerobot.datasets import video_utils

    video_utils._default_decoder_cache = video_utils.VideoDecoderCache()


class RobotDataset(Dataset):
    """A LeRobot v3.0 dataset on disk, as windows for ``model_cfg``; yields batch dicts.

    ``fit``: how frames reach the model's size (``vidact.data.transforms.FIT_MODES``);
    ``camera_fit``: ``{camera key: mode}`` for cameras fitted otherwise."""

    def __init__(self, root: str | Path, model_cfg: VidActConfig, *, repo_id: str | None = None,
                 camera_keys: list[str] | None = None, state_key: str = "observation.state",
                 action_key: str = "action", episodes: list[int] | None = None, reader: str = "vidact",
                 fit: str = "resize", camera_fit: Mapping[str, str] | None = None, name: str | None = None,
                 tolerance_s: float = 1e-4, first_steps: int | None = None):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

        if reader not in READERS:
            raise ValueError(f"data.reader={reader!r} is not one of {list(READERS)}")
        root = Path(root)
        info = DatasetInfo.read(root)
        repo_id = repo_id or f"local/{root.name}"
        self.cfg, self.reader, self.name = model_cfg, reader, name or root.name
        self.state_key, self.action_key = state_key, action_key
        self.camera_keys = list(camera_keys) if camera_keys else info.camera_keys
        check_source(model_cfg, info, self.camera_keys, state_key, action_key, camera_fit=camera_fit)
        self.camera_fit = {k: (camera_fit or {}).get(k, fit) for k in self.camera_keys}  # each camera's mode
        meta = LeRobotDatasetMetadata(repo_id, root=root)
        self.delta_timestamps = delta_timestamps(model_cfg, meta.fps, self.camera_keys, state_key, action_key)
        self.lerobot = LeRobotDataset(repo_id, root=root, episodes=episodes, delta_timestamps=self.delta_timestamps,
                                      tolerance_s=tolerance_s, video_backend="torchcodec")
        self.meta, self.fps, self.tolerance_s = self.lerobot.meta, meta.fps, tolerance_s
        self._offsets = {k: np.asarray(v, dtype=np.int64) for k, v in window_offsets(model_cfg).items()}
        self._load_columns()
        # Item i is the window at row self._rows[i] (every row, or the episodes' first steps only).
        self._rows = np.arange(len(self._episode))
        if first_steps is not None:
            self._rows = np.concatenate([np.arange(start, min(end, start + first_steps))
                                         for start, end in sorted(self._ep_rows.values())])
        self._decoders: dict[str, Any] = {}
        self._decoders_pid = os.getpid()

    def _load_columns(self) -> None:
        """Hold the small per-frame columns as numpy: state/action/indices are a few floats per
        frame (a million-frame dataset is tens of MB), and numpy indexing is ~100x cheaper than
        LeRobot's per-item arrow row conversion."""
        columns = [self.state_key, self.action_key, "episode_index", "index", "timestamp", "task_index"]
        table = self.lerobot.hf_dataset.with_format("numpy", columns=columns)[:]
        self._state = np.asarray(np.stack(table[self.state_key]) if table[self.state_key].dtype == object
                                 else table[self.state_key], dtype=np.float32).reshape(len(table["index"]), -1)
        self._action = np.asarray(np.stack(table[self.action_key]) if table[self.action_key].dtype == object
                                  else table[self.action_key], dtype=np.float32).reshape(len(table["index"]), -1)
        self._episode = table["episode_index"].astype(np.int64)
        self._timestamp = table["timestamp"].astype(np.float64)
        self._task_index = table["task_index"].astype(np.int64)
        # MetaWorld data (generated or saved rollouts) flags each step's success: the judge's labels.
        self._success = None
        if SUCCESS_KEY in self.lerobot.hf_dataset.column_names:
            success = self.lerobot.hf_dataset.with_format("numpy", columns=[SUCCESS_KEY])[:][SUCCESS_KEY]
            self._success = np.asarray(success, dtype=bool).reshape(len(self._episode), -1)[:, 0]
        self._env_state = None  # the auxiliary head's target (model.env_state_dim), at each step
        if self.cfg.env_state_dim:
            env = self.lerobot.hf_dataset.with_format("numpy", columns=[ENV_STATE_KEY])[:][ENV_STATE_KEY]
            self._env_state = np.asarray(np.stack(env) if env.dtype == object else env,
                                         dtype=np.float32).reshape(len(self._episode), -1)
        # Episodes are contiguous in the (possibly filtered) table: store each one's span in rows.
        episodes = self.meta.episodes
        self._ep_rows: dict[int, tuple[int, int]] = {}
        self._ep_from_ts: dict[int, dict[str, float]] = {}
        self._ep_video: dict[int, dict[str, Path]] = {}
        starts = np.flatnonzero(np.r_[True, self._episode[1:] != self._episode[:-1]])
        ends = np.r_[starts[1:], len(self._episode)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            ep = int(self._episode[start])
            row = episodes[ep]
            if end - start != row["dataset_to_index"] - row["dataset_from_index"]:
                raise ValueError(f"episode {ep} has {end - start} frames in data/ but the episode table says "
                                 f"{row['dataset_to_index'] - row['dataset_from_index']}: the dataset is malformed")
            self._ep_rows[ep] = (start, end)
            self._ep_from_ts[ep] = {k: float(row[f"videos/{k}/from_timestamp"]) for k in self.camera_keys}
            self._ep_video[ep] = {k: self.lerobot.root / self.meta.get_video_file_path(ep, k)
                                  for k in self.camera_keys}
        self._tasks = {int(i): str(name) for name, i in zip(self.meta.tasks.index, self.meta.tasks["task_index"])}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, idx: int) -> int:
        """The table row of item ``idx`` (its window's last observed step)."""
        return int(self._rows[idx])

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self.reader == "lerobot":
            return self.from_lerobot_item(self.lerobot[self.row(idx)])
        return self._fast_item(self.row(idx))

    # -- the fast reader ---------------------------------------------------------------------

    def _window(self, idx: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, end = self._ep_rows[int(self._episode[idx])]
        rows = idx + offsets
        # LeRobot's convention: out-of-episode steps repeat the nearest edge frame and are flagged.
        return np.clip(rows, start, end - 1), (rows < start) | (rows >= end)

    def _fast_item(self, idx: int) -> dict[str, Any]:
        o = self._offsets
        hist_rows, hist_pad = self._window(idx, o["history"])
        act_rows, act_pad = self._window(idx, o["actions"])
        frame_rows, _ = self._window(idx, np.concatenate([o["history"], o["future"]]))
        ep = int(self._episode[idx])
        views = [self._decode(ep, key, self._timestamp[frame_rows]) for key in self.camera_keys]  # V x [T,C,h,w]
        sample = self._sample(views, torch.from_numpy(self._state[hist_rows]), torch.from_numpy(self._action[act_rows]),
                              torch.from_numpy(act_pad), self._tasks[int(self._task_index[idx])])
        sample[BatchKey.OBS_IS_PAD.value] = torch.from_numpy(hist_pad)
        if self._env_state is not None:
            sample[BatchKey.ENV_STATE.value] = torch.from_numpy(self._env_state[idx])
        if self.cfg.future_frames:
            _, fut_pad = self._window(idx, o["future"])
            sample[BatchKey.FUTURE_IS_PAD.value] = torch.from_numpy(fut_pad)
        return sample

    def _decoder(self, path: Path):
        # Decoders hold file handles and codec state that must not cross a fork: a worker that
        # inherits the parent's cache starts its own (the failure LeRobot's global cache has).
        if self._decoders_pid != os.getpid():
            self._decoders, self._decoders_pid = {}, os.getpid()
        key = str(path)
        if key not in self._decoders:
            from torchcodec.decoders import VideoDecoder

            self._decoders[key] = VideoDecoder(key, seek_mode="exact", dimension_order="NCHW")
        return self._decoders[key]

    def _decode(self, ep: int, key: str, timestamps: np.ndarray) -> torch.Tensor:
        """Frames at episode-relative ``timestamps`` -> uint8 [T,C,H,W], checked like LeRobot does."""
        decoder = self._decoder(self._ep_video[ep][key])
        query = self._ep_from_ts[ep][key] + timestamps
        fps = decoder.metadata.average_fps
        # Same index rule as LeRobot's torchcodec path, so both readers return identical frames.
        indices = np.rint(query * fps).astype(np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)
        batch = decoder.get_frames_at(indices=unique.tolist())
        err = np.abs(batch.pts_seconds.numpy()[inverse] - query)
        if (err >= self.tolerance_s).any():
            raise ValueError(f"video {self._ep_video[ep][key]}: frames decoded {err.max():.4f}s away from the "
                             f"requested timestamps (tolerance {self.tolerance_s}s); the video and the parquet "
                             "timestamps disagree")
        return batch.data[torch.from_numpy(inverse)] if len(unique) < len(indices) else batch.data

    # -- shared by both readers --------------------------------------------------------------

    def fit_views(self, views: list[torch.Tensor]) -> torch.Tensor:
        """One [T,C,h,w] per camera, each at its own resolution -> [T,V,C,H,W] float in [0,1]."""
        c = self.cfg
        return torch.stack([fit_frames(v, c.height, c.width, self.camera_fit[key])
                            for key, v in zip(self.camera_keys, views)], dim=1)

    def _sample(self, views: list[torch.Tensor], state: torch.Tensor, actions: torch.Tensor,
                action_is_pad: torch.Tensor, text: str) -> dict[str, Any]:
        """views: one [Th+Tf,C,h,w] per camera, at any resolution -> the batch dict for one sample."""
        frames = self.fit_views(views)  # [Th+Tf,V,C,H,W]
        Th = self.cfg.history
        sample = {
            BatchKey.OBS_FRAMES.value: frames[:Th],
            BatchKey.STATE.value: state.float().reshape(Th, -1),
            BatchKey.ACTIONS.value: actions.float().reshape(self.cfg.chunk_length, -1),
            BatchKey.ACTION_IS_PAD.value: action_is_pad.bool(),
            BatchKey.HAS_ACTIONS.value: True,
            BatchKey.TEXT.value: text,
            BatchKey.SOURCE.value: self.name,
        }
        if self.cfg.future_frames:
            sample[BatchKey.FUTURE_FRAMES.value] = frames[Th:]
        return sample

    def from_lerobot_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Convert one ``LeRobotDataset.__getitem__`` result (with our delta_timestamps)."""
        views = [item[k] for k in self.camera_keys]  # V x [Th+Tf,C,h,w] float
        sample = self._sample(views, item[self.state_key], item[self.action_key], item[f"{self.action_key}_is_pad"],
                              item["task"])
        pad = item[f"{self.camera_keys[0]}_is_pad"]
        sample[BatchKey.OBS_IS_PAD.value] = pad[: self.cfg.history].bool()
        if self.cfg.env_state_dim:  # no delta_timestamps for it: LeRobot gives the current step's
            sample[BatchKey.ENV_STATE.value] = item[ENV_STATE_KEY].float().reshape(-1)
        if self.cfg.future_frames:
            sample[BatchKey.FUTURE_IS_PAD.value] = pad[self.cfg.history:].bool()
        return sample

    def worker_init_fn(self, worker_id: int) -> None:
        if self.reader == "lerobot":
            lerobot_worker_init_fn(worker_id)

    @property
    def episode_spans(self) -> dict[int, tuple[int, int]]:
        """Each episode's table rows [start, end)."""
        return dict(self._ep_rows)

    @property
    def episode_lengths(self) -> dict[int, int]:
        return {ep: end - start for ep, (start, end) in self._ep_rows.items()}

    @property
    def window_episodes(self) -> np.ndarray:
        """[len(self)] the episode of every window (item ``i``)."""
        return self._episode[self._rows]

    def episode(self, ep: int) -> dict[str, Any]:
        """One whole episode at the model's resolution: ``frames`` [T,V,C,H,W] float in [0,1],
        ``state`` [T,S], ``action`` [T,A], ``text`` (for world-model rollouts, ``vidact imagine``),
        ``success`` [T] bool where the dataset has a ``next.success`` column, and ``env_state`` [T,E]
        where the model is configured with ``env_state_dim``."""
        if ep not in self._ep_rows:
            raise KeyError(f"dataset {self.meta.root} has no episode {ep}; it has episodes "
                           f"{min(self._ep_rows)}..{max(self._ep_rows)} ({len(self._ep_rows)} in all)")
        start, end = self._ep_rows[ep]
        rows = np.arange(start, end)
        views = [self._decode(ep, key, self._timestamp[rows]) for key in self.camera_keys]  # V x [T,C,h,w] uint8
        data = {"frames": self.fit_views(views),
                "state": torch.from_numpy(self._state[rows]), "action": torch.from_numpy(self._action[rows]),
                "text": self._tasks[int(self._task_index[start])]}
        if self._success is not None:
            data["success"] = torch.from_numpy(self._success[rows])
        if self._env_state is not None:
            data["env_state"] = torch.from_numpy(self._env_state[rows])
        return data

    @property
    def has_success(self) -> bool:
        return self._success is not None

    def trajectories(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(state [T,S], action [T,A]) of every episode, in episode order, without decoding frames."""
        return [(torch.from_numpy(self._state[start:end]), torch.from_numpy(self._action[start:end]))
                for _, (start, end) in sorted(self._ep_rows.items())]

    def columns(self) -> dict[str, np.ndarray]:
        """The raw state and action columns (for statistics)."""
        return {"state": self._state, "action": self._action}
