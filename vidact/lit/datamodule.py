"""Where training batches come from.

``data.kind`` "fake" / "sliding_square": an endless stream of generated batches. Batch ``i`` is
drawn from a generator seeded with ``(seed, i)``, so a resumed run that starts at ``i`` sees the
same batches as an uninterrupted one. Dataset kinds delegate to
:func:`vidact.data.mixture.build_loader`; its sampler is fast-forwarded past what was consumed.

Every item is ``(draw_index, Batch)``: the module keeps the index of the last batch it trained
on, which is what resuming needs (the loader prefetches ahead, so counting here would overshoot).
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from vidact.config import RunConfig
from vidact.data.fake import fake_batch, sliding_square_batch
from vidact.types import Batch

# Generated batch i of rank r (of W) uses seed * DRAW_STRIDE + i * W + r: distinct seeds and
# distinct ranks never share a batch, and one process (W = 1) draws seed * DRAW_STRIDE + i.
DRAW_STRIDE = 1_000_003


def draw_seed(seed: int, index: int, rank: int = 0, world_size: int = 1) -> int:
    return seed * DRAW_STRIDE + index * world_size + rank


class GeneratedBatches(IterableDataset):
    """Endless generated batches starting at draw ``start``."""

    def __init__(self, cfg: RunConfig, start: int = 0, rank: int = 0, world_size: int = 1):
        self.cfg, self.start, self.rank, self.world_size = cfg, start, rank, world_size

    def batch(self, index: int) -> Batch:
        cfg = self.cfg
        seed = draw_seed(cfg.seed, index, self.rank, self.world_size)
        if cfg.data.kind == "sliding_square":
            out = sliding_square_batch(cfg.model, cfg.train.batch_size, torch.Generator().manual_seed(seed))
        else:
            out = fake_batch(cfg.model, cfg.train.batch_size, seed=seed)
        out.source = [cfg.data.kind] * out.batch_size
        return out

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        index = self.start
        while True:
            yield index, self.batch(index)
            index += 1


class _Indexed:
    """Wraps a dataset loader so it yields ``(draw_index, Batch)`` like :class:`GeneratedBatches`."""

    def __init__(self, loader: DataLoader, start: int):
        self.loader, self.start = loader, start

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        index = self.start
        while True:  # the sampler's epochs are nominal; training length is train.steps
            start = index
            for batch in self.loader:
                yield index, batch
                index += 1
            if index == start:
                raise RuntimeError(f"the data loader yielded no batch in a whole pass ({len(self.loader.sampler)} "
                                   f"samples per pass, batch size {self.loader.batch_size}); training would wait "
                                   "forever")


class VidActDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.cfg = cfg
        self.stats: dict | None = None  # normalization stats for the model, when the data has them
        self._loader = self._sampler = None

    def setup(self, stage: str) -> None:
        if not self.cfg.data.reads_datasets or self._loader is not None:
            return
        from vidact.data.mixture import build_loader, robot_stats

        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        self._loader, self._sampler = build_loader(self.cfg.data, self.cfg.model, self.cfg.train.batch_size,
                                                   rank=rank, world_size=world)
        self.stats = robot_stats(self.cfg.data, self._loader.dataset.sources)

    def _start(self) -> int:
        """The first draw this fit should train on: 0, or one past the checkpoint's last batch."""
        module = self.trainer.lightning_module if self.trainer else None
        return int(getattr(module, "batches_consumed", 0))

    def train_dataloader(self):
        start = self._start()
        if not self.cfg.data.reads_datasets:
            # batch_size=None: the dataset yields whole batches already.
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            return DataLoader(GeneratedBatches(self.cfg, start, rank, world), batch_size=None, collate_fn=_keep)
        self._sampler.load_state_dict({"consumed": start * self.cfg.train.batch_size, "seed": self.cfg.data.seed})
        return _Indexed(self._loader, start)

    def transfer_batch_to_device(self, item, device, dataloader_idx):
        index, batch = item
        return index, batch.to(device)


def _keep(item):
    """Identity collate: items are already (index, Batch) pairs."""
    return item
