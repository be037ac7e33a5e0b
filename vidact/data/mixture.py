"""Weighted mixtures of data sources with resumable, rank-sharded sampling, and the one function
that turns a ``DataConfig`` into a DataLoader.

Sampling is a pure function of (seed, rank, n) for the n-th sample a rank draws:
- which source: blocks of ``BLOCK`` draws from ``default_rng((seed, rank, block))`` with the
  mixture weights;
- which item: the k-th draw from source s on rank r takes position ``k * world_size + r`` of a
  seeded permutation of s (one permutation per pass over s, shared by all ranks), so ranks read
  disjoint shards of every source and each pass visits every item once.
The sampler's state is therefore one number, the count of samples consumed; resuming replays the
source choices (cheap integer work) and continues exactly where the run stopped. The sampler runs
in the main process and hands indices to the workers, so the stream does not depend on
``num_workers``.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
from typing import Any, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from vidact.types import Batch, BatchKey

log = logging.getLogger(__name__)

BLOCK = 4096


class MixtureDataset(Dataset):
    """Sources side by side; indexed by ``(source, item, epoch)`` tuples from :class:`MixtureSampler`.

    Every sample carries ``skipped_files`` (unreadable files its source skipped to produce it), and
    with ``frame_keys`` on, a stable name for each of its frames (the latent cache's keys).
    """

    def __init__(self, sources: list[Dataset], names: list[str], *, frame_keys: bool = False,
                 modes: list[tuple[str, ...] | None] | None = None):
        if not sources or len(sources) != len(names):
            raise ValueError("a mixture needs one name per source and at least one source")
        empty = [n for s, n in zip(sources, names) if len(s) == 0]
        if empty:
            raise ValueError(f"mixture sources {empty} are empty")
        self.sources, self.names, self.frame_keys = sources, names, frame_keys
        # Each source's allowed training modes; samples carry them only when some source restricts.
        self.modes = modes if modes and any(m is not None for m in modes) else None
        for s in sources:
            if hasattr(s, "frame_keys"):
                s.frame_keys = frame_keys

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        source, item, epoch = key
        dataset = self.sources[source]
        if hasattr(dataset, "set_epoch"):  # web clips re-sample their start time each pass
            dataset.set_epoch(epoch)
        sample = dataset[item]
        skipped = getattr(dataset, "last_skipped", [])  # files this worker skipped to produce the sample
        sample[BatchKey.SKIPPED_FILES.value] = [f"{self.names[source]}:{f}" for f in skipped]
        if self.modes is not None:
            sample[BatchKey.MODES.value] = self.modes[source]
        if self.frame_keys and BatchKey.FRAME_KEYS.value not in sample:
            sample[BatchKey.FRAME_KEYS.value] = robot_frame_keys(dataset, item)
        return sample

    def worker_init_fn(self, worker_id: int) -> None:
        # A terminal's Ctrl-C reaches the workers too; it is the main process's to answer (it
        # checkpoints, vidact.lit.signals). A worker that took it would leave its loop, and the
        # main process would fail on the batch it needs to reach the step boundary.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in self.sources:
            if hasattr(s, "worker_init_fn"):
                s.worker_init_fn(worker_id)


class MixtureSampler(Sampler):
    """Yields ``(source, item, epoch)``; see the module docstring. ``len`` is one nominal epoch."""

    def __init__(self, sizes: list[int], weights: list[float], *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, names: list[str] | None = None, samples_per_epoch: int | None = None):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"mixture: {len(sizes)} sources but {len(weights)} weights")
        if any(w <= 0 for w in weights):
            raise ValueError(f"mixture weights must be > 0, got {weights}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.sizes, self.seed, self.rank, self.world_size = list(sizes), seed, rank, world_size
        self.p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.names = names or [str(i) for i in range(len(sizes))]
        self.samples_per_epoch = samples_per_epoch or max(1, sum(sizes) // world_size)
        self.consumed = 0  # samples handed out so far (the whole resumable state)
        self._counts = np.zeros(len(sizes), dtype=np.int64)  # per-source draws so far
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _choices(self, block: int) -> np.ndarray:
        return np.random.default_rng((self.seed, self.rank, block)).choice(len(self.sizes), size=BLOCK, p=self.p)

    def _item(self, source: int, k: int) -> tuple[int, int]:
        position = k * self.world_size + self.rank
        epoch, offset = divmod(position, self.sizes[source])
        perm = self._perms.get((source, epoch))
        if perm is None:
            # keep only the current pass's permutation per source: memory stays O(source size)
            self._perms = {key: v for key, v in self._perms.items() if key[0] != source}
            perm = np.random.default_rng((self.seed, 1_000_003, source, epoch)).permutation(self.sizes[source])
            self._perms[(source, epoch)] = perm
        return int(perm[offset]), epoch

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        block_id, block = -1, None
        for _ in range(self.samples_per_epoch):
            n = self.consumed
            if n // BLOCK != block_id:
                block_id = n // BLOCK
                block = self._choices(block_id)
            source = int(block[n % BLOCK])
            item, epoch = self._item(source, int(self._counts[source]))
            self._counts[source] += 1
            self.consumed += 1
            yield source, item, epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def counts(self) -> dict[str, int]:
        return {name: int(c) for name, c in zip(self.names, self._counts)}

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """``consumed``: samples the training loop actually used (a DataLoader prefetches ahead of
        it); default: all handed out."""
        return {"consumed": self.consumed if consumed is None else int(consumed), "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        n = int(state["consumed"])
        counts = np.zeros(len(self.sizes), dtype=np.int64)
        full, rest = divmod(n, BLOCK)
        for block in range(full):  # replay the source choices: integer work, no data is read
            counts += np.bincount(self._choices(block), minlength=len(self.sizes))
        if rest:
            counts += np.bincount(self._choices(full)[:rest], minlength=len(self.sizes))
        self.consumed, self._counts = n, counts


class SourceCounter:
    """Counts samples per ``batch.source`` and logs the running totals every ``every`` batches."""

    def __init__(self, every: int = 100):
        self.every, self.batches, self.totals = every, 0, Counter()

    def update(self, batch: Batch) -> None:
        self.totals.update(batch.source or ["unknown"] * batch.batch_size)
        self.batches += 1
        if self.batches % self.every == 0:
            total = sum(self.totals.values())
            log.info("data sources after %d batches: %s", self.batches,
                     ", ".join(f"{k}={v} ({v / total:.0%})" for k, v in sorted(self.totals.items())))


def robot_frame_keys(dataset, idx: int) -> list[list[str]]:
    """[Th+Tf][V] names of a robot window's frames: dataset, episode, frame index in the episode
    (after LeRobot's edge clamping, so padded steps name the frame they repeat), camera, fit."""
    from vidact.data.robot import RobotDataset

    if not isinstance(dataset, RobotDataset):
        raise TypeError(f"cannot name the frames of a {type(dataset).__name__} for the latent cache")
    o, row = dataset._offsets, dataset.row(idx)
    rows, _ = dataset._window(row, np.concatenate([o["history"], o["future"]]))
    ep = int(dataset._episode[row])
    start = dataset._ep_rows[ep][0]
    root = str(dataset.meta.root)
    return [[f"robot|{dataset.name}|{root}|ep={ep}|frame={int(r) - start}|{cam}|{dataset.camera_fit[cam]}"
             for cam in dataset.camera_keys] for r in rows.tolist()]


class SkippedFiles:
    """Unreadable files skipped by the loaders, aggregated over dataloader workers (each batch
    names the files skipped to produce it) and over ranks (:meth:`sync` gathers the names)."""

    def __init__(self):
        self.local: set[str] = set()  # seen by this rank
        self.all: set[str] = set()  # every rank's, as of the last sync

    def update(self, batch: Batch) -> list[str]:
        """Record the batch's skipped files; returns those new to this rank."""
        new = sorted({f for files in (batch.skipped_files or []) for f in files} - self.local)
        self.local.update(new)
        for f in new:
            log.warning("data: skipped unreadable file %s", f)
        return new

    def sync(self) -> int:
        """Union over ranks (a collective: every rank must call it); returns the total count."""
        import torch.distributed as dist

        files = set(self.local)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, sorted(self.local))
            files = {f for part in gathered for f in part}
        self.all |= files
        return len(self.all)

    def summary(self, limit: int = 20) -> str | None:
        """A warning line listing the skipped files (after :meth:`sync`), or None if there were none."""
        if not self.all:
            return None
        names = sorted(self.all)
        more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
        return f"{len(names)} unreadable file(s) skipped by the data loaders: {', '.join(names[:limit])}{more}"


def build_sources(data_cfg, model_cfg) -> tuple[list[Dataset], list[str], list[float]]:
    """The datasets a DataConfig names (robot and web video), with their names and weights."""
    from pathlib import Path

    from vidact.data.robot import RobotDataset
    from vidact.data.webvideo import WebVideoDataset

    datasets, names, weights = [], [], []
    for i, s in enumerate(data_cfg.sources):
        name = s.name or Path(s.path).stem or f"source{i}"
        if s.kind == "lerobot":
            ds = RobotDataset(s.path, model_cfg, repo_id=s.repo_id, camera_keys=list(s.camera_keys) or None,
                              state_key=s.state_key, action_key=s.action_key, episodes=s.episodes,
                              reader=data_cfg.reader, fit=s.fit_mode, camera_fit=s.camera_fit, name=name,
                              first_steps=s.first_steps)
        else:
            ds = WebVideoDataset.from_source(s.path, model_cfg, fps=s.fps, fit=s.fit_mode, seed=data_cfg.seed,
                                             name=name)
        datasets.append(ds)
        names.append(name)
        weights.append(s.weight)
    if len(set(names)) != len(names):
        raise ValueError(f"data.sources names must be unique, got {names}; set data.sources[i].name")
    return datasets, names, weights


def build_loader(data_cfg, model_cfg, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 samples_per_epoch: int | None = None) -> tuple[DataLoader, MixtureSampler]:
    """A DataLoader of :class:`vidact.types.Batch` for a dataset-reading DataConfig."""
    if not data_cfg.reads_datasets:
        raise ValueError(f"data.kind={data_cfg.kind!r} does not read datasets")
    datasets, names, weights = build_sources(data_cfg, model_cfg)
    mixture = MixtureDataset(datasets, names, frame_keys=bool(data_cfg.cache_dir),
                             modes=[tuple(s.modes) if s.modes else None for s in data_cfg.sources])
    if samples_per_epoch is None and sum(len(d) for d in datasets) // world_size < batch_size:
        # Fewer items per rank than one batch (a handful of videos): with drop_last a nominal epoch
        # would hold no batch at all. An epoch of one batch revisits items (new clips each pass).
        samples_per_epoch = batch_size
    sampler = MixtureSampler([len(d) for d in datasets], weights, seed=data_cfg.seed, rank=rank,
                             world_size=world_size, names=names, samples_per_epoch=samples_per_epoch)
    loader = DataLoader(mixture, batch_size=batch_size, sampler=sampler, num_workers=data_cfg.num_workers,
                        collate_fn=Batch.collate, worker_init_fn=mixture.worker_init_fn, drop_last=True,
                        persistent_workers=data_cfg.num_workers > 0,
                        multiprocessing_context="fork" if data_cfg.num_workers > 0 else None)
    return loader, sampler


def robot_stats(data_cfg, datasets: list[Dataset]) -> dict | None:
    """Normalization stats for the run: the robot sources' (merged), or a file; None if no robot data."""
    from vidact.data.normalize import dataset_stats, load_stats, merge_stats
    from vidact.data.robot import RobotDataset

    if data_cfg.stats == "file":
        return load_stats(data_cfg.stats_path)
    robots = [d for d in datasets if isinstance(d, RobotDataset)]
    if not robots:
        return None
    parts = [dataset_stats(d, data_cfg.stats) for d in robots]
    return parts[0] if len(parts) == 1 else merge_stats(parts)
